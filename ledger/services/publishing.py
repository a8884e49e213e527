"""The publication ledger's application service: the registry side of every publication.

``publish``, ``yank``, ``unyank`` and ``delete`` each save the crate's change and the index sync
job it causes in one transaction (``Application.save`` is the unit of work), so there is no
publish without its job and no job without its publish. The call returns once both are durable;
it never waits on git.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent
from eventsourcing.utils import get_topic

from ledger.domain.aggregates import LIVE, YANKED, Crate, IndexRemote, SyncJob
from ledger.domain.errors import AlreadyPublished, Invalid, InvalidLine, LedgerError, StoreUnavailable
from ledger.domain.index_format import IndexLine, parse_line
from ledger.domain.names import validate_name
from ledger.domain.versions import parse_version
from ledger.logs import log_step
from ledger.settings import redact

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
            crate: Any = self.repository.get(Crate.create_id(name), projector_func=_project)
        except AggregateNotFoundError:
            return None
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        assert isinstance(crate, Crate)
        return crate

    def get_job(self, job_id: UUID) -> SyncJob:
        job: Any = self.repository.get(job_id, projector_func=_project)
        assert isinstance(job, SyncJob)
        return job

    def jobs_from(self, stored: Iterable[StoredEvent]) -> dict[UUID, SyncJob]:
        """The jobs whose every stored event is in ``stored`` (any order): one read for many jobs.

        Jobs take no snapshots, so their events are all there is to replay.
        """
        by_job: dict[UUID, list[StoredEvent]] = {}
        for event in stored:
            key = event.originator_id
            by_job.setdefault(key if isinstance(key, UUID) else UUID(key), []).append(event)
        jobs: dict[UUID, SyncJob] = {}
        for job_id, events in by_job.items():
            events.sort(key=lambda e: e.originator_version)
            job = _project(None, (self.mapper.to_domain_event(e) for e in events))
            if not isinstance(job, SyncJob):
                raise TypeError(f"{job_id} is not a sync job")
            jobs[job_id] = job
        return jobs

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

    _direct: bool | None = None
    """Whether the batched path may store its events without the mapper (see ``_save_batch``)."""

    def publish_many(
        self,
        lines: Iterable[tuple[int, str | bytes | dict[str, Any] | IndexLine | CheckedLine]],
        actor: str,
        *,
        events_per_save: int = 5000,
        keep_yanked: bool = False,
        on_job: Callable[[SyncJob, Sequence[CheckedLine]], None] | None = None,
        confirm: Callable[[Sequence[CheckedLine]], Confirmation] | None = None,
    ) -> BulkResult:
        """Record many publishes, one job per crate per save, saved in large transactions.

        ``lines`` yields ``(line_number, line)``. Bad lines are refused and reported by number
        without stopping; versions already recorded count as present (a second import adds
        nothing). ``keep_yanked`` accepts lines already marked yanked (adopting an index).
        A :class:`CheckedLine` (a line ``parse_line`` accepted elsewhere) is not parsed again.
        ``on_job`` is called with each new job and the lines it carries just before the save,
        so further events of that job are saved in the same transaction. ``confirm`` is for lines
        read from the index itself: called with each new job's lines, what it returns is saved
        in the same transaction as the job's ``IndexPushConfirmed`` and ``IndexSyncCompleted``.
        """
        _check_actor(actor)
        result = BulkResult()
        batch = _Batch()
        for window in _windows(lines, LOOKAHEAD):
            refused: list[tuple[int, int, str]] = []
            parsed: list[tuple[int, int, CheckedLine]] = []
            for place, (number, raw) in enumerate(window):
                try:
                    if isinstance(raw, CheckedLine):
                        line = raw
                    else:
                        line = CheckedLine.of(raw if isinstance(raw, IndexLine) else parse_line(raw))
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
                    self._save_batch(batch, actor, result, on_job, confirm)
                    batch = _Batch()
            result.refused += [(number, message) for _, number, message in sorted(refused)]
        if batch.size:
            self._save_batch(batch, actor, result, on_job, confirm)
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
        on_job: Callable[[SyncJob, Sequence[CheckedLine]], None] | None = None,
        confirm: Callable[[Sequence[CheckedLine]], Confirmation] | None = None,
    ) -> None:
        """One transaction for the batch: per crate its job, its new versions, then the job's
        confirmation (``confirm``) and what ``on_job`` adds.

        The events of a batched publish are written straight to their stored form (see
        :func:`_published_events`, :func:`_job_enqueued` and :func:`_job_done`) when that gives
        the very bytes the library's mapper gives (compared once per application); a job
        handed to ``on_job`` and a crate's registration are made and mapped by the library.
        """
        direct = self._direct_encoding()
        to_stored = self.mapper.to_stored_event
        actor_json = _json_string(actor)
        stored: list[StoredEvent] = []
        first: dict[UUID, int] = {}
        aggregates: list[Aggregate] = []
        for crate, lines in batch.lines.values():
            versions = [ln.vers for ln in lines]
            job: SyncJob | None = None
            if direct and on_job is None:
                job_id = uuid4()
                stored.append(_job_enqueued(job_id, crate.name, versions, actor))
            else:
                job = SyncJob(crate=crate.name, versions=versions, cause="VersionPublished", actor=actor)
                job_id = job.id
                stored += map(to_stored, job.collect_events())
            # The job first: a reader stopping between the two sees a job, never an orphan change;
            # what is added to the job comes after the change it is about.
            registered = crate.collect_events()  # a new crate's registration
            stored += map(to_stored, registered)
            first[job_id] = 1
            first[crate.id] = crate.version - len(registered) + 1
            if direct:
                stored += _published_events(crate, lines, actor_json, job_id)
            else:
                for ln in lines:
                    _record_published(crate, ln, actor, job_id)
                stored += map(to_stored, crate.collect_events())
            if confirm is not None:
                stored += self._confirmed(job_id, job, crate.name, confirm(lines))
            if job is not None:
                if on_job is not None:
                    on_job(job, lines)
                    stored += map(to_stored, job.collect_events())
                aggregates.append(job)
            aggregates.append(crate)
        result.jobs += len(batch.lines)
        try:
            ids = self._insert_all(stored, aggregates, first)
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        result.events += len(stored)
        if ids:
            result.position = max(result.position, *ids)
        log_step("publish_many", events=len(stored), position=result.position)

    def _confirmed(
        self, job_id: UUID, job: SyncJob | None, crate: str, done: Confirmation
    ) -> list[StoredEvent]:
        """A new job's confirmation and completion: directly, or through ``job`` when there is one."""
        if job is None:
            return _job_done(job_id, crate, done)
        job.confirmed(crate=crate, **done._asdict())
        job.completed(commit=done.commit)
        return [self.mapper.to_stored_event(e) for e in job.collect_events()]

    def _insert_all(
        self, stored: list[StoredEvent], aggregates: Sequence[Aggregate], first: dict[UUID, int]
    ) -> Sequence[int]:
        """What ``Application.save`` does after mapping: one transaction, the cache, snapshots.

        ``first`` is each aggregate's first version in ``stored``, for the snapshot intervals.
        """
        ids = self.recorder.insert_events(stored) or []
        cache = self.repository.cache
        if cache and not self.repository.fastforward:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        saved: list[Any] = [_Saved(i, v) for i, v in first.items()]
        processing_event.events += saved
        for aggregate in aggregates:
            processing_event.aggregates[aggregate.id] = aggregate
        self._take_snapshots(processing_event)
        return ids

    def _direct_encoding(self) -> bool:
        """Whether the batched path may store its events without the mapper (asked once)."""
        if self._direct is None:
            self._direct = self._direct_encoding_holds()
        return self._direct

    def _direct_encoding_holds(self) -> bool:
        """Make each kind of event both ways, through the library and directly, and compare."""
        fields = {"name": "déjà-vu", "vers": "1.0.0+b", "x": '"\\\n\x01é€\U0001f600', "yanked": True}
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        line = CheckedLine("déjà-vu", "1.0.0+b", "1.0.0", "0" * 64, True, text)
        actor = 'an "actor" é'
        done = Confirmation(
            "c" * 40, "d" * 40, "a method é", "de/ja/déjà-vu", [["1.0.0+b", "1.0.0", True, "e"]]
        )
        job = SyncJob(crate=line.name, versions=[line.vers], cause="VersionPublished", actor=actor)
        job.confirmed(crate=line.name, **done._asdict())
        job.completed(commit=done.commit)
        events = job.collect_events()
        moments = [e.timestamp for e in events]
        expected = [self.mapper.to_stored_event(e) for e in events]
        found = [_job_enqueued(job.id, line.name, [line.vers], actor, timestamp=moments[0])]
        found += _job_done(job.id, line.name, done, timestamps=moments[1:])
        crate = Crate(line.name)
        crate.collect_events()
        _record_published(crate, line, actor, job.id)
        (published,) = crate.collect_events()
        expected.append(self.mapper.to_stored_event(published))
        twin = Crate(line.name)
        twin.collect_events()
        found += _published_events(
            twin, [line], _json_string(actor), job.id, timestamps=[published.timestamp]
        )
        return (
            found == expected
            and twin.versions == crate.versions
            and twin.spelling == crate.spelling
            and twin.version == crate.version
            and twin.modified_on == crate.modified_on
        )

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
            found: Any = self.repository.get(IndexRemote.create_id(shown), projector_func=_project)
        except AggregateNotFoundError:
            return IndexRemote(url=shown)
        assert isinstance(found, IndexRemote)
        return found


