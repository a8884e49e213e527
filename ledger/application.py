"""The publication ledger's application service: the registry side of every publication.

``publish``, ``yank``, ``unyank`` and ``delete`` each save the crate's change and the index sync
job it causes in one transaction (``Application.save`` is the unit of work), so there is no
publish without its job and no job without its publish. The call returns once both are durable;
it never waits on git.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError, Recording

from ledger.domain import Crate, IndexRemote, SyncJob
from ledger.errors import AlreadyPublished, Invalid, InvalidLine, LedgerError, StoreUnavailable
from ledger.index_format import IndexLine, parse_line
from ledger.logs import log_step
from ledger.names import validate_name
from ledger.settings import redact
from ledger.versions import parse_version

T = TypeVar("T")

SAVE_RETRIES = 5
LOOKAHEAD = 1000
"""Lines the batched path reads ahead, to ask the store about their crates in one query."""


@dataclass(frozen=True)
class Receipt:
    """What an accepted call returns: the change is durable at ``position`` in the log."""

    crate: str
    version: str
    event: str
    job: UUID
    position: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "crate": self.crate,
            "version": self.version,
            "event": self.event,
            "job": str(self.job),
            "position": self.position,
        }


@dataclass
class BulkResult:
    """What a batched publish did: accepted, already present, refused (with line numbers)."""

    accepted: int = 0
    present: int = 0
    events: int = 0
    jobs: int = 0
    position: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "present": self.present,
            "events": self.events,
            "jobs": self.jobs,
            "position": self.position,
            "refused": [{"line": n, "error": e} for n, e in self.refused],
        }


class PublicationLedger(Application[UUID]):
    """Crates and their sync jobs, recorded as events."""

    name = "PublicationLedger"
    snapshotting_intervals = {Crate: 100}  # noqa: RUF012  (the library's own class attribute)

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot each saved aggregate whose version crossed a snapshot interval in this save.

        The snapshot is taken of the aggregate as saved, at its newest version, instead of
        reloading it at each multiple of the interval: one snapshot per aggregate per save,
        and no reads, however many events a batched save holds.
        """
        if self.snapshots is None:
            return
        first: dict[UUID, int] = {}
        for event in processing_event.events:
            first.setdefault(event.originator_id, event.originator_version)
        snapshots = []
        for aggregate_id, aggregate in processing_event.aggregates.items():
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is None or aggregate_id not in first:
                continue
            if aggregate.version // interval > (first[aggregate_id] - 1) // interval:
                snapshot_class: Any = getattr(type(aggregate), "Snapshot", None) or self.snapshot_class
                snapshots.append(snapshot_class.take(aggregate))
        if snapshots:
            self.snapshots.put(snapshots)

    # -- reads ------------------------------------------------------------------------------

    def find_crate(self, name: str) -> Crate | None:
        """The crate that owns ``name`` (or a colliding spelling), or None."""
        try:
            crate: Any = self.repository.get(Crate.create_id(name))
        except AggregateNotFoundError:
            return None
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        assert isinstance(crate, Crate)
        return crate

    def get_job(self, job_id: UUID) -> SyncJob:
        job: Any = self.repository.get(job_id)
        assert isinstance(job, SyncJob)
        return job

    # -- writes -----------------------------------------------------------------------------

    def publish(self, raw: str | bytes | dict[str, Any], actor: str) -> Receipt:
        """Record a publish from one cargo index line, with its index sync job."""
        line = parse_line(raw)
        if line.yanked:
            msg = f"{line.name} {line.vers}: a new version cannot be published already yanked"
            raise InvalidLine(msg, field="yanked")
        _check_actor(actor)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            if crate is None:
                crate = Crate(line.name)
            crate.check_name(line.name)
            crate.check_can_publish(line.key, line.vers)
            job = SyncJob(crate=crate.name, versions=[line.vers], cause="VersionPublished", actor=actor)
            crate._published(
                crate=line.name,
                version=line.vers,
                key=line.key,
                line=line.fields,
                cksum=line.cksum,
                actor=actor,
                job=job.id,
            )
            return crate, job

        return self._change(line.name, line.vers, "VersionPublished", actor, change)

    def yank(self, name: str, version: str, actor: str) -> Receipt:
        """Record a yank: the version stays in the index, marked yanked."""
        return self._state_change(name, version, actor, "VersionYanked", Crate.check_can_yank, Crate._yanked)

    def unyank(self, name: str, version: str, actor: str) -> Receipt:
        """Record an unyank of a yanked version."""
        return self._state_change(
            name, version, actor, "VersionUnyanked", Crate.check_can_unyank, Crate._unyanked
        )

    def delete(self, name: str, version: str, actor: str, reason: str) -> Receipt:
        """Record an admin removal: the version's line must leave the index."""
        if not reason.strip():
            msg = "a deletion needs a reason"
            raise Invalid(msg, field="reason")
        return self._state_change(
            name, version, actor, "VersionDeleted", Crate.check_can_delete, Crate._deleted, reason=reason
        )

    def _state_change(
        self,
        name: str,
        version: str,
        actor: str,
        event: str,
        check: Callable[[Crate, str, str], None],
        apply: Callable[..., None],
        **extra: str,
    ) -> Receipt:
        """A change to an existing version: checked by the crate, saved with its index job."""
        key = _key(name, version)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            crate = _existing(crate, name)
            check(crate, key, version)
            job = SyncJob(crate=crate.name, versions=[version], cause=event, actor=actor)
            apply(crate, crate=crate.name, version=version, key=key, actor=actor, job=job.id, **extra)
            return crate, job

        return self._change(name, version, event, actor, change)

    def _change(
        self,
        name: str,
        version: str,
        event: str,
        actor: str,
        change: Any,
    ) -> Receipt:
        _check_actor(actor)
        for _ in range(SAVE_RETRIES):
            crate, job = change(self.find_crate(name))
            try:
                # The job first: a reader stopping between the two sees a job, never an orphan change.
                recordings = self.save(job, crate)
            except IntegrityError:
                # Another publisher saved this crate first: reload and decide again.
                continue
            except PersistenceError as exc:
                raise _store_error(exc) from exc
            position = max(r.notification.id for r in recordings)
            receipt = Receipt(crate.name, version, event, job.id, position)
            log_step(
                event,
                crate=crate.name,
                version=version,
                actor=actor,
                job=str(job.id),
                position=position,
            )
            return receipt
        msg = f"{name} {version}: the crate kept changing under concurrent writers; try again"
        raise AlreadyPublished(msg, crate=name, version=version)

    # -- batched path -----------------------------------------------------------------------

    def publish_many(
        self,
        lines: Iterable[tuple[int, str | bytes | dict[str, Any] | IndexLine]],
        actor: str,
        *,
        events_per_save: int = 5000,
        keep_yanked: bool = False,
        on_job: Callable[[SyncJob, Sequence[IndexLine]], None] | None = None,
    ) -> BulkResult:
        """Record many publishes, one job per crate per save, saved in large transactions.

        ``lines`` yields ``(line_number, line)``. Bad lines are refused and reported by number
        without stopping; versions already recorded count as present (a second import adds
        nothing). ``keep_yanked`` accepts lines already marked yanked (adopting an index).
        ``on_job`` is called with each new job and the lines it carries just before the save,
        so further events of that job (its confirmation, when the versions were read from the
        index itself) are saved in the same transaction.
        """
        _check_actor(actor)
        result = BulkResult()
        batch = _Batch()
        for window in _windows(lines, LOOKAHEAD):
            refused: list[tuple[int, int, str]] = []
            parsed: list[tuple[int, int, IndexLine]] = []
            for place, (number, raw) in enumerate(window):
                try:
                    line = raw if isinstance(raw, IndexLine) else parse_line(raw)
                    if line.yanked and not keep_yanked:
                        msg = f"{line.name} {line.vers}: a new version cannot be published already yanked"
                        raise InvalidLine(msg, field="yanked")
                except LedgerError as exc:
                    refused.append((place, number, exc.message))
                    continue
                parsed.append((place, number, line))
            known = self._find_crates((line.name for _, _, line in parsed), batch)
            for place, number, line in parsed:
                try:
                    crate, keys = batch.crate(line.name, known)
                    crate.check_name(line.name)
                    crate.check_can_publish(line.key, line.vers)
                    if line.key in keys:
                        result.present += 1
                        continue
                except AlreadyPublished:
                    result.present += 1
                    continue
                except LedgerError as exc:
                    refused.append((place, number, exc.message))
                    continue
                batch.add(crate, keys, line)
                result.accepted += 1
                if batch.size >= events_per_save:
                    self._save_batch(batch, actor, result, on_job)
                    batch = _Batch()
            result.refused += [(number, message) for _, number, message in sorted(refused)]
        if batch.size:
            self._save_batch(batch, actor, result, on_job)
        return result

    def _find_crates(self, names: Iterable[str], batch: _Batch) -> dict[UUID, Crate | None]:
        """The crates of these names: the batch's own, else the store's (None for a new one).

        The store is asked once which of them exist; only those are loaded.
        """
        ids: dict[UUID, str] = {}
        found: dict[UUID, Crate | None] = {}
        last = ""
        for name in names:
            if name != last:
                crate_id = Crate.create_id(name)
                if crate_id in batch.lines:
                    found[crate_id] = batch.lines[crate_id][0]
                else:
                    ids.setdefault(crate_id, name)
                last = name
        existing = getattr(self.recorder, "existing_ids", None)
        try:
            present = set(existing(list(ids))) if existing is not None else set(ids)
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        for crate_id, name in ids.items():
            found[crate_id] = self.find_crate(name) if crate_id in present else None
        return found

    def _save_batch(
        self,
        batch: _Batch,
        actor: str,
        result: BulkResult,
        on_job: Callable[[SyncJob, Sequence[IndexLine]], None] | None = None,
    ) -> None:
        aggregates: list[Aggregate] = []
        events: list[Any] = []
        for crate, lines in batch.lines.values():
            job = SyncJob(
                crate=crate.name,
                versions=[ln.vers for ln in lines],
                cause="VersionPublished",
                actor=actor,
            )
            for ln in lines:
                crate._published(
                    crate=ln.name,
                    version=ln.vers,
                    key=ln.key,
                    line=ln.fields,
                    cksum=ln.cksum,
                    actor=actor,
                    job=job.id,
                )
            # The job first: a reader stopping between the two sees a job, never an orphan change;
            # what ``on_job`` adds to the job comes after the change it is about.
            events += job.collect_events()
            events += crate.collect_events()
            if on_job is not None:
                on_job(job, lines)
                events += job.collect_events()
            aggregates += (job, crate)
        result.jobs += len(batch.lines)
        try:
            recordings = self._save_all(events, aggregates)
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        result.events += len(recordings)
        if recordings:
            result.position = max(result.position, *(r.notification.id for r in recordings))
        log_step("publish_many", events=len(recordings), position=result.position)

    def _save_all(self, events: list[Any], aggregates: Sequence[Aggregate]) -> list[Recording[UUID]]:
        """``save`` of events already collected from ``aggregates``, in the order given.

        The same steps as ``Application.save`` (one transaction, then snapshots), without
        asking of every object whether it is an event or an aggregate.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events += events
        for aggregate in aggregates:
            processing_event.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    # -- the index side ---------------------------------------------------------------------

    def save_jobs(self, aggregates: Sequence[Aggregate]) -> int:
        """Save job and remote events; returns the last log position (0 if nothing)."""
        try:
            recordings = self.save(*aggregates)
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        return max((r.notification.id for r in recordings), default=0)

    def remote(self, url: str) -> IndexRemote:
        """The aggregate that records scans of and repairs to ``url`` (credentials removed)."""
        shown = redact(url)
        try:
            found: Any = self.repository.get(IndexRemote.create_id(shown))
        except AggregateNotFoundError:
            return IndexRemote(url=shown)
        assert isinstance(found, IndexRemote)
        return found


class _Batch:
    """Validated lines waiting for one save, grouped by crate in first-seen order."""

    def __init__(self) -> None:
        self.lines: dict[UUID, tuple[Crate, list[IndexLine]]] = {}
        self.keys: dict[UUID, set[str]] = {}
        self.size = 0
        self._last_name = ""
        self._last_id = Crate.create_id("-")

    def crate(self, name: str, known: dict[UUID, Crate | None]) -> tuple[Crate, set[str]]:
        """The crate a line belongs to (from this batch, ``known``, or new) and its batch keys."""
        if name != self._last_name:
            self._last_name, self._last_id = name, Crate.create_id(name)
        crate_id = self._last_id
        if crate_id in self.lines:
            return self.lines[crate_id][0], self.keys[crate_id]
        crate = known.get(crate_id)
        if crate is None:
            crate = known[crate_id] = Crate(name)
        return crate, set()

    def add(self, crate: Crate, keys: set[str], line: IndexLine) -> None:
        entry = self.lines.setdefault(crate.id, (crate, []))
        self.keys.setdefault(crate.id, keys).add(line.key)
        entry[1].append(line)
        self.size += 1 + (len(entry[1]) == 1)


def _windows(lines: Iterable[T], size: int) -> Iterator[list[T]]:
    """``lines`` in lists of up to ``size``."""
    source = iter(lines)
    while window := list(islice(source, size)):
        yield window


def _key(name: str, version: str) -> str:
    validate_name(name)
    return parse_version(version).key


def _existing(crate: Crate | None, name: str) -> Crate:
    from ledger.errors import NotFound

    if crate is None:
        msg = f"no crate named {name!r}"
        raise NotFound(msg, crate=name)
    crate.check_name(name)
    return crate


def _check_actor(actor: str) -> None:
    if not actor or not actor.strip() or len(actor) > 200:
        msg = "an actor (who asked for the change) is required, at most 200 characters"
        raise Invalid(msg, field="actor")


def _store_error(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the event store failed: {redact(str(exc)).strip()}")
