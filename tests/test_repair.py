"""Repair: the real index made equal to the database view, once, confirmed, and never twice."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pygit2
import pytest

from ledger.adapters.stores.lease import Lease
from ledger.bootstrap import open_ledger
from ledger.domain.crate_files import crate_file
from ledger.domain.errors import LockHeld
from ledger.domain.index_format import fields_digest
from ledger.domain.names import index_path
from ledger.services.ledger import Ledger
from ledger.services.repair import config_bytes, rendered_lines
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings
from ledger.testing import tamper
from ledger.testing.cargo import cargo_available, resolve
from ledger.testing.remote import Mode, RemoteServer
from projections.queries import VersionRow
from tests.conftest import make_line

ACTOR = "alice"
UNREACHABLE = "git://127.0.0.1:1/index.git"


def render(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def file_of(*lines: dict[str, Any]) -> bytes:
    return b"".join(render(line) + b"\n" for line in lines)


def bare_remote(tmp_path: Path, name: str = "remote.git") -> Path:
    path = tmp_path / name
    pygit2.init_repository(str(path), bare=True)
    return path


@contextmanager
def opened(store_url: str, remote: Path | str, tmp_path: Path, clone: str = "clone.git") -> Iterator[Ledger]:
    settings = Settings(
        store=store_url, remote=str(remote), index_dir=tmp_path / clone, connect_timeout_ms=500
    )
    with open_ledger(settings) as ledger:
        yield ledger


def head_commit(remote: Path) -> pygit2.Commit | None:
    repo = pygit2.Repository(str(remote))
    ref = repo.references.get("refs/heads/master")
    return None if ref is None else repo[ref.target].peel(pygit2.Commit)


def remote_head(remote: Path) -> str | None:
    commit = head_commit(remote)
    return None if commit is None else str(commit.id)


def remote_file(remote: Path, path: str) -> bytes | None:
    commit = head_commit(remote)
    if commit is None:
        return None
    try:
        blob = commit.tree[path]
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return bytes(blob.data)


def push_straight(remote: Path, files: Mapping[str, bytes | None]) -> str:
    """Commit ``files`` (None deletes) straight into the remote's branch, bypassing the ledger."""
    return tamper.push_straight(remote, files)


def publish_and_sync(ledger: Ledger, *lines: dict[str, Any]) -> None:
    for line in lines:
        ledger.publish(line, ACTOR)
    assert ledger.sync().open_left == 0


def repairs(ledger: Ledger) -> list[dict[str, Any]]:
    return [r for r in ledger.timeline() if r["event"] == "RepairApplied"]


def classes(ledger: Ledger) -> set[tuple[str, str, str]]:
    return {(d.crate, d.version, d.cls) for d in ledger.audit().discrepancies}


class TestRendering:
    @pytest.mark.parametrize(
        ("stored_yanked", "state"),
        [(False, "published"), (False, "yanked"), (True, "published"), (True, "yanked")],
    )
    def test_rendered_lines_equal_the_regenerated_file(self, stored_yanked: bool, state: str) -> None:
        """Lines taken from the view's stored text equal the worker's regenerated file, in every yank state."""
        fields = make_line("Kaze-ä", "0.1.6", features={"ünï": ["dep/x"]}, yanked=stored_yanked)
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        rows = [
            VersionRow("0.1.6", "0.1.6", state, fields_digest(fields), text),
            VersionRow("0.1.7", "0.1.7", state, "not-the-digest", text.replace("0.1.6", "0.1.7")),
        ]
        expected = crate_file(rows)
        assert expected is not None
        assert b"".join(line + b"\n" for line in rendered_lines(rows)) == expected