class CheckedLine(NamedTuple):
    """An index line that ``parse_line`` accepted, with what the batched path records of it.

    ``text`` is the line's JSON as :meth:`IndexLine.render` writes it (the event's ``line``).
    """

    name: str
    vers: str
    key: str
    cksum: str
    yanked: bool
    text: str

    @classmethod
    def of(cls, line: IndexLine) -> CheckedLine:
        return cls(line.name, line.vers, line.key, line.cksum, line.yanked, line.render().decode())


class Confirmation(NamedTuple):
    """A new job's ``IndexPushConfirmed`` but for its crate: the remote holds its file as read."""

    commit: str
    remote_head: str
    method: str
    path: str
    entries: list[list[Any]]


class _Saved(NamedTuple):
    """An aggregate's first version in a batched save: what the snapshot intervals look at."""

    originator_id: UUID
    originator_version: int


_PUBLISHED_TOPIC = get_topic(Crate.VersionPublished)
_PUBLISHED_STATE = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"%s"},"crate":%s,"version":%s,"key":%s,'
    '"line":%s,"cksum":%s,"actor":%s,"job":{"_type_":"uuid_hex","_data_":"%s"}}'
)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ENQUEUED_TOPIC = get_topic(SyncJob.IndexSyncEnqueued)
_CONFIRMED_TOPIC = get_topic(SyncJob.IndexPushConfirmed)
_COMPLETED_TOPIC = get_topic(SyncJob.IndexSyncCompleted)
_JOB_TOPIC = get_topic(SyncJob)


