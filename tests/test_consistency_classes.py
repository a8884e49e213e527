"""Each consistency class, produced by a real scenario and reported by the audit as it happened."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pygit2

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.services.ledger import AsOf, Ledger
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings
from ledger.testing.tamper import push_straight
from projections.consistency import AuditReport, Discrepancy
from tests.conftest import make_line

ACTOR = "alice"
UNREACHABLE = "git://127.0.0.1:1/index.git"


def render(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def file_of(*lines: dict[str, Any]) -> bytes:
    return b"".join(render(line) + b"\n" for line in lines)


def bare_remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    pygit2.init_repository(str(path), bare=True)
    return path


@contextmanager
def opened(store_url: str, remote: Path | str, tmp_path: Path) -> Iterator[Ledger]:
    clone = "clone.git" if isinstance(remote, Path) else "unreachable.git"
    settings = Settings(
        store=store_url, remote=str(remote), index_dir=tmp_path / clone, connect_timeout_ms=500
    )
    with open_ledger(settings) as ledger:
        yield ledger


def force_push(remote: Path, files: Mapping[str, bytes | None]) -> str:
    """Replace the remote's head by a commit with ``files`` changed (None deletes), as a force push."""
    return push_straight(remote, files, rewrite=True, message="forced")


def only(report: AuditReport) -> Discrepancy:
    """The one discrepancy of a report, checked for the fields every report must carry."""
    assert len(report.discrepancies) == 1, report.to_dict()
    found = report.discrepancies[0]
    shown = found.to_dict()
    assert set(shown) >= {"crate", "version", "class", "since", "job"}
    assert shown["since"].endswith("Z")
    assert found.since > 0
    return found


def job_of(ledger: Ledger, crate: str) -> str:
    """The crate's most recent job."""
    rows = ledger.db.query(
        "SELECT job FROM view_jobs WHERE crate = ? ORDER BY enqueued_pos DESC LIMIT 1", (crate,)
    )
    return str(rows[0][0])


class TestPending:
    def test_a_fresh_publish_is_pending(self, store_url: str, tmp_path: Path) -> None:
        """Published, no worker run yet, within the grace period: pending, and no alarm."""
        with opened(store_url, bare_remote(tmp_path), tmp_path) as ledger:
            receipt = ledger.publish(make_line("kaze", "0.1.6"), ACTOR)
            report = ledger.audit()
            found = only(report)
            assert (found.crate, found.version, found.cls, found.job) == (
                "kaze",
                "0.1.6",
                "pending",
                str(receipt.job),
            )
            assert report.consistent


class TestStuck:
    def test_an_old_open_job_is_stuck(self, store_url: str, tmp_path: Path) -> None:
        """The same open job past the grace period pages someone."""
        with opened(store_url, bare_remote(tmp_path), tmp_path) as ledger:
            receipt = ledger.publish(make_line("kaze", "0.1.6"), ACTOR)
            report = ledger.audit(grace=0)
            found = only(report)
            assert (found.crate, found.version, found.cls, found.job) == (
                "kaze",
                "0.1.6",
                "stuck",
                str(receipt.job),
            )
            assert not report.consistent

    def test_a_failing_push_is_stuck_at_once(self, store_url: str, tmp_path: Path) -> None:
        """A job whose push failed is stuck even inside the grace period."""
        with opened(store_url, UNREACHABLE, tmp_path) as ledger:
            receipt = ledger.publish(make_line("wasmer-runtime-core", "0.14.0"), ACTOR)
            result = ledger.sync()
            assert (result.failed, result.open_left) == (1, 1)
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "wasmer-runtime-core",
                "0.14.0",
                "stuck",
                str(receipt.job),
            )


