"""The use cases over the in-memory index target: sync, its faults, scan, repair, restore, import.

No git and no network: each test runs in a fraction of a second, and shows a use case's rule
through the port alone (``ledger.ports.IndexTarget``). The same rules are proven against real
git servers in test_worker_faults.py, test_scan.py, test_repair.py and test_import.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.adapters.memory import Fault, MemoryIndex, MemoryRemote
from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.services.ledger import Ledger
from ledger.settings import Settings
from tests.conftest import make_line

REMOTE = "https://index.example/memory.git"
"""A URL the settings accept; the in-memory target never connects to it."""
CONFIG = b'{"dl":"http://127.0.0.1/api/v1/crates","api":"http://127.0.0.1"}\n'


@pytest.fixture
def remote() -> MemoryRemote:
    return MemoryRemote()


@pytest.fixture
def ledger(tmp_path: Path, remote: MemoryRemote) -> Iterator[Ledger]:
    settings = Settings(store=f"sqlite:///{tmp_path / 'ledger.db'}", remote=REMOTE)
    (tmp_path / "clone").mkdir()
    with open_ledger(settings, index=lambda: MemoryIndex(remote, tmp_path / "clone", url=REMOTE)) as opened:
        yield opened


def lines_of(remote: MemoryRemote, crate: str) -> list[dict[str, object]]:
    data = remote.files().get(index_path(crate), b"")
    return [json.loads(raw) for raw in data.splitlines()]


class TestSync:
    def test_a_publish_is_confirmed_by_reading_the_target_back(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """The job closes only once the remote's head holds the crate's file."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        result = ledger.sync()
        assert (result.confirmed, result.open_left) == (1, 0)
        assert [line["vers"] for line in lines_of(remote, "kaze")] == ["0.1.6"]
        assert ledger.audit().consistent

    @pytest.mark.parametrize(
        "fault", [Fault.REJECT, Fault.LIE, Fault.NO_STATUS, Fault.ROLLBACK, Fault.UNREACHABLE]
    )
    def test_no_fault_of_the_remote_confirms_a_job(
        self, ledger: Ledger, remote: MemoryRemote, fault: Fault
    ) -> None:
        """Whatever the pusher reports, a remote that does not hold the change leaves the job open."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        remote.fault = fault
        result = ledger.sync()
        assert (result.confirmed, result.failed, result.open_left) == (0, 1, 1)
        assert index_path("kaze") not in remote.files()
        counts = ledger.audit(grace=0).counts
        assert counts["pending"] + counts["stuck"] == 1
        failures = [e for e in ledger.history("kaze") if e["event"] == "IndexPushFailed"]
        assert len(failures) == 1

        remote.fault = Fault.NONE
        assert ledger.sync().confirmed == 1
        assert ledger.audit().consistent

    def test_a_remote_moved_by_another_writer_is_built_upon_not_overwritten(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """A push is never forced: a head moved since the last read is read again and kept."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert ledger.sync().confirmed == 1
        remote.write({"config.json": CONFIG})
        ledger.publish(make_line("kaze", "0.1.7"), "alice")
        result = ledger.sync()
        assert result.confirmed == 1
        assert remote.files()["config.json"] == CONFIG
        assert [line["vers"] for line in lines_of(remote, "kaze")] == ["0.1.6", "0.1.7"]

    def test_a_line_the_ledger_has_no_record_of_holds_the_job(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """A foreign line in the crate's file is never written over: the job is held, the audit alarms."""
        foreign = make_line("kaze", "0.0.1")
        remote.write({index_path("kaze"): json.dumps(foreign, separators=(",", ":")).encode() + b"\n"})
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        result = ledger.sync()
        assert (result.confirmed, result.held) == (0, 1)
        assert [line["vers"] for line in lines_of(remote, "kaze")] == ["0.0.1"]
        report = ledger.audit(grace=0)
        assert report.counts["foreign"] == 1
        assert not report.consistent


class TestScanAndRepair:
    def test_a_scan_sees_a_version_lost_from_the_index_and_repair_writes_it_back(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """A line removed behind the ledger's back is ``lost`` after a scan, and back after a repair."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        ledger.publish(make_line("kaze", "0.1.7"), "alice")
        assert ledger.sync().confirmed == 2
        path = index_path("kaze")
        remote.write({path: remote.files()[path].splitlines(keepends=True)[0]})

        scanned = ledger.scan_index()
        assert [(d["version"], d["class"]) for d in scanned.discrepancies] == [("0.1.7", "lost")]
        assert ledger.audit().counts["lost"] == 1

        plan = ledger.repair(dry_run=True)
        assert plan.changed == 1
        assert len(remote.files()[path].splitlines()) == 1  # a dry run writes nothing
        repaired = ledger.repair()
        assert repaired.confirmed
        assert [line["vers"] for line in lines_of(remote, "kaze")] == ["0.1.6", "0.1.7"]
        ledger.scan_index()
        assert ledger.audit().consistent

    def test_repair_keeps_a_foreign_line_unless_phantoms_are_removed(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """A phantom (a line of a crate the ledger knows, for a version it never recorded) stays
        until removing phantoms is asked for, and that removal is recorded."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert ledger.sync().confirmed == 1
        path = index_path("kaze")
        phantom = json.dumps(make_line("kaze", "9.9.9"), separators=(",", ":")).encode() + b"\n"
        remote.write({path: remote.files()[path] + phantom})

        kept = ledger.repair()
        assert phantom in remote.files()[path]
        assert kept.phantoms
        removed = ledger.repair(remove_phantoms=True)
        assert removed.confirmed
        assert phantom not in remote.files()[path]
        assert [e["event"] for e in ledger.timeline()].count("RepairApplied") >= 1

    def test_recovery_onto_an_empty_remote_rewrites_every_file(
        self, ledger: Ledger, remote: MemoryRemote
    ) -> None:
        """The database view alone is enough to write the whole index again."""
        for version in ("0.1.6", "0.1.7"):
            ledger.publish(make_line("kaze", version), "alice")
        ledger.publish(make_line("serde", "1.0.0"), "bob")
        ledger.yank("kaze", "0.1.6", "alice")
        assert ledger.sync().open_left == 0
        expected = remote.files()
        lost = MemoryRemote()
        remote.head, remote.heads = lost.head, lost.heads  # the remote is now empty

        repaired = ledger.repair()
        assert repaired.confirmed
        files = remote.files()
        for path in (index_path("kaze"), index_path("serde")):
            assert files[path] == expected[path]
        assert "config.json" in files


class TestImport:
    def test_an_existing_index_is_adopted_line_for_line(self, tmp_path: Path) -> None:
        """Every line of the source becomes a publish by ``import``, confirmed against its head."""
        source = MemoryRemote()
        lines = [make_line("kaze", "0.1.6"), make_line("kaze", "0.1.7", yanked=True)]
        source.write(
            {
                "config.json": CONFIG,
                index_path("kaze"): b"".join(
                    json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines
                ),
            }
        )
        settings = Settings(store=f"sqlite:///{tmp_path / 'ledger.db'}", remote=REMOTE)
        (tmp_path / "clone").mkdir()
        with open_ledger(
            settings, index=lambda: MemoryIndex(source, tmp_path / "clone", url=REMOTE)
        ) as ledger:
            ledger.open_target = lambda path, url, **_: MemoryIndex(source, Path(path), url=url)
            result = ledger.import_index("https://index.example/source.git")
            assert result.accepted == 2
            assert ledger.audit().consistent
            assert [
                e["actor"] for e in ledger.history("kaze", "0.1.7") if e["event"] == "VersionPublished"
            ] == ["import"]