def _stored(
    aggregate_id: UUID, version: int, topic: str, moment: datetime, fields: dict[str, Any]
) -> StoredEvent:
    """A stored event of ``fields`` (JSON values only, in the event's order) and its timestamp."""
    head = '{"timestamp":{"_type_":"datetime_iso","_data_":"' + moment.isoformat() + '"},'
    return StoredEvent(aggregate_id, version, topic, (head + _ENCODER.encode(fields)[1:]).encode())


def _job_enqueued(
    job: UUID, crate: str, versions: list[str], actor: str, *, timestamp: datetime | None = None
) -> StoredEvent:
    """A new job's ``IndexSyncEnqueued`` (cause ``VersionPublished``), as the mapper stores it."""
    moment = SyncJob.IndexSyncEnqueued.create_timestamp() if timestamp is None else timestamp
    fields = {
        "originator_topic": _JOB_TOPIC,
        "crate": crate,
        "versions": versions,
        "cause": "VersionPublished",
        "actor": actor,
    }
    return _stored(job, 1, _ENQUEUED_TOPIC, moment, fields)


def _job_done(
    job: UUID, crate: str, done: Confirmation, *, timestamps: Sequence[datetime] | None = None
) -> list[StoredEvent]:
    """A new job's ``IndexPushConfirmed`` then ``IndexSyncCompleted``, as the mapper stores them."""
    now = SyncJob.Event.create_timestamp
    confirmed, completed = timestamps if timestamps is not None else (now(), now())
    return [
        _stored(job, 2, _CONFIRMED_TOPIC, confirmed, {"crate": crate, **done._asdict()}),
        _stored(job, 3, _COMPLETED_TOPIC, completed, {"commit": done.commit}),
    ]