class TestRepairByClass:
    def test_a_lost_line_is_restored(self, store_url: str, tmp_path: Path) -> None:
        """A version dropped from the remote comes back, and the audit is clean again."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            one, two = make_line("serde", "1.0.0"), make_line("serde", "1.0.1")
            publish_and_sync(ledger, one, two)
            push_straight(remote, {index_path("serde"): file_of(one)})
            ledger.scan_index()
            assert classes(ledger) == {("serde", "1.0.1", "lost")}
            result = ledger.repair()
            assert (result.changed, result.confirmed, result.dry_run) == (1, True, False)
            assert [c.to_dict() for c in result.changes] == [
                {
                    "crate": "serde",
                    "path": "se/rd/serde",
                    "action": "write",
                    "added": ["1.0.1"],
                    "removed": [],
                    "phantoms_kept": [],
                    "phantoms_removed": [],
                }
            ]
            assert remote_file(remote, index_path("serde")) == file_of(one, two)
            assert remote_head(remote) == result.commit
            assert ledger.audit().consistent
            [record] = repairs(ledger)
            assert (record["commit"], record["confirmed"], record["changes"]) == (result.commit, True, 1)
            assert record["reported"] == "ok"

    def test_a_yank_state_is_corrected(self, store_url: str, tmp_path: Path) -> None:
        """A yank whose push never landed is written, and the yank mismatch is gone."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
        with opened(store_url, UNREACHABLE, tmp_path, clone="down.git") as ledger:
            ledger.yank("serde", "1.0.0", ACTOR)
            assert ledger.sync(WorkerOptions(max_attempts=1)).abandoned == 1
            assert classes(ledger) == {("serde", "1.0.0", "yank_mismatch")}
        with opened(store_url, remote, tmp_path) as ledger:
            result = ledger.repair()
            change = result.changes[0].to_dict()
            assert (change["added"], change["removed"]) == (["1.0.0"], ["1.0.0"])
            assert remote_file(remote, index_path("serde")) == file_of(
                make_line("serde", "1.0.0", yanked=True)
            )
            assert ledger.audit().consistent

    def test_edited_content_is_restored(self, store_url: str, tmp_path: Path) -> None:
        """A line edited outside the ledger is written back as published."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            line = make_line("rand", "0.8.0")
            publish_and_sync(ledger, line)
            push_straight(remote, {index_path("rand"): file_of({**line, "cksum": "f" * 64})})
            ledger.scan_index()
            assert classes(ledger) == {("rand", "0.8.0", "content_mismatch")}
            result = ledger.repair()
            assert result.changed == 1
            assert remote_file(remote, index_path("rand")) == file_of(line)
            assert ledger.audit().consistent

    def test_phantoms_are_kept_without_the_flag_and_removed_with_it(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Foreign lines stay as they are, after the ledger's lines, until removal is asked for."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            one, two = make_line("serde", "1.0.0"), make_line("serde", "1.0.1")
            ghost_a, ghost_b = make_line("serde", "7.0.0"), make_line("serde", "3.0.0")
            ghost = make_line("ghost", "0.0.1")
            publish_and_sync(ledger, one, two)
            push_straight(
                remote,
                {index_path("serde"): file_of(ghost_a, two, ghost_b), index_path("ghost"): file_of(ghost)},
            )
            ledger.scan_index()
            assert {(c, v) for c, v, k in classes(ledger) if k == "foreign"} == {
                ("serde", "7.0.0"),
                ("serde", "3.0.0"),
                ("ghost", "0.0.1"),
            }

            kept = ledger.repair()
            assert remote_file(remote, index_path("serde")) == file_of(one, two, ghost_a, ghost_b)
            assert remote_file(remote, index_path("ghost")) == file_of(ghost)  # only phantoms: left alone
            assert [c.to_dict()["phantoms_kept"] for c in kept.changes] == [["7.0.0", "3.0.0"]]
            assert {(p["crate"], p["version"], p["action"]) for p in kept.phantoms} == {
                ("serde", "7.0.0", "kept"),
                ("serde", "3.0.0", "kept"),
                ("ghost", "0.0.1", "kept"),
            }
            assert {k for _, _, k in classes(ledger)} == {"foreign"}

            removed = ledger.repair(remove_phantoms=True)
            assert {(c.path, c.action) for c in removed.changes} == {
                (index_path("serde"), "write"),
                (index_path("ghost"), "delete"),
            }
            assert remote_file(remote, index_path("serde")) == file_of(one, two)
            assert remote_file(remote, index_path("ghost")) is None
            assert ledger.audit().consistent

    def test_a_deleted_version_leaves_the_index_only_with_the_flag(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """A version deleted in the registry but still in the index is a phantom like any other."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("left-pad", "1.0.0"))
        with opened(store_url, UNREACHABLE, tmp_path, clone="down.git") as ledger:
            ledger.delete("left-pad", "1.0.0", ACTOR, reason="malware")
            assert ledger.sync(WorkerOptions(max_attempts=1)).abandoned == 1
        with opened(store_url, remote, tmp_path) as ledger:
            assert classes(ledger) == {("left-pad", "1.0.0", "phantom")}
            assert ledger.repair().changed == 0
            result = ledger.repair(remove_phantoms=True)
            assert [(c.path, c.action) for c in result.changes] == [(index_path("left-pad"), "delete")]
            assert result.phantoms[0]["reason"] == "deleted in the registry"
            assert remote_file(remote, index_path("left-pad")) is None
            assert ledger.audit().consistent

    def test_a_file_for_a_colliding_name_is_a_phantom_file(self, store_url: str, tmp_path: Path) -> None:
        """A second file for a name that collides with a crate's holds only phantoms; the crate's own file stays."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            line = make_line("foo_bar", "1.0.0")
            publish_and_sync(ledger, line)
            push_straight(remote, {index_path("foo-bar"): file_of(make_line("foo-bar", "2.0.0"))})
            scanned = ledger.scan_index()
            assert [(d["crate"], d["version"], d["class"], d["path"]) for d in scanned.discrepancies] == [
                ("foo_bar", "2.0.0", "phantom", index_path("foo-bar"))
            ]
            assert ledger.repair().changed == 0
            removed = ledger.repair(remove_phantoms=True)
            assert [(c.path, c.action) for c in removed.changes] == [(index_path("foo-bar"), "delete")]
            assert (
                removed.phantoms[0]["reason"]
                == f"in a file for a name colliding with {index_path('foo_bar')}"
            )
            assert remote_file(remote, index_path("foo-bar")) is None
            assert remote_file(remote, index_path("foo_bar")) == file_of(line)
            assert ledger.audit().consistent
            assert ledger.scan_index().discrepancies == []


class TestRepairSafety:
    def test_a_second_repair_changes_nothing(self, store_url: str, tmp_path: Path) -> None:
        """Repair is idempotent: the second run finds nothing, commits nothing, records nothing."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            one, two = make_line("serde", "1.0.0"), make_line("serde", "1.0.1")
            publish_and_sync(ledger, one, two)
            push_straight(remote, {index_path("serde"): file_of(two, make_line("serde", "5.0.0"))})
            first = ledger.repair()
            assert first.changed == 1
            head = remote_head(remote)
            position = ledger.views.catch_up()
            second = ledger.repair()
            assert (second.changed, second.commit, second.changes) == (0, None, [])
            assert second.confirmed
            assert remote_head(remote) == head
            assert ledger.views.catch_up() == position
            assert len(repairs(ledger)) == 1

    def test_a_dry_run_touches_nothing(self, store_url: str, tmp_path: Path) -> None:
        """A dry run lists the exact planned changes; the store and the remote stay as they were."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            lines = [make_line("serde", v) for v in ("1.0.0", "1.0.1", "1.0.2")]
            publish_and_sync(ledger, *lines, make_line("rand", "0.8.0"))
            push_straight(
                remote,
                {
                    index_path("serde"): file_of(
                        lines[0], make_line("serde", "0.0.9"), {**lines[2], "yanked": True}
                    ),
                    index_path("rand"): None,
                    "config.json": None,
                },
            )
            head = remote_head(remote)
            position = ledger.views.catch_up()
            planned = ledger.repair(dry_run=True)
            assert remote_head(remote) == head
            assert ledger.views.catch_up() == position
            assert planned.to_dict() | {"seconds": 0} == {
                "changed": 3,
                "commit": None,
                "parent": head,
                "confirmed": False,
                "dry_run": True,
                "reported": None,
                "config": True,
                "changes": [
                    {
                        "crate": "rand",
                        "path": "ra/nd/rand",
                        "action": "write",
                        "added": ["0.8.0"],
                        "removed": [],
                        "phantoms_kept": [],
                        "phantoms_removed": [],
                    },
                    {
                        "crate": "serde",
                        "path": "se/rd/serde",
                        "action": "write",
                        "added": ["1.0.1", "1.0.2"],
                        "removed": ["1.0.2"],
                        "phantoms_kept": ["0.0.9"],
                        "phantoms_removed": [],
                    },
                ],
                "phantoms": [
                    {
                        "crate": "serde",
                        "version": "0.0.9",
                        "path": "se/rd/serde",
                        "line_number": 2,
                        "reason": "foreign: the ledger has no record of it",
                        "action": "kept",
                    }
                ],
                "restored": [],
                "position": 0,
                "seconds": 0,
            }
            applied = ledger.repair()
            assert [c.to_dict() for c in applied.changes] == planned.to_dict()["changes"]
            assert remote_file(remote, "config.json") == config_bytes()
            assert ledger.repair(dry_run=True).changed == 0

    def test_another_writer_holding_the_lease_is_refused(self, store_url: str, tmp_path: Path) -> None:
        """While another index writer holds the lease, repair refuses and touches nothing."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
            push_straight(remote, {index_path("serde"): None})
            head = remote_head(remote)
            position = ledger.views.catch_up()
            other = Lease(ledger.db, "worker-on-another-host:42", ttl=60)
            assert other.try_acquire()
            with pytest.raises(LockHeld, match="worker-on-another-host"):
                ledger.repair()
            assert remote_head(remote) == head
            assert ledger.views.catch_up() == position
            other.release()
            assert ledger.repair().changed == 1

    def test_a_push_the_remote_did_not_keep_is_recorded_unconfirmed(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """When the remote says ok but drops the pack, RepairApplied says unconfirmed and changes no view."""
        server = RemoteServer.start(tmp_path / "served", protocol="http")
        settings = Settings(
            store=store_url, remote=server.url, index_dir=tmp_path / "clone.git", timeout_ms=3000
        )
        with server, open_ledger(settings) as ledger:
            one, two = make_line("serde", "1.0.0"), make_line("serde", "1.0.1")
            publish_and_sync(ledger, one, two)
            push_straight(server.bare_path, {index_path("serde"): file_of(one)})
            ledger.scan_index()
            server.set_mode(Mode.LIE)
            lied = ledger.repair()
            server.set_mode(Mode.OK)
            assert (lied.reported, lied.confirmed, lied.changed) == ("ok", False, 1)
            assert remote_file(server.bare_path, index_path("serde")) == file_of(one)
            assert classes(ledger) == {("serde", "1.0.1", "lost")}
            [record] = repairs(ledger)
            assert (record["confirmed"], record["reported"]) == (False, "ok")
            fixed = ledger.repair()
            assert fixed.confirmed
            assert remote_file(server.bare_path, index_path("serde")) == file_of(one, two)
            assert ledger.audit().consistent

    def test_large_repairs_rebuild_the_tree_and_split_their_events(
        self, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the thresholds, one commit holds every file and the changes span several events."""
        import ledger.services.repair as repair_module

        monkeypatch.setattr(repair_module, "FULL_TREE_CHANGES", 1)
        monkeypatch.setattr(repair_module, "CHANGES_PER_EVENT", 2)
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            names = ["a", "ab", "abc", "serde", "rand"]
            publish_and_sync(ledger, *(make_line(name, "1.0.0") for name in names))
            push_straight(remote, {index_path(name): None for name in names[:3]} | {"README.md": b"hello\n"})
            ledger.scan_index()
            assert {k for _, _, k in classes(ledger)} == {"lost"}
            before = head_commit(remote)
            result = ledger.repair()
            assert (result.changed, result.confirmed) == (3, True)
            after = head_commit(remote)
            assert after is not None
            assert before is not None
            assert list(after.parent_ids) == [before.id]
            assert remote_file(remote, "README.md") == b"hello\n"
            for name in names:
                assert remote_file(remote, index_path(name)) == file_of(make_line(name, "1.0.0"))
            assert [r["changes"] for r in repairs(ledger)] == [2, 1]
            assert ledger.audit().consistent


class TestDisasterRecovery:
    def test_an_empty_remote_gets_the_whole_index_byte_for_byte(self, store_url: str, tmp_path: Path) -> None:
        """Repair against a new, empty remote writes the tree the worker would have written."""
        first, second = bare_remote(tmp_path, "a.git"), bare_remote(tmp_path, "b.git")
        with opened(store_url, first, tmp_path, clone="a-clone.git") as ledger:
            publish_and_sync(
                ledger,
                make_line("serde", "1.0.0"),
                make_line("a", "0.1.0"),
                make_line("ab", "0.1.0"),
                make_line("abc", "0.1.0"),
                make_line("Serde_Json", "1.0.0", features={"std": []}),
                make_line("serde", "1.0.1+build.5"),
            )
            ledger.yank("serde", "1.0.0", ACTOR)
            ledger.publish(make_line("gone", "0.1.0"), ACTOR)
            ledger.delete("gone", "0.1.0", ACTOR, reason="malware")
            assert ledger.sync().open_left == 0
        with opened(store_url, second, tmp_path, clone="b-clone.git") as ledger:
            result = ledger.repair()
            assert (result.changed, result.config, result.confirmed) == (6, True, True)
            assert ledger.audit().consistent
        tree_a, tree_b = head_commit(first), head_commit(second)
        assert tree_a is not None
        assert tree_b is not None
        assert tree_a.tree.id == tree_b.tree.id
        assert remote_file(second, "config.json") == config_bytes()


@pytest.mark.skipif(not cargo_available(), reason="cargo is not installed")
class TestCargoAfterRepair:
    def test_cargo_resolves_a_restored_version_and_refuses_a_yanked_one(
        self, sqlite_url: str, tmp_path: Path
    ) -> None:
        """After repair, cargo finds the restored version and will not select the yanked one."""
        remote = bare_remote(tmp_path)
        with opened(sqlite_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("kaze", "0.1.5"), make_line("kaze", "0.1.6"))
            ledger.yank("kaze", "0.1.5", ACTOR)
            push_straight(remote, {index_path("kaze"): file_of(make_line("kaze", "0.1.5"))})
            ledger.repair()
        url = remote.as_uri()
        restored = resolve(url, "kaze", "=0.1.6")
        assert restored.ok, restored.output
        assert 'name = "kaze"\nversion = "0.1.6"' in restored.output
        yanked = resolve(url, "kaze", "=0.1.5")
        assert not yanked.ok
        assert "yanked" in yanked.output or "failed to select a version" in yanked.output
