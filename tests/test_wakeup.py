"""The following worker wakes when a job is enqueued, and never depends on being woken.

On both stores (PostgreSQL: LISTEN/NOTIFY in the publish's own transaction; SQLite:
``data_version``), with the in-memory index target so only the store's wake-up is under test.
No timing asserts: a worker whose poll is far longer than the test confirms the job only if it
was woken; a worker that is never woken confirms it at its poll.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ledger.adapters.memory import MemoryIndex, MemoryRemote
from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.services.ledger import Ledger
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings
from tests.conftest import make_line, pg_admin

REMOTE = "https://index.example/wakeup.git"
LONG_POLL = 600.0
"""Longer than any test waits: a job confirmed meanwhile was confirmed because of a wake-up."""
WAIT_S = 60.0


@pytest.fixture
def opener(store_url: str, tmp_path: Path) -> Callable[[], AbstractContextManager[Ledger]]:
    remote = MemoryRemote()
    (tmp_path / "clone").mkdir()
    settings = Settings(store=store_url, remote=REMOTE)
    with open_ledger(settings):
        pass  # the tables, once
    return lambda: open_ledger(settings, index=lambda: MemoryIndex(remote, tmp_path / "clone", url=REMOTE))


class Follower:
    """A following worker in a thread, stopped at the end of the test."""

    def __init__(
        self, opener: Callable[[], AbstractContextManager[Ledger]], *, poll: float, wake: bool
    ) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(opener, poll, wake), daemon=True)
        self.thread.start()

    def _run(self, opener: Callable[[], AbstractContextManager[Ledger]], poll: float, wake: bool) -> None:
        try:
            with opener() as ledger:
                worker = SyncWorker(ledger, ledger.index(), options=WorkerOptions(max_batch=1000))
                worker.follow(poll=poll, stop=self.stop, wake=wake)
        except BaseException as exc:
            self.errors.append(exc)


@pytest.fixture
def follower(opener: Callable[[], AbstractContextManager[Ledger]]) -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(*, poll: float, wake: bool) -> Follower:
        started.append(Follower(opener, poll=poll, wake=wake))
        return started[-1]

    yield start
    for f in started:
        f.stop.set()
    with opener() as ledger:  # a commit wakes a worker waiting on its long poll, so it sees stop
        ledger.publish(make_line("zz-stop", "0.0.1"), "test")
    for f in started:
        f.thread.join(timeout=30)
        assert not f.errors, f.errors


def confirmed(ledger: Ledger, crate: str) -> bool:
    ledger.views.catch_up()
    rows = ledger.db.query("SELECT state FROM view_jobs WHERE crate = ?", (crate,))
    return bool(rows) and all(r[0] == "completed" for r in rows)


def wait_until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_publish_wakes_the_worker(
    opener: Callable[[], AbstractContextManager[Ledger]], follower: Callable[..., Follower]
) -> None:
    follower(poll=LONG_POLL, wake=True)
    time.sleep(0.3)  # the worker has made its first pass and waits
    with opener() as ledger:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert wait_until(lambda: confirmed(ledger, "kaze"))


def test_without_a_wake_up_the_poll_still_confirms(
    opener: Callable[[], AbstractContextManager[Ledger]], follower: Callable[..., Follower]
) -> None:
    """Notifications dropped (the worker never woken): the poll is the safety net."""
    follower(poll=0.1, wake=False)
    with opener() as ledger:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert wait_until(lambda: confirmed(ledger, "kaze"))


@pytest.mark.postgres
def test_a_killed_listening_connection_still_confirms(pg_url: str, tmp_path: Path) -> None:
    """The listening backend is terminated while the worker waits: it listens again and confirms."""
    remote = MemoryRemote()
    (tmp_path / "clone").mkdir()
    settings = Settings(store=pg_url, remote=REMOTE)
    with open_ledger(settings):
        pass

    def opener() -> AbstractContextManager[Ledger]:
        return open_ledger(settings, index=lambda: MemoryIndex(remote, tmp_path / "clone", url=REMOTE))

    worker = Follower(opener, poll=LONG_POLL, wake=True)
    try:
        time.sleep(0.3)
        with pg_admin() as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
            ).fetchall()
        assert killed  # there was a listening connection, and it is gone
        time.sleep(0.2)
        with opener() as ledger:
            ledger.publish(make_line("kaze", "0.1.6"), "alice")
            assert wait_until(lambda: confirmed(ledger, "kaze"))
    finally:
        worker.stop.set()
        with opener() as ledger:
            ledger.publish(make_line("zz-stop", "0.0.1"), "test")
        worker.thread.join(timeout=30)
        assert not worker.errors, worker.errors


@pytest.mark.postgres
def test_a_publish_before_the_first_wait_is_not_missed(pg_url: str, tmp_path: Path) -> None:
    """The wake-up listens from the moment it exists: a publish between its creation and its
    first wait (the worker looking for jobs meanwhile) still wakes that wait."""
    settings = Settings(store=pg_url, remote=REMOTE)
    with open_ledger(settings) as ledger:
        wakeup = ledger.wakeup()
        try:
            with open_ledger(settings) as publisher:
                publisher.publish(make_line("kaze", "0.1.6"), "alice")
            assert wakeup.wait(WAIT_S)
        finally:
            wakeup.close()


def test_clear_forgets_what_came_before_and_keeps_what_comes_after(store_url: str) -> None:
    """The worker clears its wake-up just before it looks for jobs: a publish after that must
    still wake it. On SQLite the publishes before are forgotten exactly; PostgreSQL delivers a
    notification some time after the commit, so there a late one may still wake it (harmless)."""
    settings = Settings(store=store_url, remote=REMOTE)
    with open_ledger(settings) as ledger, open_ledger(settings) as publisher:
        wakeup = ledger.wakeup()
        try:
            publisher.publish(make_line("kaze", "0.1.6"), "alice")
            wakeup.clear()
            if store_url.startswith("sqlite"):
                assert not wakeup.wait(0.2)
            publisher.publish(make_line("kaze", "0.1.7"), "alice")
            assert wakeup.wait(WAIT_S)
        finally:
            wakeup.close()


@pytest.mark.postgres
def test_ledgers_in_two_schemas_do_not_wake_each_other(tmp_path: Path) -> None:
    """Each ledger has a channel of its own: a publish wakes the workers of its own ledger only."""
    from tests.conftest import _pg_schema_url

    first_url, second_url = _pg_schema_url(), _pg_schema_url()
    try:
        first = Settings(store=next(first_url), remote=REMOTE)
        second = Settings(store=next(second_url), remote=REMOTE)
        with open_ledger(first) as mine, open_ledger(second) as other:
            wakeup = mine.wakeup()
            try:
                other.publish(make_line("kaze", "0.1.6"), "alice")
                assert not wakeup.wait(0.5)
                mine.publish(make_line("kaze", "0.1.6"), "alice")
                assert wakeup.wait(WAIT_S)
            finally:
                wakeup.close()
    finally:
        for url in (first_url, second_url):
            next(url, None)  # drops the schema


def test_a_burst_is_confirmed_once_each_and_no_line_twice(
    opener: Callable[[], AbstractContextManager[Ledger]], follower: Callable[..., Follower]
) -> None:
    """500 publishes while the worker follows: every job confirmed exactly once, every line once."""
    follower(poll=LONG_POLL, wake=True)
    crates = [f"burst-{n % 50}" for n in range(500)]
    with opener() as ledger:
        for n, crate in enumerate(crates):
            ledger.publish(make_line(crate, f"1.0.{n}"), "alice")
        assert wait_until(lambda: all(confirmed(ledger, c) for c in set(crates)))
        ledger.views.catch_up()
        per_job = ledger.db.query(
            "SELECT job FROM view_jobs WHERE crate LIKE ? AND state = 'completed'", ("burst-%",)
        )
        assert len(per_job) == 500
        index = ledger.index()
        head = index.fetch()
        for crate in set(crates):
            lines = (index.read_blob(head, index_path(crate)) or b"").splitlines()
            versions = [json.loads(raw)["vers"] for raw in lines]
            assert len(versions) == len(set(versions)) == 10
        confirmations: dict[str, int] = {}
        for record in ledger.timeline():
            if record["event"] == "IndexPushConfirmed":
                confirmations[record["job"]] = confirmations.get(record["job"], 0) + 1
        burst_jobs = {str(r[0]) for r in per_job}
        assert {confirmations.get(job, 0) for job in burst_jobs} == {1}


def test_an_idle_worker_is_not_woken_by_its_own_writes(
    opener: Callable[[], AbstractContextManager[Ledger]],
) -> None:
    """Each pass renews the worker's lease (a commit, but no event): that must not wake it into
    another pass. Idle for a second and more, it makes a handful of passes, not thousands."""
    stop = threading.Event()
    passes: list[int] = []

    def run() -> None:
        with opener() as ledger:
            worker = SyncWorker(ledger, ledger.index())
            real_pass = worker._flowing_pass

            def counted(*args: Any) -> Any:
                passes.append(1)
                return real_pass(*args)

            worker._flowing_pass = counted  # type: ignore[method-assign]
            worker.follow(poll=LONG_POLL, stop=stop, max_passes=1000)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(1.5)
    idle_passes = len(passes)
    stop.set()
    with opener() as ledger:  # an event: the worker wakes, sees stop, and ends
        ledger.publish(make_line("zz-stop", "0.0.1"), "test")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert 1 <= idle_passes <= 5
