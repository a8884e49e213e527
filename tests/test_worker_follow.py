"""A following worker starts its next pass at once after progress, and waits when idle."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

import ledger.services.sync as worker_module
from ledger.bootstrap import open_ledger
from ledger.services.sync import SyncWorker
from ledger.settings import Settings
from tests.conftest import make_line


def test_waits_only_after_a_pass_without_progress(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = tmp_path / "remote.git"
    pygit2.init_repository(str(remote), bare=True)
    settings = Settings(store=store_url, remote=str(remote), index_dir=tmp_path / "clone.git")
    waits: list[float] = []
    with open_ledger(settings) as ledger:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        ledger.publish(make_line("wasmer", "0.14.0"), "alice")
        worker = SyncWorker(ledger, ledger.index())
        passes: list[int] = []
        real_pass = worker._flowing_pass

        def counted(*args: object) -> worker_module.PassResult:
            result = real_pass(*args)  # type: ignore[arg-type]
            passes.append(result.confirmed)
            return result

        monkeypatch.setattr(worker, "_flowing_pass", counted)
        monkeypatch.setattr(worker_module.time, "sleep", waits.append)
        worker.follow(poll=7.0, max_passes=4, wake=False)  # waking: tests/test_wakeup.py
        # the first pass sends the two jobs' commit out, the second records it confirmed
        assert passes == [0, 2, 0, 0]
        # no poll wait while a commit is in flight nor after the pass that confirmed two jobs,
        # one after the idle one (the last pass ends the loop before its wait); the short
        # waits are the looks at the flight while it is in the air
        assert [w for w in waits if w > worker_module.FLIGHT_CHECK_S] == [7.0]
        assert ledger.audit().consistent
