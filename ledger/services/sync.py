"""The index sync worker: open jobs to commits, pushes, read-backs and recorded evidence.

One pass (:meth:`SyncWorker.run_once`) takes every open job, in chunks of up to ``max_batch``:

1. take the commit to build on: the remote head the last read-back saw on a fresh connection,
   or, when there is none (the first attempt, or the last read-back failed), a fetch;
2. read each affected crate's file at that commit and compare it with the ledger's record: a
   file holding lines the ledger has no record of (:mod:`ledger.services.foreign`) is never written over;
   those lines are adopted first (``adopt_foreign``) or the crate's jobs are held
   (``IndexSyncHeld``, with what to do) and leave the round;
3. regenerate each remaining crate's whole file from the database view (publication order,
   adopted lines first, yanked flag from the latest state, deleted versions absent): files are
   regenerated, never appended to, so a retry can never duplicate a line;
4. commit only if the tree changed, then push, and record what the pusher reported
   (``IndexPushAttempted``), never trusting it;
5. read the remote back on a new connection: its head, the commit's ancestry and the blob at
   each changed path. Only then ``IndexPushConfirmed`` and ``IndexSyncCompleted``; otherwise
   ``IndexPushFailed`` with the reason and the time of the next retry (capped exponential
   backoff). When the remote moved underneath (non-fast-forward), rebuild on top of the head
   the read-back found.

Building on the head the last read-back saw saves a fetch a pass and can record nothing untrue:
pushes are never forced, so if someone else pushed since, the remote refuses the push as
non-fast-forward (recorded as a rejected attempt), the read-back finds their head, and the next
round rebuilds on top of it.

A crash at any step leaves the job open; the next pass regenerates the same files, finds the
tree unchanged when the earlier push did land, and confirms it by reading it back.

A following worker (:meth:`SyncWorker.follow`) overlaps its passes: while one commit is pushed
and read back in a thread of its own, the next jobs are gathered and their commit is written on
top of it. That commit goes out only once the one below is confirmed with the target's head
exactly there; otherwise it is dropped unpushed and its jobs are built again on what the
read-back found.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.domain.aggregates import SyncJob
from ledger.domain.crate_files import crate_file
from ledger.domain.errors import InfrastructureError, RemoteUnavailable, StoreUnavailable, classify_error
from ledger.domain.names import index_path
from ledger.logs import log_step, warn_step
from ledger.ports import Database, IndexTarget, Observer, PushReport, ReadBack, Sleep, Unobserved, Wakeup
from ledger.services.core import LedgerCore
from ledger.services.foreign import Finding, find_foreign, held_reason
from ledger.services.importing import adopt_files
from projections.queries import OpenJob, VersionRow, live_versions_of, open_jobs

DEFAULT_CONFIG = {"dl": "http://127.0.0.1/api/v1/crates", "api": "http://127.0.0.1"}


@dataclass(frozen=True)
class WorkerOptions:
    max_batch: int = 100
    max_attempts: int | None = None
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    rebase_rounds: int = 3
    lease_ttl: float = 30.0
    index_config: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    adopt_foreign: bool = False
    """Adopt a crate's foreign lines when first writing to its file (recorded as imported, before
    the job's own versions) instead of holding the job until the operator adopts them."""

    def next_retry(self, attempts: int, now: float) -> float:
        """Capped exponential backoff after ``attempts`` failed attempts."""
        return now + min(self.backoff_cap, self.backoff_base ** max(0, attempts - 1))


