"""The audit: every out-of-sync (crate, version) with its class, from the consistency query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.domain.aggregates import IMPORT_ACTOR
from ledger.ports import Database
from projections.schema import consistency_query, has_table

CLASSES = (
    "pending",
    "stuck",
    "lost",
    "foreign",
    "phantom",
    "yank_mismatch",
    "content_mismatch",
    "missing_file",
)
ALARMS = frozenset(CLASSES) - {"pending"}


@dataclass(frozen=True)
class Discrepancy:
    crate: str
    version: str
    cls: str
    since: float
    job: str | None
    difference: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "crate": self.crate,
            "version": self.version,
            "class": self.cls,
            "since": iso(self.since),
            "job": self.job,
            "difference": self.difference,
        }


@dataclass(frozen=True)
class AuditReport:
    as_of: float
    position: int
    grace: float
    discrepancies: list[Discrepancy] = field(default_factory=list)
    scan: dict[str, Any] | None = None

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CLASSES, 0)
        for d in self.discrepancies:
            counts[d.cls] += 1
        return counts

    @property
    def consistent(self) -> bool:
        return not any(d.cls in ALARMS for d in self.discrepancies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "as_of": iso(self.as_of),
            "position": self.position,
            "grace_seconds": self.grace,
            "counts": self.counts,
            "discrepancies": [d.to_dict() for d in self.discrepancies],
            "scan": self.scan,
        }


def iso(epoch: float) -> str:
    """An ISO 8601 UTC time with a Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def audit(db: Database, *, now: float, grace: float, position: int) -> AuditReport:
    """Classify every out-of-sync version as of ``now`` (views at ``position``)."""
    every_crate = not has_table(db, "view_unsynced")  # a rebuild is under way
    rows = db.query(consistency_query(db.dialect, every_crate=every_crate) + " ORDER BY 1, 2", (now, grace))
    found = [
        Discrepancy(crate, version, cls, float(since), job, difference)
        for crate, version, cls, since, job, difference, _, _ in rows
    ]
    return AuditReport(as_of=now, position=position, grace=grace, discrepancies=found)


def missing_files(db: Database, has: Callable[[str], bool]) -> list[Discrepancy]:
    """Every version the registry accepted (not adopted from an index, not deleted) whose
    ``.crate`` file ``has`` does not find: cargo would fail to download it."""
    rows = db.stream(
        "SELECT crate, version, cksum, published_at, job FROM view_versions "
        "WHERE state <> 'deleted' AND actor <> ? ORDER BY crate_key, seq",
        (IMPORT_ACTOR,),
    )
    return [
        Discrepancy(crate, version, "missing_file", float(at), job, f"no .crate file with SHA-256 {cksum}")
        for crate, version, cksum, at, job in rows
        if not has(cksum)
    ]
