"""The publication ledger's application service: the registry side of every publication.

``publish``, ``yank``, ``unyank`` and ``delete`` each save the crate's change and the index sync
job it causes in one transaction (``Application.save`` is the unit of work), so there is no
publish without its job and no job without its publish. The call returns once both are durable;
it never waits on git.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.domain import Crate, IndexRemote, SyncJob
from ledger.errors import AlreadyPublished, Invalid, InvalidLine, LedgerError, StoreUnavailable
from ledger.index_format import IndexLine, parse_line
from ledger.logs import log_step
from ledger.names import validate_name
from ledger.settings import redact
from ledger.versions import parse_version

SAVE_RETRIES = 5


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
    position: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "present": self.present,
            "events": self.events,
            "position": self.position,
            "refused": [{"line": n, "error": e} for n, e in self.refused],
        }


class PublicationLedger(Application[UUID]):
    """Crates and their sync jobs, recorded as events."""

    name = "PublicationLedger"
    snapshotting_intervals = {Crate: 100}  # noqa: RUF012  (the library's own class attribute)

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.worker_name = f"{socket.gethostname()}:{id(self):x}"

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
        key = _key(name, version)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            crate = _existing(crate, name)
            crate.check_can_yank(key, version)
            job = SyncJob(crate=crate.name, versions=[version], cause="VersionYanked", actor=actor)
            crate._yanked(crate=crate.name, version=version, key=key, actor=actor, job=job.id)
            return crate, job

        return self._change(name, version, "VersionYanked", actor, change)

    def unyank(self, name: str, version: str, actor: str) -> Receipt:
        """Record an unyank of a yanked version."""
        key = _key(name, version)

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            crate = _existing(crate, name)
            crate.check_can_unyank(key, version)
            job = SyncJob(crate=crate.name, versions=[version], cause="VersionUnyanked", actor=actor)
            crate._unyanked(crate=crate.name, version=version, key=key, actor=actor, job=job.id)
            return crate, job

        return self._change(name, version, "VersionUnyanked", actor, change)

    def delete(self, name: str, version: str, actor: str, reason: str) -> Receipt:
        """Record an admin removal: the version's line must leave the index."""
        key = _key(name, version)
        if not reason.strip():
            msg = "a deletion needs a reason"
            raise Invalid(msg, field="reason")

        def change(crate: Crate | None) -> tuple[Crate, SyncJob]:
            crate = _existing(crate, name)
            crate.check_can_delete(key, version)
            job = SyncJob(crate=crate.name, versions=[version], cause="VersionDeleted", actor=actor)
            crate._deleted(crate=crate.name, version=version, key=key, actor=actor, reason=reason, job=job.id)
            return crate, job

        return self._change(name, version, "VersionDeleted", actor, change)

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
                recordings = self.save(crate, job)
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
    ) -> BulkResult:
        """Record many publishes, one job per crate per save, saved in large transactions.

        ``lines`` yields ``(line_number, line)``. Bad lines are refused and reported by number
        without stopping; versions already recorded count as present (a second import adds
        nothing). ``keep_yanked`` accepts lines already marked yanked (adopting an index).
        """
        _check_actor(actor)
        result = BulkResult()
        batch = _Batch()
        for number, raw in lines:
            try:
                line = raw if isinstance(raw, IndexLine) else parse_line(raw)
                if line.yanked and not keep_yanked:
                    msg = f"{line.name} {line.vers}: a new version cannot be published already yanked"
                    raise InvalidLine(msg, field="yanked")
                crate, keys = batch.crate(line.name, self.find_crate)
                crate.check_name(line.name)
                crate.check_can_publish(line.key, line.vers)
                if line.key in keys:
                    result.present += 1
                    continue
            except AlreadyPublished:
                result.present += 1
                continue
            except StoreUnavailable:
                raise
            except LedgerError as exc:
                result.refused.append((number, exc.message))
                continue
            batch.add(crate, keys, line)
            result.accepted += 1
            if batch.size >= events_per_save:
                self._save_batch(batch, actor, result)
                batch = _Batch()
        if batch.size:
            self._save_batch(batch, actor, result)
        return result

    def _save_batch(self, batch: _Batch, actor: str, result: BulkResult) -> None:
        aggregates: list[Aggregate] = []
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
            aggregates += (crate, job)
        try:
            recordings = self.save(*aggregates)
        except PersistenceError as exc:
            raise _store_error(exc) from exc
        result.events += len(recordings)
        if recordings:
            result.position = max(result.position, *(r.notification.id for r in recordings))
        log_step("publish_many", events=len(recordings), position=result.position)

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

    def events_of(self, aggregate_id: UUID) -> Iterator[Any]:
        """Every event of one aggregate, oldest first."""
        yield from self.repository.event_store.get(aggregate_id)


class _Batch:
    """Validated lines waiting for one save, grouped by crate in first-seen order."""

    def __init__(self) -> None:
        self.lines: dict[UUID, tuple[Crate, list[IndexLine]]] = {}
        self.keys: dict[UUID, set[str]] = {}
        self.size = 0

    def crate(self, name: str, find: Any) -> tuple[Crate, set[str]]:
        crate_id = Crate.create_id(name)
        if crate_id in self.lines:
            return self.lines[crate_id][0], self.keys[crate_id]
        crate = find(name) or Crate(name)
        return crate, set()

    def add(self, crate: Crate, keys: set[str], line: IndexLine) -> None:
        entry = self.lines.setdefault(crate.id, (crate, []))
        self.keys.setdefault(crate.id, keys).add(line.key)
        entry[1].append(line)
        self.size += 1 + (len(entry[1]) == 1)


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