@dataclass
class PassResult:
    """What one pass did."""

    jobs: int = 0
    confirmed: int = 0
    failed: int = 0
    abandoned: int = 0
    held: int = 0
    adopted: int = 0
    """Foreign lines adopted on first touch."""
    open_left: int = 0
    commits: list[str] = field(default_factory=list)
    holds: dict[str, str] = field(default_factory=dict)
    """Crate -> why its jobs are held (foreign lines in its file)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "confirmed": self.confirmed,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "held": self.held,
            "adopted": self.adopted,
            "open": self.open_left,
            "commits": self.commits,
            "holds": self.holds,
        }


@dataclass(frozen=True)
class _Attempt:
    """One round of build, push and read-back: what it was built on, pushed, and read."""

    base: str | None
    target: str | None
    readback: ReadBack | None

    @property
    def confirmed(self) -> bool:
        return self.readback is not None and self.readback.confirmed

    @property
    def remote_moved(self) -> bool:
        """The remote head moved away from the commit it was built on: rebuild on top at once."""
        rb = self.readback
        return rb is not None and not rb.contains_commit and rb.remote_head not in (None, self.base)


@dataclass(frozen=True)
class _Build:
    """A chunk's commit, written locally on the head it expects: what a push then publishes."""

    chunk: _Chunk
    jobs: dict[UUID, SyncJob]
    """The jobs going out with it (held ones left already)."""
    head: str | None
    commit: str | None
    """None: the tree at ``head`` holds it already; nothing to push, only to read back."""
    expected: dict[str, bytes | None]
    crates: list[str]

    @property
    def target(self) -> str | None:
        """The head the target must hold once published."""
        return self.commit or self.head


@dataclass(frozen=True)
class _Sent:
    """What publishing a build gave: the pusher's report and the read-back, nothing recorded."""

    report: PushReport
    reported: str
    seconds: float | None
    readback: ReadBack | None = None
    unreadable: RemoteUnavailable | None = None
    """The read-back could not reach the target."""


def _publish(index: IndexTarget, built: _Build) -> _Sent:
    """Push ``built`` (when it changes the tree) and read the target back, on ``index``.

    Touches nothing but ``index``: the following worker runs it in a thread of its own, on
    its index's twin, while it prepares the next build.
    """
    if built.commit is None:
        report = PushReport("ok", "index already holds this content: nothing to push")
        reported, seconds = "up_to_date", None
    else:
        pushed = time.perf_counter()
        report = index.push(built.commit)
        reported, seconds = report.status, time.perf_counter() - pushed
    target = built.target
    if target is None:
        return _Sent(report, reported, seconds)
    try:
        return _Sent(report, reported, seconds, index.read_back(target, built.expected))
    except RemoteUnavailable as exc:
        return _Sent(report, reported, seconds, unreadable=exc)


@dataclass(frozen=True)
class _Prepared:
    """A build and every job loaded for it (held ones too): all of them are saved with it."""

    built: _Build
    loaded: dict[UUID, SyncJob]


@dataclass(frozen=True)
class _Flight:
    """A prepared build being published in the worker's other thread."""

    prepared: _Prepared
    sent: Future[_Sent]

    @property
    def built(self) -> _Build:
        return self.prepared.built

    @property
    def loaded(self) -> dict[UUID, SyncJob]:
        return self.prepared.loaded

    @property
    def job_ids(self) -> frozenset[str]:
        return frozenset(str(job) for job in self.prepared.loaded)


class _Publisher:
    """The following worker's other thread: publishes one build at a time on the index's twin,
    a handle of its own (index handles are not shared between threads)."""

    def __init__(self, index: IndexTarget) -> None:
        self._index = index
        self._twin: IndexTarget | None = None
        self._pool: ThreadPoolExecutor | None = None

    def send(self, built: _Build) -> Future[_Sent]:
        if self._pool is None:
            self._twin = self._index.twin()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-publisher")
        assert self._twin is not None
        return self._pool.submit(_publish, self._twin, built)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._twin is not None:
            self._twin.close()


