"""The ledger as its users see it: one object for the publisher, the worker and the operator.

It joins the application (events), the views (queries) and, when a remote is configured, the
index. Built by :func:`ledger.bootstrap.open_ledger`; nothing here connects to anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger.adapters.stores.chain import ChainReport
from ledger.adapters.stores.events import notifications_of, walk_chain
from ledger.domain.aggregates import Crate, SyncJob
from ledger.domain.errors import Invalid, NotFound
from ledger.domain.index_format import IndexLine
from ledger.domain.names import collision_key, validate_name
from ledger.domain.versions import parse_version
from ledger.ports import Database
from ledger.services.foreign import unadopted_paths
from ledger.services.history import describe
from ledger.services.publishing import BulkResult, PublicationLedger, Receipt
from ledger.settings import Settings
from projections.consistency import AuditReport, audit
from projections.runner import ViewRunner
from projections.schema import DEFAULT_GRACE_S

if TYPE_CHECKING:
    from ledger.adapters.git.index import GitIndex
    from ledger.services.importing import ImportResult
    from ledger.services.repair import RepairResult
    from ledger.services.scan import ScanResult
    from ledger.services.sync import PassResult, WorkerOptions

JOBS_PER_READ = 500
"""Jobs read per query: well below the bound-parameter limit of every SQLite build."""


@dataclass(frozen=True)
class AsOf:
    """A past moment to answer for: a log position, or a time."""

    position: int | None = None
    time: datetime | None = None


class Ledger:
    """The publication ledger: record changes, follow them to the index, explain every state."""

    def __init__(
        self,
        settings: Settings,
        app: PublicationLedger,
        db: Database,
        *,
        index_factory: Callable[[], GitIndex] | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.db = db
        self.views = ViewRunner(app, db)
        self._index_factory = index_factory
        self._index: GitIndex | None = None

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        self.app.close()
        self.db.close()

    def index(self) -> GitIndex:
        """The local clone of the index remote (opened on first use)."""
        if self._index is None:
            if self._index_factory is None:
                msg = "this ledger has no index remote configured"
                raise Invalid(msg, field="remote")
            self._index = self._index_factory()
        return self._index

    # -- the index sync worker --------------------------------------------------------------

    def unadopted(self) -> list[str]:
        """The crate files at the remote's head whose crate the ledger has no record of at all.

        Until they are adopted (``import_index``, or the worker's ``adopt_foreign``) the worker
        does not write to those files.
        """
        index = self.index()
        head = index.fetch()
        if head is None:
            return []
        self.views.catch_up()
        known = {row[0] for row in self.db.query("SELECT DISTINCT crate_key FROM view_versions")}
        return unadopted_paths(index.changed_paths(None, head), known)

    def sync(self, options: WorkerOptions | None = None, *, wait_for_lock: float = 0.0) -> PassResult:
        """One pass of the index sync worker over every open job (backoff ignored)."""
        from ledger.services.sync import SyncWorker

        worker = SyncWorker(self, self.index(), options=options)
        return worker.run_once(ignore_backoff=True, wait_for_lock=wait_for_lock)

    def jobs(self, job_ids: Sequence[UUID]) -> dict[UUID, SyncJob]:
        """These sync jobs as they stand, read a few hundred at a time."""
        found: dict[UUID, SyncJob] = {}
        for start in range(0, len(job_ids), JOBS_PER_READ):
            found.update(
                self.app.jobs_from(notifications_of(self.db, job_ids[start : start + JOBS_PER_READ]))
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

    def import_index(self, source: str) -> ImportResult:
        """Adopt an existing cargo index: one publish per line found, confirmed against it."""
        from ledger.services.importing import import_index

        return import_index(self, source)

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
        jobs = self.db.query(
            "SELECT job, versions FROM view_jobs WHERE crate_key = ? ORDER BY enqueued_pos",
            (collision_key(crate),),
        )
        job_ids = [UUID(j) for j, versions in jobs if key is None or _mentions(versions, key)]
        records: list[dict[str, Any]] = []
        for n in notifications_of(self.db, [Crate.create_id(crate), *job_ids]):
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
            return audit(self.db, now=time.time(), grace=grace, position=position)
        return self._audit_as_of(at, grace)

    def _audit_as_of(self, at: AsOf, grace: float) -> AuditReport:
        from ledger.adapters.stores.sqlite import SQLiteDatabase

        head = self.views.head()
        if at.position is not None and not 0 <= at.position <= head:
            msg = f"log position {at.position} is not in the log (positions 0 to {head})"
            raise Invalid(msg, position=at.position)
        past = SQLiteDatabase(None)
        try:
            runner = ViewRunner(self.app, past, batch_size=5000)
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

    def scan_index(self) -> ScanResult:
        """Read the real index, record what it holds (``IndexScanned``) and what differs."""
        from ledger.services.scan import scan_index

        return scan_index(self)

    def audit_scan(self, *, grace: float = DEFAULT_GRACE_S) -> AuditReport:
        """Scan the real index, then audit now; the report carries the scan's summary."""
        from dataclasses import replace

        scanned = self.scan_index()
        return replace(self.audit(grace=grace), scan=scanned.to_dict())

    def repair(
        self,
        *,
        dry_run: bool = False,
        remove_phantoms: bool = False,
        restore_lost: bool = False,
        actor: str | None = None,
    ) -> RepairResult:
        """Make the real index equal to the database view, in one confirmed commit."""
        from ledger.services.repair import repair

        return repair(
            self, dry_run=dry_run, remove_phantoms=remove_phantoms, restore_lost=restore_lost, actor=actor
        )

    def rebuild(self) -> int:
        """Drop every view and rebuild it from the events; returns the position reached."""
        return self.views.rebuild()

    def verify(self) -> ChainReport:
        """Walk the hash chain over every stored event."""
        return walk_chain(self.db)


def _mentions(versions_json: str, key: str) -> bool:
    import json

    return any(parse_version(v).key == key for v in json.loads(versions_json))
