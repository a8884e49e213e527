"""The publication ledger's batched publish: many lines, one job per crate per save, large saves.

:class:`BatchedPublishing` is a mixin of :class:`~ledger.services.publishing.PublicationLedger`:
it reads lines ahead in windows, asks the store about their crates in one query, and saves each
batch in one transaction, its events built in bulk (see :mod:`ledger.services.publishing_encoding`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import PersistenceError, StoredEvent

from ledger.domain.aggregates import Crate, SyncJob
from ledger.domain.errors import AlreadyPublished, InvalidLine, LedgerError
from ledger.domain.index_format import IndexLine, parse_line
from ledger.logs import log_step
from ledger.services.publishing_encoding import job_done, job_enqueued, json_string, published_events
from ledger.services.publishing_terms import BulkResult, CheckedLine, Confirmation, check_actor, store_error

if TYPE_CHECKING:
    from eventsourcing.application import Repository
    from eventsourcing.persistence import ApplicationRecorder, Mapper

T = TypeVar("T")

LOOKAHEAD = 1000
"""Lines the batched path reads ahead, to ask the store about their crates in one query."""


class BatchedPublishing:
    job_targets: list[str] | None = None
    """The index targets every new job must reach, when there are several (else the one)."""

    def scope_job(self, job: SyncJob) -> None:
        """Name the targets a new job must reach, when the ledger has several."""
        if self.job_targets:
            job.scoped(targets=list(self.job_targets))

    """The batched path of :class:`~ledger.services.publishing.PublicationLedger`."""

    if TYPE_CHECKING:
        mapper: Mapper[UUID]
        recorder: ApplicationRecorder

        @property
        def repository(self) -> Repository[UUID]: ...

        def find_crate(self, name: str) -> Crate | None: ...

        def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None: ...

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
        check_actor(actor)
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
            raise store_error(exc) from exc
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
        :func:`published_events`, :func:`job_enqueued` and :func:`job_done`) when that gives
        the very bytes the library's mapper gives (compared once per application); a job
        handed to ``on_job`` and a crate's registration are made and mapped by the library.
        """
        direct = self._direct_encoding()
        to_stored = self.mapper.to_stored_event
        actor_json = json_string(actor)
        stored: list[StoredEvent] = []
        first: dict[UUID, int] = {}
        aggregates: list[Aggregate] = []
        for crate, lines in batch.lines.values():
            versions = [ln.vers for ln in lines]
            job: SyncJob | None = None
            if direct and on_job is None and (confirm is not None or not self.job_targets):
                job_id = uuid4()
                stored.append(job_enqueued(job_id, crate.name, versions, actor))
            else:
                job = SyncJob(crate=crate.name, versions=versions, cause="VersionPublished", actor=actor)
                if confirm is None:  # an import's jobs are done on the target it read
                    self.scope_job(job)
                job_id = job.id
                stored += map(to_stored, job.collect_events())
            # The job first: a reader stopping between the two sees a job, never an orphan change;
            # what is added to the job comes after the change it is about.
            registered = crate.collect_events()  # a new crate's registration
            stored += map(to_stored, registered)
            first[job_id] = 1
            first[crate.id] = crate.version - len(registered) + 1
            if direct:
                stored += published_events(crate, lines, actor_json, job_id)
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
            raise store_error(exc) from exc
        result.events += len(stored)
        if ids:
            result.position = max(result.position, *ids)
        log_step("publish_many", events=len(stored), position=result.position)

    def _confirmed(
        self, job_id: UUID, job: SyncJob | None, crate: str, done: Confirmation
    ) -> list[StoredEvent]:
        """A new job's confirmation and completion: directly, or through ``job`` when there is one."""
        if job is None:
            return job_done(job_id, crate, done)
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
            "c" * 40, "d" * 40, "a method é", "de/ja/déjà-vu", "a target é", [["1.0.0+b", "1.0.0", True, "e"]]
        )
        job = SyncJob(crate=line.name, versions=[line.vers], cause="VersionPublished", actor=actor)
        job.confirmed(crate=line.name, **done._asdict())
        job.completed(commit=done.commit)
        events = job.collect_events()
        moments = [e.timestamp for e in events]
        expected = [self.mapper.to_stored_event(e) for e in events]
        found = [job_enqueued(job.id, line.name, [line.vers], actor, timestamp=moments[0])]
        found += job_done(job.id, line.name, done, timestamps=moments[1:])
        crate = Crate(line.name)
        crate.collect_events()
        _record_published(crate, line, actor, job.id)
        (published,) = crate.collect_events()
        expected.append(self.mapper.to_stored_event(published))
        twin = Crate(line.name)
        twin.collect_events()
        found += published_events(twin, [line], json_string(actor), job.id, timestamps=[published.timestamp])
        return (
            found == expected
            and twin.versions == crate.versions
            and twin.spelling == crate.spelling
            and twin.version == crate.version
            and twin.modified_on == crate.modified_on
        )


class _Saved(NamedTuple):
    """An aggregate's first version in a batched save: what the snapshot intervals look at."""

    originator_id: UUID
    originator_version: int


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


def _windows(lines: Iterable[T], size: int) -> Iterator[list[T]]:
    """``lines`` in lists of up to ``size``."""
    source = iter(lines)
    while window := list(islice(source, size)):
        yield window


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