class TestLost:
    def test_a_line_force_pushed_away_is_lost_after_a_scan(self, store_url: str, tmp_path: Path) -> None:
        """Confirmed, then dropped by a force push straight to the remote: the scan makes it lost."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            keep, drop = make_line("kaze", "0.1.5"), make_line("kaze", "0.1.6")
            ledger.publish(keep, ACTOR)
            receipt = ledger.publish(drop, ACTOR)
            assert ledger.sync().confirmed == 2
            force_push(remote, {index_path("kaze"): file_of(keep)})
            assert ledger.audit().consistent  # the ledger cannot know before it looks
            ledger.scan_index()
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "kaze",
                "0.1.6",
                "lost",
                str(receipt.job),
            )

    def test_a_job_abandoned_against_an_unreachable_remote_is_lost(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """The 2020-02-20 shape: the job is gone, the version never reached the index."""
        with opened(store_url, UNREACHABLE, tmp_path) as ledger:
            receipt = ledger.publish(make_line("wasmer-win-exception-handler", "0.14.0"), ACTOR)
            assert ledger.sync(WorkerOptions(max_attempts=1)).abandoned == 1
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "wasmer-win-exception-handler",
                "0.14.0",
                "lost",
                str(receipt.job),
            )


class TestPhantom:
    def test_a_deleted_version_the_index_still_holds_is_a_phantom(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Deleted in the registry, but the delete's job was abandoned: the index still serves it."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            ledger.publish(make_line("left-pad", "1.0.0"), ACTOR)
            assert ledger.sync().confirmed == 1
        with opened(store_url, UNREACHABLE, tmp_path) as ledger:
            receipt = ledger.delete("left-pad", "1.0.0", ACTOR, reason="malware")
            assert ledger.sync(WorkerOptions(max_attempts=1)).abandoned == 1
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "left-pad",
                "1.0.0",
                "phantom",
                str(receipt.job),
            )

    def test_a_crate_pushed_straight_to_the_remote_is_foreign(self, store_url: str, tmp_path: Path) -> None:
        """A file for a crate the registry never heard of shows up once the index is scanned."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            ledger.publish(make_line("kaze", "0.1.6"), ACTOR)
            assert ledger.sync().confirmed == 1
            force_push(remote, {index_path("ghost"): file_of(make_line("ghost", "6.6.6"))})
            ledger.scan_index()
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == ("ghost", "6.6.6", "foreign", None)


class TestYankMismatch:
    def test_a_yank_that_never_reached_the_index(self, store_url: str, tmp_path: Path) -> None:
        """A yank whose push failed until abandoned leaves the index serving the version."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            ledger.publish(make_line("kaze", "0.1.6"), ACTOR)
            assert ledger.sync().confirmed == 1
        with opened(store_url, UNREACHABLE, tmp_path) as ledger:
            receipt = ledger.yank("kaze", "0.1.6", ACTOR)
            assert ledger.sync(WorkerOptions(max_attempts=1)).abandoned == 1
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "kaze",
                "0.1.6",
                "yank_mismatch",
                str(receipt.job),
            )


class TestContentMismatch:
    def test_a_line_edited_outside_the_ledger(self, store_url: str, tmp_path: Path) -> None:
        """A line changed by a commit pushed straight to the remote differs from the published one."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            line = make_line("kaze", "0.1.6")
            receipt = ledger.publish(line, ACTOR)
            assert ledger.sync().confirmed == 1
            edited = {**line, "deps": [], "features": {"evil": []}}
            force_push(remote, {index_path("kaze"): file_of(edited)})
            ledger.scan_index()
            found = only(ledger.audit())
            assert (found.crate, found.version, found.cls, found.job) == (
                "kaze",
                "0.1.6",
                "content_mismatch",
                str(receipt.job),
            )


class TestTimeTravel:
    def test_an_incident_stays_visible_in_the_past_after_its_repair(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Audited as of a position inside the incident, the loss shows; audited now, nothing does."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            keep, drop = make_line("kaze", "0.1.5"), make_line("kaze", "0.1.6")
            ledger.publish(keep, ACTOR)
            ledger.publish(drop, ACTOR)
            assert ledger.sync().confirmed == 2
            before = ledger.views.catch_up()
            force_push(remote, {index_path("kaze"): file_of(keep)})
            incident = ledger.scan_index().position
            assert ledger.repair().confirmed
            assert ledger.audit().consistent
            past = ledger.audit(at=AsOf(position=incident))
            found = only(past)
            assert (found.crate, found.version, found.cls) == ("kaze", "0.1.6", "lost")
            assert past.position == incident
            assert ledger.audit(at=AsOf(position=before)).consistent
            assert ledger.scan_index().discrepancies == []
            assert ledger.audit().consistent
