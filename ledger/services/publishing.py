"""The publication ledger's application service: the registry side of every publication.

``publish``, ``yank``, ``unyank`` and ``delete`` each save the crate's change and the index sync
job it causes in one transaction (``Application.save`` is the unit of work), so there is no
publish without its job and no job without its publish. The call returns once both are durable;
it never waits on git.

The batched publish is :class:`~ledger.services.publishing_bulk.BatchedPublishing`; what the calls
take and return is in :mod:`ledger.services.publishing_terms`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent

from ledger.domain.aggregates import Crate, IndexRemote, SyncJob
from ledger.domain.errors import AlreadyPublished, Invalid, InvalidLine
from ledger.domain.index_format import parse_line
from ledger.domain.names import validate_name
from ledger.domain.versions import parse_version
from ledger.logs import log_step
from ledger.services.publishing_access import RegistryAccess
from ledger.services.publishing_bulk import LOOKAHEAD, BatchedPublishing
from ledger.services.publishing_terms import (
    BulkResult,
    CheckedLine,
    Confirmation,
    Receipt,
    check_actor,
    store_error,
)
from ledger.settings import redact

__all__ = [
    "LOOKAHEAD",
    "SAVE_RETRIES",
    "BulkResult",
    "CheckedLine",
    "Confirmation",
    "PublicationLedger",
    "Receipt",
]

SAVE_RETRIES = 5


class PublicationLedger(RegistryAccess, BatchedPublishing, Application[UUID]):
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
            raise store_error(exc) from exc
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

    def publish(self, raw: str | bytes | dict[str, Any], actor: str, *, owner: str | None = None) -> Receipt:
        """Record a publish from one cargo index line, with its index sync job.

        ``owner``: the registry user publishing (``ledger serve``): a new crate is theirs, an
        existing one must be (else :class:`~ledger.domain.errors.Forbidden`, nothing saved).
        """
        line = parse_line(raw)
        if line.yanked:
            msg = f"{line.name} {line.vers}: a new version cannot be published already yanked"
            raise InvalidLine(msg, field="yanked")
        check_actor(actor)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            if crate is None:
                crate = Crate(line.name)
                if owner is not None:
                    crate.add_owner(crate=line.name, user=owner, actor=owner)
            elif owner is not None:
                crate.check_owner(owner, "publish")
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

    def yank(self, name: str, version: str, actor: str, *, owner: str | None = None) -> Receipt:
        """Record a yank: the version stays in the index, marked yanked (``owner``: see publish)."""
        return self._state_change(
            name, version, actor, "VersionYanked", Crate.check_can_yank, Crate._yanked, owner=owner
        )

    def unyank(self, name: str, version: str, actor: str, *, owner: str | None = None) -> Receipt:
        """Record an unyank of a yanked version (``owner``: see publish)."""
        return self._state_change(
            name, version, actor, "VersionUnyanked", Crate.check_can_unyank, Crate._unyanked, owner=owner
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
        owner: str | None = None,
        **extra: str,
    ) -> Receipt:
        """A change to an existing version: checked by the crate, saved with its index job."""
        key = _key(name, version)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            crate = _existing(crate, name)
            if owner is not None:
                crate.check_owner(owner, "yank" if event == "VersionYanked" else "unyank")
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
        check_actor(actor)
        for _ in range(SAVE_RETRIES):
            crate, job = change(self.find_crate(name))
            self.scope_job(job)
            try:
                # The job first: a reader stopping between the two sees a job, never an orphan change.
                recordings = self.save(job, crate)
            except IntegrityError:
                # Another publisher saved this crate first: reload and decide again.
                continue
            except PersistenceError as exc:
                raise store_error(exc) from exc
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

    # -- the index side ---------------------------------------------------------------------

    def save_jobs(self, aggregates: Sequence[Aggregate]) -> int:
        """Save job and remote events; returns the last log position (0 if nothing)."""
        try:
            recordings = self.save(*aggregates)
        except PersistenceError as exc:
            raise store_error(exc) from exc
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


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply each event to the aggregate in turn.

    The library's default projector checks every event against a runtime-checkable protocol,
    which costs more than applying the event; the ledger's events are all aggregate events.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate
