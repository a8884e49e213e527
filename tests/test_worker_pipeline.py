"""A following worker prepares the next commit while one is pushed and read back.

Against a real git:// server on 127.0.0.1, on both stores. The index handles are wrapped so
that the first push waits until the test lets it go: the order of calls, not the clock, shows
that the next jobs were gathered and their commit written while the first was in flight, and
that a commit prepared on a push that did not count is never pushed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pygit2
import pytest

from ledger.bootstrap import open_index, open_ledger
from ledger.domain.names import index_path
from ledger.ports import IndexTarget, PushReport
from ledger.services.ledger import Ledger
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import Mode, RemoteServer
from tests.conftest import make_line

OPTIONS = WorkerOptions(max_batch=50, backoff_base=1.0, backoff_cap=1.0, lease_ttl=10.0)
WAIT_S = 60.0


class Gate:
    """What every handle of one index did, in order; holds the first push until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.hold_next_push = True

    def note(self, what: str, first: str | None, second: str | None = None) -> None:
        with self.lock:
            self.calls.append((what, first, second))

    def commits_on(self, parent: str) -> list[str | None]:
        with self.lock:
            return [made for what, base, made in self.calls if what == "commit" and base == parent]


class GatedIndex:
    """An index target that reports its commits and pushes to a :class:`Gate`."""

    def __init__(self, inner: IndexTarget, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def twin(self) -> GatedIndex:
        return GatedIndex(self._inner.twin(), self._gate)

    def commit(self, parent: str | None, changes: Mapping[str, bytes | None], message: str, **kw: Any) -> Any:
        made = self._inner.commit(parent, changes, message, **kw)
        self._gate.note("commit", parent, made)
        return made

    def push(self, commit: str) -> PushReport:
        self._gate.note("push", commit)
        if self._gate.hold_next_push:
            self._gate.hold_next_push = False
            self._gate.holding.set()
            assert self._gate.release.wait(WAIT_S), "the test never released the push"
        report = self._inner.push(commit)
        self._gate.note("pushed", commit, report.status)
        return report


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"waited {WAIT_S:g} s for {what}")


class Following:
    """A following worker in a thread on its own ledger, stopped at the end."""

    def __init__(self, settings: Settings, gate: Gate) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._settings = settings
        self._gate = gate
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            index = lambda: GatedIndex(open_index(self._settings), self._gate)  # noqa: E731
            with open_ledger(self._settings, index=index) as ledger:
                SyncWorker(ledger, ledger.index(), options=OPTIONS).follow(poll=0.2, stop=self.stop)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT_S)
        assert not self.thread.is_alive()
        assert self.errors == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RemoteServer]:
    with RemoteServer.start(tmp_path / "remote", protocol="git") as started:
        yield started


@pytest.fixture
def settings(store_url: str, server: RemoteServer, tmp_path: Path) -> Settings:
    return Settings(
        store=store_url,
        remote=server.url,
        index_dir=tmp_path / "clone.git",
        connect_timeout_ms=2000,
        timeout_ms=5000,
    )


def events_of(ledger: Ledger, crate: str, version: str, name: str) -> list[dict[str, Any]]:
    return [e for e in ledger.history(crate, version) if e["event"] == name]


def versions_at_head(server: RemoteServer, crate: str) -> list[str]:
    repo = pygit2.Repository(str(server.bare_path))
    head = server.head()
    assert head is not None
    blob = repo[head].peel(pygit2.Commit).tree[index_path(crate)]
    return [json.loads(line)["vers"] for line in bytes(blob.data).splitlines()]


def all_completed(ledger: Ledger, crates: str) -> bool:
    ledger.views.catch_up()
    states = ledger.db.query("SELECT state FROM view_jobs WHERE crate LIKE ?", (crates,))
    return bool(states) and all(state == "completed" for (state,) in states)


def first_push(ledger: Ledger, gate: Gate, crate: str) -> str:
    """Publish ``crate`` 1.0.0 and wait until the worker's push of it is held in the air."""
    ledger.publish(make_line(crate, "1.0.0"), "alice")
    assert gate.holding.wait(WAIT_S)
    with gate.lock:
        pushed = [first for what, first, _ in gate.calls if what == "push"]
    assert len(pushed) == 1
    assert pushed[0] is not None
    return pushed[0]