@dataclass
class _Chunk:
    jobs: list[OpenJob]
    rows: dict[str, list[VersionRow]] = field(default_factory=dict)
    """Crate key -> the versions that belong in the index, in the file's order."""
    recorded: dict[str, list[VersionRow]] = field(default_factory=dict)
    """Crate key -> every version the ledger has a record of (deleted ones too)."""
    names: dict[str, str] = field(default_factory=dict)

    def paths(self) -> dict[str, str]:
        return {key: index_path(name) for key, name in self.names.items()}

    def load(self, db: Database, keys: Iterable[str]) -> None:
        """Read (again) the versions of these crates from the database view."""
        found = live_versions_of(db, keys, with_deleted=True)
        for key, rows in found.items():
            self.recorded[key] = rows
            self.rows[key] = [row for row in rows if row.state != "deleted"]

    def drop(self, key: str) -> None:
        """Leave a crate out of this chunk (its jobs are held)."""
        self.jobs = [job for job in self.jobs if job.crate_key != key]
        for found in (self.rows, self.recorded, self.names):
            found.pop(key, None)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class SyncWorker:
    """Syncs open jobs to the index remote, one writer at a time."""

    def __init__(
        self,
        ledger: LedgerCore,
        index: IndexTarget,
        *,
        options: WorkerOptions | None = None,
        name: str | None = None,
        metrics: Observer | None = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics if metrics is not None else Unobserved()
        """Told of every pass, push, read-back and outcome (``ledger worker --metrics-port``)."""
        self.index = index
        self.target = ledger.target
        """The name of the index target this worker writes (its events name it)."""
        self.options = options or WorkerOptions()
        self.name = name or worker_name()
        self.lease = ledger.lease(self.name, self.options.lease_ttl)
        self._seen_head: str | None = None
        """The remote head the last read-back saw (the next attempt builds on it), or None."""
        self._held_until: dict[str, float] = {}
        """Held jobs not looked at again before this time (when their hold was not new)."""
        self._flight: _Flight | None = None
        """The build a following worker is publishing in its other thread, if any."""

    # -- passes -----------------------------------------------------------------------------

    def run_once(self, *, ignore_backoff: bool = True, wait_for_lock: float = 0.0) -> PassResult:
        """One pass over every open job (backoff ignored unless asked); then release the lock."""
        self.lease.acquire(wait=wait_for_lock)
        try:
            return self._pass(ignore_backoff=ignore_backoff)
        finally:
            self.lease.release()

    def follow(
        self, *, poll: float = 1.0, max_passes: int | None = None, stop: Any = None, wake: bool = True
    ) -> None:
        """Keep syncing as jobs arrive; stand by while another worker holds the lock.

        After a pass that confirmed something the next starts at once (the jobs that arrived
        meanwhile go into one commit); otherwise it waits until the store says the log grew
        (``wake``: PostgreSQL's NOTIFY, SQLite's ``data_version``) or ``poll`` seconds passed,
        whichever comes first; a missed wake-up costs at most one poll interval.

        Passes overlap (:meth:`_flowing_pass`): one commit is pushed and read back in a second
        thread, on the index's :meth:`~ledger.ports.IndexTarget.twin`, while the jobs that
        arrive meanwhile are gathered and their commit written on top of it, so that under a
        burst pushes follow one another with no pause for the ledger's own work.
        """
        wakeup = self.ledger.wakeup() if wake else Sleep()
        try:
            self._follow(poll, max_passes, stop, wakeup)
        finally:
            wakeup.close()

    def _follow(self, poll: float, max_passes: int | None, stop: Any, wakeup: Wakeup) -> None:
        passes = 0
        publisher = _Publisher(self.index)
        try:
            while stop is None or not stop.is_set():
                progressed = False
                try:
                    if self._flight is not None or self.lease.try_acquire():
                        result = self._flowing_pass(publisher, wakeup)
                        progressed = result.confirmed > 0 or self._flight is not None
                        if result.jobs:
                            log_step("worker_pass", worker=self.name, **result.to_dict())
                except InfrastructureError as exc:
                    # The store or the remote is away: nothing was recorded as done; try again later.
                    warn_step("worker_waiting", worker=self.name, error=exc.message)
                passes += 1
                if max_passes is not None and passes >= max_passes:
                    break
                if not progressed:
                    wakeup.wait(poll)
        finally:
            try:
                with contextlib.suppress(InfrastructureError):  # unsaved: its jobs stay open
                    self._land_last()
            finally:
                publisher.close()
        with contextlib.suppress(InfrastructureError):
            self.lease.release()

    def _pass(self, *, ignore_backoff: bool) -> PassResult:
        started = time.perf_counter()
        result = self._jobs_pass(ignore_backoff=ignore_backoff)
        if result.jobs:
            self.metrics.pass_done(time.perf_counter() - started)
        return result

    def _jobs_pass(self, *, ignore_backoff: bool) -> PassResult:
        self.ledger.views.catch_up()
        now = time.time()
        jobs = [j for j in open_jobs(self.ledger.db) if ignore_backoff or self._due(j, now)]
        result = PassResult(jobs=len(jobs))
        for start in range(0, len(jobs), self.options.max_batch):
            if not self.lease.try_acquire():
                break  # lost the lease: another writer took over; leave the rest open
            self._sync_chunk(jobs[start : start + self.options.max_batch], result)
            self.ledger.views.catch_up()
        result.open_left = len(open_jobs(self.ledger.db))
        return result

    # -- following: the next build prepared while the last one is published --------------------

    def _flowing_pass(self, publisher: _Publisher, wakeup: Wakeup) -> PassResult:
        """One pass of a following worker, with at most one build in flight.

        While the build in flight is pushed and read back (in the publisher's thread), the jobs
        that arrived since are gathered and their commit written on top of the head that build
        leaves: when it is confirmed with the target's head exactly there, the next one goes out
        at once, and the landed one is saved while it flies. Any other outcome (a failure, a
        rebuild on a head that moved, another writer's head on top) drops the prepared commit;
        its jobs stay open and are built again on the head the read-back found.
        """
        started = time.perf_counter()
        flight, result = self._flight, PassResult()
        prepared: _Prepared | None = None
        failure: InfrastructureError | None = None
        try:
            wakeup.clear()  # the look below covers them (the worker's own saves of the last pass too)
            prepared = self._prepare(flight, result)
            while prepared is None and flight is not None and not flight.sent.done():
                if wakeup.wait(FLIGHT_CHECK_S):
                    prepared = self._prepare(flight, result)
        except InfrastructureError as exc:
            failure = exc  # raised once the flight has landed: what it did is recorded first
        if flight is not None:
            self._flight = None
            landed_on = self._land(flight, result)
            if prepared is not None and prepared.built.head != landed_on:
                self._drop(prepared)
                prepared = None
        if prepared is not None and failure is None:
            if self.lease.try_acquire():
                self._flight = _Flight(prepared, publisher.send(prepared.built))
            else:
                self._drop(prepared)  # another writer took over: leave the jobs open
        if flight is not None:
            self._save(flight.loaded)
            result.open_left = len(open_jobs(self.ledger.db))
            self.metrics.pass_done(time.perf_counter() - started)
        if failure is not None:
            raise failure
        return result

    def _prepare(self, flight: _Flight | None, result: PassResult) -> _Prepared | None:
        """The due open jobs not in flight (up to ``max_batch``), built on the head the flight
        leaves, or with none in flight on the head the last read-back saw (else a fetch).
        None when there is nothing to push; jobs settled without a push are saved here."""
        self.ledger.views.catch_up()
        flying = flight.job_ids if flight is not None else frozenset()
        now = time.time()
        jobs = [j for j in open_jobs(self.ledger.db) if j.job not in flying and self._due(j, now)]
        if not jobs:
            return None
        chunk, aggregates = self._load(jobs[: self.options.max_batch])
        active = dict(aggregates)
        built: _Build | _Attempt
        if flight is not None:
            built = self._build(chunk, active, result, flight.built.target)
        else:
            built = self._build_on_seen(chunk, active, result)
        if isinstance(built, _Attempt):  # the target could not be read, or every job was held
            result.jobs += len(aggregates)
            self._tally(built, aggregates, active, result)
            self._save(aggregates)
            return None
        return _Prepared(built, aggregates)

    def _land(self, flight: _Flight, result: PassResult) -> str | None:
        """Record what the flight's push and read-back gave (more rounds on the head the
        read-back found when the target moved underneath); the head it left confirmed, exactly
        as the target now has it, or None."""
        built = flight.built
        outcome = self._record(built, flight.sent.result())
        outcome = self._rebase(built.chunk, built.jobs, result, outcome)
        result.jobs += len(flight.loaded)
        self._tally(outcome, flight.loaded, built.jobs, result)
        rb = outcome.readback
        if outcome.confirmed and rb is not None and rb.remote_head == outcome.target:
            return outcome.target
        return None

    def _land_last(self) -> None:
        """Land the flight still in the air when the worker stops, and save what it did."""
        flight, self._flight = self._flight, None
        if flight is not None:
            self._land(flight, PassResult())
            self._save(flight.loaded)

    def _drop(self, prepared: _Prepared) -> None:
        """Forget a prepared commit (never pushed); save the holds recorded while building it."""
        self._save(prepared.loaded)

    def _due(self, job: OpenJob, now: float) -> bool:
        """Not waiting out a backoff or a hold."""
        return (job.next_retry is None or job.next_retry <= now) and self._held_until.get(job.job, 0.0) <= now

    # -- one chunk --------------------------------------------------------------------------

    def _sync_chunk(self, jobs: list[OpenJob], result: PassResult) -> None:
        chunk, aggregates = self._load(jobs)
        active = dict(aggregates)
        outcome = self._rebase(chunk, active, result, self._attempt(chunk, active, result))
        self._tally(outcome, aggregates, active, result)
        self._save(aggregates)

    def _load(self, jobs: list[OpenJob]) -> tuple[_Chunk, dict[UUID, SyncJob]]:
        """A chunk of these jobs with their crates' versions, and the jobs as they stand."""
        chunk = _Chunk(jobs)
        for job in jobs:
            chunk.names.setdefault(job.crate_key, job.crate)
        chunk.load(self.ledger.db, chunk.names)
        return chunk, self.ledger.jobs([UUID(j.job) for j in jobs])

    def _rebase(
        self, chunk: _Chunk, active: dict[UUID, SyncJob], result: PassResult, outcome: _Attempt
    ) -> _Attempt:
        """More rounds while the remote moved underneath: each rebuilds on the head it read."""
        for _ in range(self.options.rebase_rounds - 1):
            if outcome.confirmed or not outcome.remote_moved:
                break  # confirmed, or failed for a reason that another round now cannot fix
            outcome = self._attempt(chunk, active, result)
        return outcome

    @staticmethod
    def _tally(
        outcome: _Attempt, aggregates: dict[UUID, SyncJob], active: dict[UUID, SyncJob], result: PassResult
    ) -> None:
        if outcome.confirmed:
            assert outcome.target is not None
            result.confirmed += len(active)
            result.commits.append(outcome.target)
        elif active:
            closed = sum(1 for job in active.values() if not job.open)
            result.abandoned += closed
            result.failed += len(active) - closed
        result.held += len(aggregates) - len(active)

    def _save(self, jobs: dict[UUID, SyncJob]) -> None:
        """Save what this pass recorded on its jobs.

        A job for several targets is written by a worker per target. When another one saved an
        event of the same job first (the store refuses the second event of one version), the
        jobs are read again, this pass's events recorded again on top of what the other worker
        recorded, and whether every target has now confirmed a job is decided on that: a job
        whose last target confirmed it is completed by whichever worker sees it last.
        """
        pending = {job_id: list(job.pending_events) for job_id, job in jobs.items()}
        for attempt in range(SAVE_RETRIES):
            try:
                self.ledger.app.save_jobs(list(jobs.values()))
                return
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, IntegrityError) or attempt == SAVE_RETRIES - 1:
                    raise
            jobs = self.ledger.jobs(list(pending))
            primary = self.ledger.target_names[0]
            for job_id, job in jobs.items():
                confirmed: str | None = None
                for event in pending[job_id]:
                    if isinstance(event, SyncJob.IndexSyncCompleted):
                        continue  # decided again below, on the job as it now stands
                    fields = {k: v for k, v in vars(event).items() if k not in _EVENT_ENVELOPE}
                    job.trigger_event(type(event), **fields)
                    if isinstance(event, SyncJob.IndexPushConfirmed):
                        confirmed = event.commit
                if confirmed is not None and job.open and job.confirmed_everywhere(primary):
                    job.completed(commit=confirmed)
            warn_step("jobs_saved_again", worker=self.name, target=self.target, jobs=len(jobs))

    def _expected(self, chunk: _Chunk, head: str | None) -> dict[str, bytes | None]:
        paths = chunk.paths()
        expected = {paths[key]: crate_file(chunk.rows[key]) for key in chunk.rows}
        if head is None:
            expected["config.json"] = json.dumps(dict(self.options.index_config), indent=2).encode() + b"\n"
        return expected

    def _attempt(self, chunk: _Chunk, jobs: dict[UUID, SyncJob], result: PassResult) -> _Attempt:
        """Build, push and read back once; records the attempt and its outcome on every job."""
        built = self._build_on_seen(chunk, jobs, result)
        if isinstance(built, _Attempt):
            return built
        return self._record(built, _publish(self.index, built))

    def _build_on_seen(
        self, chunk: _Chunk, jobs: dict[UUID, SyncJob], result: PassResult
    ) -> _Build | _Attempt:
        """The build on the head the last read-back saw, or on a fetch when there is none."""
        head, self._seen_head = self._seen_head, None
        if head is None:
            try:
                head = self.index.fetch()
            except RemoteUnavailable as exc:
                self.metrics.remote_up(False)
                self._fail(jobs, _unreadable(exc), exc.message, None)
                return _Attempt(None, None, None)
        return self._build(chunk, jobs, result, head)

    def _build(
        self, chunk: _Chunk, jobs: dict[UUID, SyncJob], result: PassResult, head: str | None
    ) -> _Build | _Attempt:
        """The commit of ``chunk`` on ``head``, written locally; an attempt when nothing is to push.

        Jobs whose crate's file at the head holds lines the ledger has no record of are held
        (or, with ``adopt_foreign``, those lines are adopted first) and leave ``jobs``.
        """
        if head is not None:
            self._guard(chunk, jobs, head, result)
            if not jobs:
                self._seen_head = head
                return _Attempt(head, None, None)  # every job held: nothing to push
        expected = self._expected(chunk, head)
        crates = sorted(chunk.names.values())
        message = f"Update crates: {', '.join(crates[:10])}" + (
            f" and {len(crates) - 10} more" if len(crates) > 10 else ""
        )
        return _Build(chunk, jobs, head, self.index.commit(head, expected, message), expected, crates)

    def _record(self, built: _Build, sent: _Sent) -> _Attempt:
        """What the pusher said and what the read-back found, recorded on every job of ``built``."""
        jobs, head, commit, report = built.jobs, built.head, built.commit, sent.report
        self.metrics.pushed(sent.reported, sent.seconds)
        for job in jobs.values():
            job.attempted(
                remote=self.index.remote_url,
                branch=self.index.branch,
                commit=commit,
                parent=head,
                reported=sent.reported,
                message=report.message,
                worker=self.name,
                batch=len(jobs),
                target=self.target,
            )
        log_step(
            "push",
            worker=self.name,
            commit=commit,
            parent=head,
            reported=sent.reported,
            jobs=len(jobs),
            crates=built.crates[:20],
            message=report.message,
        )
        target, readback = built.target, sent.readback
        if sent.unreadable is not None:
            self._seen_head = None  # not known: the next build fetches (a prepared one saw ``target``)
            self.metrics.remote_up(False)
            self.metrics.read_back(None)
            exc = sent.unreadable
            reason = _reason(report) if report.status != "ok" else _unreadable(exc)
            self._fail(jobs, reason, f"pusher said {report.status}; read-back failed: {exc.message}", None)
            return _Attempt(head, target, None)
        if readback is not None:
            self._seen_head = readback.remote_head
            self.metrics.remote_up(True)
            self.metrics.read_back(readback.confirmed)
        if readback is not None and readback.confirmed:
            assert target is not None
            self._confirm(built.chunk, jobs, target, readback)
        else:
            self._fail(jobs, _reason(report), _detail(report, readback), readback)
        return _Attempt(head, target, readback)

    # -- lines the ledger cannot account for ---------------------------------------------

    def _guard(self, chunk: _Chunk, jobs: dict[UUID, SyncJob], head: str, result: PassResult) -> None:
        """Compare each crate's file at ``head`` with the ledger's record before replacing it.

        A file holding foreign lines (see :mod:`ledger.services.foreign`) is never written over: its
        lines are adopted first when the options say so and they can be kept byte for byte;
        otherwise the crate's jobs are held, with the finding recorded, and leave the chunk.
        """
        paths = chunk.paths()
        findings: dict[str, Finding] = {}
        files: dict[str, bytes] = {}
        for key in list(chunk.names):
            kind, data = self.index.read_file(head, paths[key])
            if kind not in (None, "file"):
                findings[key] = Finding(paths[key], not_a_file=kind)
                continue
            finding = find_foreign(key, paths[key], data, chunk.recorded[key])
            if finding.held:
                findings[key] = finding
                files[paths[key]] = data or b""
        if not findings:
            return
        if self.options.adopt_foreign:
            adoptable = {key: f for key, f in findings.items() if f.adoptable}
            if adoptable:
                files = {f.path: files[f.path] for f in adoptable.values()}
                adopted = adopt_files(self.ledger, self.index.remote_url, head, files)
                result.adopted += adopted.accepted
                self.ledger.views.catch_up()
                chunk.load(self.ledger.db, adoptable)
                for key in adoptable:
                    again = find_foreign(key, paths[key], files[paths[key]], chunk.recorded[key])
                    if again.held:
                        findings[key] = again  # the adoption refused some: hold them
                    else:
                        del findings[key]
        for key, finding in findings.items():
            self._hold(chunk, jobs, key, finding, head, result)

    def _hold(
        self,
        chunk: _Chunk,
        jobs: dict[UUID, SyncJob],
        key: str,
        finding: Finding,
        head: str,
        result: PassResult,
    ) -> None:
        now = time.time()
        reason = held_reason(finding, head, self.index.remote_url)
        crate = chunk.names[key]
        result.holds[crate] = reason
        for open_job in [j for j in chunk.jobs if j.crate_key == key]:
            job_id = UUID(open_job.job)
            job = jobs.pop(job_id, None)
            if job is None:
                continue
            next_check = self.options.next_retry(job.hold_count() + 1, now)
            if job.last_held_for() == finding.labels:
                # Recorded already: look again later without recording the same finding twice.
                self._held_until[open_job.job] = next_check
                continue
            self.metrics.held()
            job.held(
                crate=crate,
                path=finding.path,
                remote_head=head,
                foreign=finding.labels,
                entries=finding.entries,
                reason=reason,
                next_retry=next_check,
                target=self.target,
            )
        chunk.drop(key)
        warn_step("job_held", worker=self.name, crate=crate, foreign=finding.labels[:20], remote_head=head)

    # -- recording --------------------------------------------------------------------------

    def _confirm(self, chunk: _Chunk, jobs: dict[UUID, SyncJob], commit: str, readback: ReadBack) -> None:
        paths = chunk.paths()
        by_job = {UUID(j.job): j for j in chunk.jobs}
        entries_of: dict[str, list[list[Any]]] = {}  # one list per crate, however many jobs it has
        primary = self.ledger.target_names[0]
        for job_id, job in jobs.items():
            key = by_job[job_id].crate_key
            entries = entries_of.get(key)
            if entries is None:
                entries = entries_of[key] = [[r.version, r.key, r.yanked, r.digest] for r in chunk.rows[key]]
            assert readback.remote_head is not None
            job.confirmed(
                crate=chunk.names[key],
                commit=commit,
                remote_head=readback.remote_head,
                method=readback.method,
                path=paths[key],
                entries=entries,
                target=self.target,
            )
            if job.confirmed_everywhere(primary):
                job.completed(commit=commit)  # every target it is for holds it
        log_step(
            "confirmed", worker=self.name, commit=commit, remote_head=readback.remote_head, jobs=len(jobs)
        )
        now = time.time()
        self.metrics.confirmed([max(0.0, now - by_job[job_id].enqueued_at) for job_id in jobs])

    def _fail(
        self, jobs: dict[UUID, SyncJob], reason: str, detail: str | None, readback: ReadBack | None
    ) -> None:
        now = time.time()
        head = readback.remote_head if readback else None
        for job in jobs.values():
            failures = job.failures_for(self.target) + 1
            if self.options.max_attempts is not None and failures >= self.options.max_attempts:
                job.failed(
                    reason=reason, detail=detail, remote_head=head, next_retry=None, target=self.target
                )
                job.abandoned(reason=f"{reason} on {self.target} after {failures} failed attempts")
            else:
                job.failed(
                    reason=reason,
                    detail=detail,
                    remote_head=head,
                    next_retry=self.options.next_retry(failures, now),
                    target=self.target,
                )
        warn_step("push_failed", worker=self.name, reason=reason, detail=detail, jobs=len(jobs))
        self.metrics.failed(reason)


