"""Several index targets: a job is done only once every target it is for confirmed it, each
target has views of its own (audit, time travel, scan, repair), and events name their target.

Over two in-memory targets (``ledger.adapters.memory``), so each rule is shown through the port
alone; the sparse index's own adapter is proven against real HTTP in test_sparse_index.py and
test_sparse_worker.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.adapters.memory import Fault, MemoryIndex, MemoryRemote
from ledger.bootstrap import open_ledger
from ledger.domain.errors import Invalid
from ledger.domain.names import index_path
from ledger.ports import PushReport
from ledger.services.core import AsOf
from ledger.services.ledger import Ledger
from ledger.settings import Settings, TargetSpec, parse_targets
from tests.conftest import make_line

GIT = "https://index.example/memory.git"
SPARSE = TargetSpec("sparse", "sparse", "http://cdn.example/index/", origin="/srv/index")


@pytest.fixture
def remotes() -> dict[str, MemoryRemote]:
    return {"git": MemoryRemote(), "sparse": MemoryRemote()}


def _settings(store_url: str) -> Settings:
    return Settings(store=store_url, remote=GIT, targets=(SPARSE,))


@pytest.fixture
def ledger(tmp_path: Path, store_url: str, remotes: dict[str, MemoryRemote]) -> Iterator[Ledger]:
    for name in remotes:
        (tmp_path / name).mkdir()
    with open_ledger(
        _settings(store_url),
        index=lambda: MemoryIndex(remotes["git"], tmp_path / "git", url=GIT),
        targets={"sparse": lambda: MemoryIndex(remotes["sparse"], tmp_path / "sparse", url=SPARSE.shown)},
    ) as opened:
        yield opened


def lines_of(remote: MemoryRemote, crate: str) -> list[str]:
    data = remote.files().get(index_path(crate), b"")
    return [json.loads(raw)["vers"] for raw in data.splitlines()]


def _job_events(ledger: Ledger, crate: str, name: str) -> list[dict[str, object]]:
    return [e for e in ledger.history(crate) if e["event"] == name]


class TestOneJobSeveralTargets:
    def test_a_job_completes_only_once_every_target_confirmed_it(
        self, ledger: Ledger, remotes: dict[str, MemoryRemote]
    ) -> None:
        receipt = ledger.publish(make_line("kaze", "0.1.6"), "alice")
        scoped = _job_events(ledger, "kaze", "IndexSyncScoped")
        assert [e["targets"] for e in scoped] == [["git", "sparse"]]

        assert ledger.sync().confirmed == 1  # the first target only
        assert ledger.app.get_job(receipt.job).open, "the sparse target has not confirmed it yet"
        assert _job_events(ledger, "kaze", "IndexSyncCompleted") == []

        assert ledger.on("sparse").sync().confirmed == 1
        assert not ledger.app.get_job(receipt.job).open
        assert [e["target"] for e in _job_events(ledger, "kaze", "IndexPushConfirmed")] == ["git", "sparse"]
        assert len(_job_events(ledger, "kaze", "IndexSyncCompleted")) == 1
        assert lines_of(remotes["git"], "kaze") == lines_of(remotes["sparse"], "kaze") == ["0.1.6"]
        assert remotes["git"].files()[index_path("kaze")] == remotes["sparse"].files()[index_path("kaze")]
        assert all(core.audit().consistent for core in ledger.each_target())

    def test_a_failing_target_leaves_the_job_open_and_stuck_there_only(
        self, ledger: Ledger, remotes: dict[str, MemoryRemote]
    ) -> None:
        """The git remote healthy, the sparse one lying: stuck for the sparse target alone."""
        receipt = ledger.publish(make_line("kaze", "0.1.6"), "alice")
        remotes["sparse"].fault = Fault.LIE
        assert ledger.sync().confirmed == 1
        sparse = ledger.on("sparse")
        result = sparse.sync()
        assert (result.confirmed, result.failed, result.open_left) == (0, 1, 1)
        assert ledger.app.get_job(receipt.job).open

        git_audit, sparse_audit = (core.audit(grace=0) for core in ledger.each_target())
        assert git_audit.consistent
        assert sparse_audit.counts["stuck"] == 1
        assert [d.crate for d in sparse_audit.discrepancies] == ["kaze"]
        failed = _job_events(ledger, "kaze", "IndexPushFailed")
        assert [e["target"] for e in failed] == ["sparse"]
        attempts = _job_events(ledger, "kaze", "IndexPushAttempted")
        assert sorted(str(e["target"]) for e in attempts) == ["git", "sparse"]

        remotes["sparse"].fault = Fault.NONE
        assert sparse.sync().confirmed == 1
        assert sparse.audit().consistent
        assert not ledger.app.get_job(receipt.job).open

    def test_backoff_counts_the_failures_of_each_target_apart(
        self, ledger: Ledger, remotes: dict[str, MemoryRemote]
    ) -> None:
        receipt = ledger.publish(make_line("kaze", "0.1.6"), "alice")
        remotes["sparse"].fault = Fault.REJECT
        ledger.on("sparse").sync()
        ledger.on("sparse").sync()
        job = ledger.app.get_job(receipt.job)
        assert (job.failures_for("sparse"), job.failures_for("git")) == (2, 0)

    def test_each_target_answers_as_of_a_past_moment(
        self, ledger: Ledger, remotes: dict[str, MemoryRemote]
    ) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        ledger.sync()
        before_sparse = ledger.views.head()
        ledger.on("sparse").sync()
        past = ledger.on("sparse").audit(grace=0, at=AsOf(position=before_sparse))
        assert past.counts["stuck"] == 1
        assert ledger.audit(grace=0, at=AsOf(position=before_sparse)).consistent
        assert ledger.on("sparse").audit(grace=0).consistent


class _MeetingIndex(MemoryIndex):
    """A memory target whose push waits for the other target's: both workers hold the job as
    it was before either saved."""

    def __init__(self, barrier: threading.Barrier, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier

    def push(self, commit: str) -> PushReport:
        self.barrier.wait(timeout=10)
        return super().push(commit)


class TestWorkersSideBySide:
    def test_two_targets_confirming_at_once_complete_the_job_once(
        self, tmp_path: Path, store_url: str, remotes: dict[str, MemoryRemote]
    ) -> None:
        """A worker per target, each in its own thread with its own ledger, both holding the
        job as it was: the one saving second records its events again on top of the other's,
        and the job completes exactly once."""
        for name in remotes:
            (tmp_path / name).mkdir()
        barrier = threading.Barrier(2)
        targets = {
            name: (lambda name=name: _MeetingIndex(barrier, remotes[name], tmp_path / name, url=GIT))
            for name in remotes
        }
        settings = _settings(store_url)
        with open_ledger(settings, index=targets["git"], targets={"sparse": targets["sparse"]}) as ledger:
            receipt = ledger.publish(make_line("kaze", "0.1.6"), "alice")
        results: dict[str, int] = {}

        def work(name: str) -> None:
            with open_ledger(settings, index=targets["git"], targets={"sparse": targets["sparse"]}) as own:
                results[name] = own.on(name).sync().confirmed

        threads = [threading.Thread(target=work, args=(name,)) for name in remotes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert results == {"git": 1, "sparse": 1}
        with open_ledger(settings, index=targets["git"], targets={"sparse": targets["sparse"]}) as ledger:
            assert not ledger.app.get_job(receipt.job).open
            events = [e["event"] for e in ledger.history("kaze")]
            assert events.count("IndexPushConfirmed") == 2
            assert events.count("IndexSyncCompleted") == 1
            assert all(core.audit().consistent for core in ledger.each_target())


class TestEachTargetOnItsOwn:
    def test_a_scan_and_a_repair_of_one_target_leave_the_other_alone(
        self, ledger: Ledger, remotes: dict[str, MemoryRemote]
    ) -> None:
        """A line lost from the sparse target is seen there by a scan and restored by its repair."""
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        for core in ledger.each_target():
            core.sync()
        remotes["sparse"].write({index_path("kaze"): None})  # someone removed the file

        sparse = ledger.on("sparse")
        report = sparse.audit_scan(grace=0)
        assert report.counts["lost"] == 1
        assert ledger.audit_scan(grace=0).consistent, "the git target still holds it"

        result = sparse.repair(actor="operator")
        assert result.confirmed
        assert lines_of(remotes["sparse"], "kaze") == ["0.1.6"]
        assert sparse.audit().consistent
        repairs = [e for e in sparse.timeline() if e["event"] == "RepairApplied"]
        assert [e["target"] for e in repairs] == ["sparse"]

    def test_recovery_onto_an_empty_target_restores_every_file(self, tmp_path: Path, store_url: str) -> None:
        """A sparse target added later (or emptied) is made whole by a repair from the views."""
        git = MemoryRemote()
        (tmp_path / "git").mkdir()
        single = Settings(store=store_url, remote=GIT)
        with open_ledger(single, index=lambda: MemoryIndex(git, tmp_path / "git", url=GIT)) as first:
            for n in range(3):
                first.publish(make_line(f"crate{n}", "1.0.0"), "alice")
            assert first.sync().confirmed == 3
        sparse = MemoryRemote()
        (tmp_path / "sparse").mkdir()
        with open_ledger(
            _settings(store_url),
            index=lambda: MemoryIndex(git, tmp_path / "git", url=GIT),
            targets={"sparse": lambda: MemoryIndex(sparse, tmp_path / "sparse", url=SPARSE.shown)},
        ) as both:
            assert both.audit().consistent
            assert both.on("sparse").audit().counts["lost"] == 3, "jobs from before were for git alone"
            assert both.on("sparse").repair(actor="operator").confirmed
            assert both.on("sparse").audit().consistent
            assert sorted(p for p in sparse.files() if p != "config.json") == sorted(
                p for p in git.files() if p != "config.json"
            )


class TestTargetSettings:
    def test_a_sparse_target_is_parsed_with_its_origin(self) -> None:
        spec = TargetSpec.parse(
            "cdn=sparse+http://127.0.0.1:8080/index?origin=s3://bucket/pre&invalidate=http://x/i"
        )
        assert (spec.name, spec.kind, spec.url, spec.origin) == (
            "cdn",
            "sparse",
            "http://127.0.0.1:8080/index/",
            "s3://bucket/pre",
        )
        assert spec.invalidate_url == "http://x/i"
        assert spec.shown == "sparse+http://127.0.0.1:8080/index/"
        assert [t.name for t in parse_targets("a=git://h/x; b=sparse+http://h/i/?origin=/srv")] == ["a", "b"]

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("nothing", "is not NAME=URL"),
            ("Bad_Name=git://h/x", "must be lowercase"),
            ("s=sparse+ftp://h/i/?origin=/srv", "must be http(s)"),
            ("s=sparse+http://h/i/", "names no origin"),
            ("s=sparse+http://h/i/?origin=relative/dir", "must be an absolute folder"),
            ("s=sparse+http://h/i/?origin=s3://", "names no bucket"),
            ("s=sparse+http://h/i/?origin=/srv&cache=1", "unknown option"),
            ("g=gopher://h/x", "is not understood"),
        ],
    )
    def test_a_bad_target_is_refused_naming_what_is_wrong(self, text: str, says: str) -> None:
        with pytest.raises(Invalid, match=says.replace("(", r"\(").replace(")", r"\)")):
            TargetSpec.parse(text)

    def test_two_targets_of_one_name_are_refused(self) -> None:
        settings = Settings(remote=GIT, targets=(TargetSpec("git", "git", "git://h/other"),))
        with pytest.raises(Invalid, match="two index targets are named 'git'"):
            settings.index_targets()

    def test_an_unknown_target_is_refused(self, ledger: Ledger) -> None:
        with pytest.raises(Invalid, match="no index target named 'cdn'"):
            ledger.on("cdn")