def test_the_next_commit_is_prepared_while_one_is_in_flight(settings: Settings, server: RemoteServer) -> None:
    gate = Gate()
    with open_ledger(settings) as ledger:
        worker = Following(settings, gate)
        try:
            flying = first_push(ledger, gate, "serde")
            ledger.publish(make_line("tokio", "1.0.0"), "alice")
            ledger.publish(make_line("serde", "1.0.1"), "alice")
            # Written on top of the commit in flight while its push is still held.
            prepared = wait_for(lambda: gate.commits_on(flying), "the next commit on the one in flight")
            assert not gate.release.is_set()
            gate.release.set()
            wait_for(lambda: ledger.audit(grace=0).consistent, "every job confirmed")
        finally:
            gate.release.set()
            worker.close()
        with gate.lock:
            calls = list(gate.calls)
        # The prepared commit went out right after the first one was confirmed, built on it.
        assert calls.index(("commit", flying, prepared[0])) < calls.index(("pushed", flying, "ok"))
        assert ("push", prepared[0], None) in calls
        for crate, version in (("serde", "1.0.0"), ("tokio", "1.0.0"), ("serde", "1.0.1")):
            assert len(events_of(ledger, crate, version, "IndexPushConfirmed")) == 1
            assert len(events_of(ledger, crate, version, "IndexSyncCompleted")) == 1
        (attempt,) = events_of(ledger, "tokio", "1.0.0", "IndexPushAttempted")
        assert attempt["parent"] == flying
        assert versions_at_head(server, "serde") == ["1.0.0", "1.0.1"]
        assert ledger.audit(grace=0).consistent


def test_a_commit_prepared_on_a_push_that_did_not_count_is_never_pushed(
    settings: Settings, server: RemoteServer
) -> None:
    gate = Gate()
    with open_ledger(settings) as ledger:
        worker = Following(settings, gate)
        try:
            server.set_mode(Mode.ROLLBACK)  # says ok, then the branch goes back: nothing landed
            flying = first_push(ledger, gate, "serde")
            ledger.publish(make_line("tokio", "1.0.0"), "alice")
            prepared = wait_for(lambda: gate.commits_on(flying), "the next commit on the one in flight")
            gate.release.set()
            wait_for(lambda: events_of(ledger, "serde", "1.0.0", "IndexPushFailed"), "the failure")
            server.set_mode(Mode.OK)
            wait_for(lambda: ledger.audit(grace=0).consistent, "every job confirmed")
        finally:
            gate.release.set()
            server.set_mode(Mode.OK)
            worker.close()
        with gate.lock:
            pushed = [first for what, first, _ in gate.calls if what == "push"]
        assert prepared[0] not in pushed  # dropped: built on a head the remote never held
        for crate in ("serde", "tokio"):
            assert len(events_of(ledger, crate, "1.0.0", "IndexPushConfirmed")) == 1
        assert [e.get("parent") for e in events_of(ledger, "tokio", "1.0.0", "IndexPushAttempted")].count(
            flying
        ) == 0
        assert versions_at_head(server, "serde") == ["1.0.0"]
        assert versions_at_head(server, "tokio") == ["1.0.0"]
        assert ledger.audit(grace=0).consistent


def test_a_burst_over_git_is_confirmed_once_each_and_no_line_twice(
    settings: Settings, server: RemoteServer
) -> None:
    """500 publishes while the worker follows with passes overlapping, against the git:// server:
    every job confirmed exactly once, and the index holds every version once, in order."""
    gate = Gate()
    gate.hold_next_push = False
    crates = [f"burst-{n % 50}" for n in range(500)]
    with open_ledger(settings) as ledger:
        worker = Following(settings, gate)
        try:
            for n, crate in enumerate(crates):
                ledger.publish(make_line(crate, f"1.0.{n}"), "alice")
            # Not the audit alone: a job whose version went out in a commit of the jobs before it
            # (its crate's file is built from every version recorded) is confirmed a pass later.
            wait_for(lambda: all_completed(ledger, "burst-%"), "every job confirmed")
            assert ledger.audit(grace=0).consistent
        finally:
            worker.close()
        confirmations: dict[str, int] = {}
        for record in ledger.timeline():
            if record["event"] == "IndexPushConfirmed" and record["crate"].startswith("burst-"):
                confirmations[record["job"]] = confirmations.get(record["job"], 0) + 1
        ledger.views.catch_up()
        jobs = ledger.db.query("SELECT job FROM view_jobs WHERE crate LIKE ?", ("burst-%",))
        assert {str(row[0]) for row in jobs} == set(confirmations)
        assert set(confirmations.values()) == {1}
        for k in range(50):
            assert versions_at_head(server, f"burst-{k}") == [f"1.0.{n}" for n in range(k, 500, 50)]
        with gate.lock:
            pushes = [first for what, first, _ in gate.calls if what == "push"]
        assert len(pushes) == len(set(pushes))  # no commit pushed twice
