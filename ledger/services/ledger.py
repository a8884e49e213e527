"""The ledger as its users see it: one object for the publisher, the worker and the operator.

:class:`Ledger` is the core (:class:`~ledger.services.core.LedgerCore`: record changes, the views,
history, audits) plus the use cases that reach the index: sync, import, scan and repair. The
use cases take the core, so nothing here is imported back. Built by
:func:`ledger.bootstrap.open_ledger`; nothing here connects to anything.
"""

from __future__ import annotations

from dataclasses import replace

from ledger.services.core import AsOf, LedgerCore
from ledger.services.foreign import unadopted_paths
from ledger.services.importing import ImportResult, import_index
from ledger.services.repair import RepairResult, repair
from ledger.services.scan import ScanResult, scan_index
from ledger.services.sync import PassResult, SyncWorker, WorkerOptions
from projections.consistency import AuditReport
from projections.queries import known_crate_keys
from projections.schema import DEFAULT_GRACE_S

__all__ = ["AsOf", "Ledger"]


class Ledger(LedgerCore):
    """The publication ledger: record changes, follow them to the index, explain every state."""

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
        return unadopted_paths(index.changed_paths(None, head), known_crate_keys(self.db))

    def sync(self, options: WorkerOptions | None = None, *, wait_for_lock: float = 0.0) -> PassResult:
        """One pass of the index sync worker over every open job (backoff ignored)."""
        worker = SyncWorker(self, self.index(), options=options)
        return worker.run_once(ignore_backoff=True, wait_for_lock=wait_for_lock)

    def import_index(self, source: str) -> ImportResult:
        """Adopt an existing cargo index: one publish per line found, confirmed against it."""
        return import_index(self, source)

    def scan_index(self) -> ScanResult:
        """Read the real index, record what it holds (``IndexScanned``) and what differs."""
        return scan_index(self)

    def audit_scan(self, *, grace: float = DEFAULT_GRACE_S) -> AuditReport:
        """Scan the real index, then audit now; the report carries the scan's summary."""
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
        return repair(
            self, dry_run=dry_run, remove_phantoms=remove_phantoms, restore_lost=restore_lost, actor=actor
        )
