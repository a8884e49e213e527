"""The core of the ledger: what every use case stands on.

It joins the application (events), the views (queries), the event log and, when one is
configured, the index target: record changes, read jobs, history, timelines and audits (now
or as of a past moment). The use cases that reach the index (sync, import, scan, repair) take
a core; :class:`ledger.services.ledger.Ledger` adds them as methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from ledger.domain.aggregates import Crate, SyncJob
from ledger.domain.errors import Invalid, NotFound
from ledger.domain.index_format import IndexLine
from ledger.domain.names import collision_key, validate_name
from ledger.domain.versions import parse_version
from ledger.ports import (
    ChainReport,
    CrateFiles,
    Database,
    EventLog,
    IndexTarget,
    Lease,
    OpenTarget,
    Sleep,
    Wakeup,
)
from ledger.services.history import describe
from ledger.services.publishing import BulkResult, PublicationLedger, Receipt
from ledger.settings import Settings
from projections.consistency import AuditReport, audit, missing_files
from projections.queries import jobs_of_crate
from projections.runner import ViewRunner
from projections.schema import DEFAULT_GRACE_S
from projections.views.state import TargetScope

if TYPE_CHECKING:
    pass

JOBS_PER_READ = 500
"""Jobs read per query: well below the bound-parameter limit of every SQLite build."""


@dataclass(frozen=True)
class TargetParts:
    """What the core of one more index target needs: its views' own database (every target
    has its views), how to open the target, where its local folder lives, its writer lease."""

    db: Database
    index_factory: Callable[[], IndexTarget]
    index_dir: Path | None
    leases: Callable[[str, float], Lease]


@dataclass(frozen=True)
class AsOf:
    """A past moment to answer for: a log position, or a time."""

    position: int | None = None
    time: datetime | None = None


class LedgerCore:
    """The ledger's store, views, log and index target, and the changes and queries on them."""

    def __init__(
        self,
        settings: Settings,
        app: PublicationLedger,
        db: Database,
        *,
        log: EventLog,
        leases: Callable[[str, float], Lease],
        scratch: Callable[[], Database],
        open_target: OpenTarget,
        index_factory: Callable[[], IndexTarget] | None = None,
        index_dir: Path | None = None,
        crate_files: CrateFiles | None = None,
        wakeups: Callable[[], Wakeup] | None = None,
        target: str | None = None,
        target_parts: Callable[[str], TargetParts] | None = None,
    ) -> None:
        """Everything that reaches outside comes in here, chosen by :mod:`ledger.bootstrap`:
        ``log`` reads the stored events, ``leases(holder, ttl)`` makes an index-writer lease,
        ``scratch()`` an empty private database (time travel's views), ``open_target`` an index
        target for a URL in a local folder (the import's source), ``index_factory`` the index
        target, ``index_dir`` where its local folder lives when the settings place it, and
        ``crate_files`` the registry's ``.crate`` files when it serves them (the audit then
        reports a version whose file is missing), ``wakeups()`` what wakes a following worker
        when the log grows. ``target`` names the index target this core serves (the first one by
        default); ``target_parts(name)`` opens what the core of another one needs."""
        self.settings = settings
        self.app = app
        self.db = db
        self.log = log
        self.target_names: tuple[str, ...] = settings.target_names
        """Every index target of the ledger, the first one first."""
        self.target = target or self.target_names[0]
        """The index target whose views, jobs and index this core reads and writes."""
        self.views = ViewRunner(
            app, db, log, scope=TargetScope(self.target, primary=self.target == self.target_names[0])
        )
        self._target_parts = target_parts
        self._cores: dict[str, Self] = {}
        self._owns_app = True
        self.open_target = open_target
        self.index_dir = index_dir
        self.crate_files = crate_files
        self._wakeups = wakeups
        self._leases = leases
        self._scratch = scratch
        self._index_factory = index_factory
        self._index: IndexTarget | None = None

    def close(self) -> None:
        for core in self._cores.values():
            core.close()
        if self._index is not None:
            self._index.close()
        if self._owns_app:
            self.app.close()
        self.db.close()

    def on(self, target: str | None) -> Self:
        """The core of an index target (None or this one's name: this core), opened on first use.

        It shares the events and the store; its views (the database view and what that target
        holds), its jobs' progress, its index and its writer lease are its own.
        """
        if target is None or target == self.target:
            return self
        if target not in self.target_names:
            msg = f"no index target named {target!r} (configured: {', '.join(self.target_names)})"
            raise Invalid(msg, target=target)
        if target == self.target_names[0] or self._target_parts is None:
            msg = f"index target {target!r} is not reachable from the core of {self.target!r}"
            raise Invalid(msg, target=target)
        found = self._cores.get(target)
        if found is None:
            parts = self._target_parts(target)
            found = type(self)(
                self.settings,
                self.app,
                parts.db,
                log=self.log,
                leases=parts.leases,
                scratch=self._scratch,
                open_target=self.open_target,
                index_factory=parts.index_factory,
                index_dir=parts.index_dir,
                crate_files=self.crate_files,
                wakeups=self._wakeups,
                target=target,
            )
            found._owns_app = False
            found.views.create_tables()
            self._cores[target] = found
        return found

    def each_target(self) -> list[Self]:
        """The core of every index target, the first one first (from the first one's core)."""
        return [self.on(name) for name in self.target_names]

    def index(self) -> IndexTarget:
        """The index target (opened on first use)."""
        if self._index is None:
            if self._index_factory is None:
                msg = "this ledger has no index remote configured (--remote URL or --target NAME=URL)"
                raise Invalid(msg, field="remote")
            self._index = self._index_factory()
        return self._index

    # -- the index sync worker --------------------------------------------------------------

    def jobs(self, job_ids: Sequence[UUID]) -> dict[UUID, SyncJob]:
        """These sync jobs as they stand, read a few hundred at a time."""
        found: dict[UUID, SyncJob] = {}
        for start in range(0, len(job_ids), JOBS_PER_READ):
            found.update(
                self.app.jobs_from(self.log.notifications_of(job_ids[start : start + JOBS_PER_READ]))
            )
        missing = [job for job in job_ids if job not in found]
        if missing:
            raise NotFound(f"no sync job {missing[0]}", job=str(missing[0]))
        return found

    # -- the publisher ----------------------------------------------------------------------

    def publish(self, line: str | bytes | dict[str, Any], actor: str) -> Receipt:
        """Record a publish and its index job; returns once both are durable."""
        return self.app.publish(line, actor)

    def publish_many(
        self,
        lines: Iterable[tuple[int, str | bytes | dict[str, Any] | IndexLine]],
        actor: str,
        **options: Any,
    ) -> BulkResult:
        return self.app.publish_many(lines, actor, **options)

    def yank(self, crate: str, version: str, actor: str) -> Receipt:
        return self.app.yank(crate, version, actor)

    def unyank(self, crate: str, version: str, actor: str) -> Receipt:
        return self.app.unyank(crate, version, actor)

    def delete(self, crate: str, version: str, actor: str, reason: str) -> Receipt:
        return self.app.delete(crate, version, actor, reason)

    def wait_for_views(self, receipt: Receipt | int, timeout: float = 10.0) -> None:
        """Read-your-writes: return once the views include the receipt's change."""
        position = receipt.position if isinstance(receipt, Receipt) else receipt
        self.views.wait_for(position, timeout)

    # -- the operator -----------------------------------------------------------------------

    def history(self, crate: str, version: str | None = None) -> list[dict[str, Any]]:
        """Every event of a crate (or one version) and of its index jobs, in log order."""
        validate_name(crate)
        key = parse_version(version).key if version is not None else None
        found = self.app.find_crate(crate)
        if found is None:
            msg = f"no crate named {crate!r}"
            raise NotFound(msg, crate=crate)
        if key is not None and key not in found.versions:
            msg = f"{found.name} has no version {version}"
            raise NotFound(msg, crate=found.name, version=version)
        self.views.catch_up()
        jobs = jobs_of_crate(self.db, collision_key(crate))
        job_ids = [UUID(j) for j, versions in jobs if key is None or _mentions(versions, key)]
        records: list[dict[str, Any]] = []
        for n in self.log.notifications_of([Crate.create_id(crate), *job_ids]):
            event = self.app.mapper.to_domain_event(n)
            if key is not None and getattr(event, "key", key) != key:
                continue
            if isinstance(event, Crate.Registered) and key is not None:
                continue
            records.append(describe(n.id, event))
        return records

    def timeline(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Every event between two times, in log order."""
        start = self._first_position_after(since) if since else 0
        records: list[dict[str, Any]] = []
        while True:
            batch = self.app.recorder.select_notifications(start=start, limit=1000, inclusive_of_start=False)
            if not batch:
                return records
            for n in batch:
                event: Any = self.app.mapper.to_domain_event(n)
                if until is not None and event.timestamp > until:
                    return records
                if since is None or event.timestamp >= since:
                    records.append(describe(n.id, event))
            start = batch[-1].id

    def _first_position_after(self, moment: datetime) -> int:
        """The last position before ``moment`` (bisecting on the log's near-monotonic times)."""
        low, high = 0, int(self.app.recorder.max_notification_id() or 0)
        while low < high:
            mid = (low + high + 1) // 2
            found = self.app.recorder.select_notifications(start=mid, limit=1)
            if not found:
                high = mid - 1
                continue
            if self._time_of(found[0]) < moment:
                low = min(found[0].id, high)
            else:
                high = mid - 1
        return low

    def _time_of(self, notification: Any) -> datetime:
        return self.app.mapper.to_domain_event(notification).timestamp  # type: ignore[attr-defined,no-any-return]

    def audit(self, *, grace: float = DEFAULT_GRACE_S, at: AsOf | None = None) -> AuditReport:
        """Every out-of-sync version now, or as the ledger knew it at a past moment."""
        if at is None or (at.position is None and at.time is None):
            position = self.views.catch_up()
            report = audit(self.db, now=time.time(), grace=grace, position=position)
            if self.crate_files is not None:
                report.discrepancies.extend(missing_files(self.db, self.crate_files.has))
            return report
        return self._audit_as_of(at, grace)

    def _audit_as_of(self, at: AsOf, grace: float) -> AuditReport:
        head = self.views.head()
        if at.position is not None and not 0 <= at.position <= head:
            msg = f"log position {at.position} is not in the log (positions 0 to {head})"
            raise Invalid(msg, position=at.position)
        past = self._scratch()
        try:
            runner = ViewRunner(self.app, past, self.log, batch_size=5000, scope=self.views.scope)
            runner.create_tables()
            position = runner.catch_up(until=at.position, until_time=at.time)
            if at.time is not None:
                now = at.time.timestamp()
            else:
                last = self.app.recorder.select_notifications(start=position, limit=1)
                if not last:
                    msg = f"log position {at.position} is not in the log"
                    raise Invalid(msg, position=at.position)
                now = self._time_of(last[0]).timestamp()
            return audit(past, now=now, grace=grace, position=position)
        finally:
            past.close()

    def rebuild(self) -> int:
        """Drop every view and rebuild it from the events; returns the position reached."""
        return self.views.rebuild()

    def verify(self) -> ChainReport:
        """Walk the hash chain over every stored event."""
        return self.log.walk_chain()

    def wakeup(self) -> Wakeup:
        """A new wake-up for a following worker (plain sleeping when the store offers none)."""
        return self._wakeups() if self._wakeups is not None else Sleep()

    def lease(self, holder: str, ttl: float) -> Lease:
        """The index-writer lease, for ``holder``, taken ``ttl`` seconds at a time."""
        return self._leases(holder, ttl)


def _mentions(versions_json: str, key: str) -> bool:
    import json

    return any(parse_version(v).key == key for v in json.loads(versions_json))