SAVE_RETRIES = 5
FLIGHT_CHECK_S = 0.01
"""While a build is in flight and nothing new is to prepare: how often the worker looks for a
wake-up (new jobs to prepare) or the flight's end."""
_EVENT_ENVELOPE = frozenset(("originator_id", "originator_version", "timestamp"))
"""What the store sets on every event: not part of what a worker records."""


def _unreadable(exc: RemoteUnavailable) -> str:
    """Why the remote could not be read: a timeout, or unreachable (refused, HTTP errors, ...)."""
    return "timeout" if classify_error(exc.message) == "timeout" else "unreachable"


def _reason(report: PushReport) -> str:
    """Why a push did not count, from what the pusher said and what the remote holds."""
    if report.status == "rejected":
        return "rejected"
    if report.status == "no_status":
        return "no_status"
    if report.status == "error":
        return {"timeout": "timeout", "unreachable": "unreachable"}.get(report.error_kind or "", "error")
    return "unconfirmed"


def _detail(report: PushReport, readback: ReadBack | None) -> str:
    said = f"pusher said {report.status}" + (f" ({report.message})" if report.message else "")
    if readback is None:
        return f"{said}; remote has no branch to read back"
    seen = f"remote head {readback.remote_head[:12] if readback.remote_head else 'none'}"
    if not readback.contains_commit:
        seen += " does not contain the commit"
    if readback.problems:  # what the target served instead, where it can say
        seen += f"; {len(readback.mismatched)} file(s) differ: {'; '.join(readback.problems[:5])}"
    elif readback.mismatched:
        seen += f"; {len(readback.mismatched)} file(s) differ: {', '.join(readback.mismatched[:5])}"
    return f"{said}; {seen}"