def _published_events(
    crate: Crate,
    lines: Sequence[CheckedLine],
    actor_json: str,
    job: UUID,
    *,
    timestamps: Sequence[datetime] | None = None,
) -> list[StoredEvent]:
    """``Crate._published`` for each line, straight to the stored events the mapper would make.

    The crate changes as the events would change it (versions, spelling, version, modified
    time); ``PublicationLedger._direct_encoding_holds`` compares both ways before this is used.
    """
    stored: list[StoredEvent] = []
    version = crate.version
    versions, spelling = crate.versions, crate.spelling
    now = Crate.VersionPublished.create_timestamp
    job_hex = job.hex
    moment = crate.modified_on
    for place, ln in enumerate(lines):
        version += 1
        moment = now() if timestamps is None else timestamps[place]
        state = _PUBLISHED_STATE % (
            moment.isoformat(),
            _json_string(ln.name),
            _json_string(ln.vers),
            _json_string(ln.key),
            ln.text,
            _json_string(ln.cksum),
            actor_json,
            job_hex,
        )
        stored.append(StoredEvent(crate.id, version, _PUBLISHED_TOPIC, state.encode()))
        versions[ln.key] = YANKED if ln.yanked else LIVE
        spelling[ln.key] = ln.vers
    crate.version = version
    crate.modified_on = moment
    return stored


class _Batch:
    """Validated lines waiting for one save, grouped by crate in first-seen order."""

    def __init__(self) -> None:
        self.lines: dict[UUID, tuple[Crate, list[CheckedLine]]] = {}
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

    def add(self, crate: Crate, keys: set[str], line: CheckedLine) -> None:
        entry = self.lines.setdefault(crate.id, (crate, []))
        self.keys.setdefault(crate.id, keys).add(line.key)
        entry[1].append(line)
        self.size += 1 + (len(entry[1]) == 1)


def _json_string(text: str) -> str:
    """``text`` as a JSON string, as the mapper's encoder writes it (``ensure_ascii=False``)."""
    found: str = encode_basestring(text)
    return found


def _windows(lines: Iterable[T], size: int) -> Iterator[list[T]]:
    """``lines`` in lists of up to ``size``."""
    source = iter(lines)
    while window := list(islice(source, size)):
        yield window


def _key(name: str, version: str) -> str:
    validate_name(name)
    return parse_version(version).key


def _existing(crate: Crate | None, name: str) -> Crate:
    from ledger.domain.errors import NotFound

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


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply each event to the aggregate in turn.

    The library's default projector checks every event against a runtime-checkable protocol,
    which costs more than applying the event; the ledger's events are all aggregate events.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _record_published(crate: Crate, line: CheckedLine, actor: str, job: UUID) -> None:
    """``VersionPublished`` of a checked line on ``crate``, through the aggregate."""
    crate._published(
        crate=line.name,
        version=line.vers,
        key=line.key,
        line=json.loads(line.text),
        cksum=line.cksum,
        actor=actor,
        job=job,
    )
