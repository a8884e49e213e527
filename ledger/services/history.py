"""Events as records an operator reads: one flat dict per event, the same for every command."""

from __future__ import annotations

from typing import Any

from ledger.domain.aggregates import Crate, IndexRemote, SyncJob

_FIELDS = (
    "target",
    "targets",
    "name",
    "url",
    "crate",
    "version",
    "versions",
    "foreign",
    "actor",
    "user",
    "action",
    "job",
    "cause",
    "remote",
    "branch",
    "commit",
    "parent",
    "reported",
    "message",
    "reason",
    "detail",
    "remote_head",
    "method",
    "path",
    "next_retry",
    "worker",
    "batch",
    "head",
    "base_position",
    "files",
    "changed_files",
    "confirmed",
)


def event_name(event: Any) -> str:
    """The event's stable name: its topic without the ``ledger:`` prefix."""
    return str(type(event).TOPIC).removeprefix("ledger:")


def describe(position: int, event: Any) -> dict[str, Any]:
    """One event as a flat record: position, time, event, aggregate and the facts it carries."""
    record: dict[str, Any] = {
        "position": position,
        "time": event.timestamp.isoformat().replace("+00:00", "Z"),
        "event": event_name(event),
    }
    for name in _FIELDS:
        value = getattr(event, name, None)
        if value is not None:
            record[name] = str(value) if name == "job" else value
    if isinstance(event, SyncJob.Event | SyncJob.IndexSyncEnqueued):
        record["job"] = str(event.originator_id)
    if isinstance(event, IndexRemote.IndexScanned):
        record["discrepancies"] = len(event.discrepancies)
    if isinstance(event, IndexRemote.RepairApplied):
        record["changes"] = len(event.changes)
    if isinstance(event, Crate.VersionPublished):
        record["cksum"] = event.cksum
    return record


def summary(record: dict[str, Any]) -> str:
    """One human line for a record."""
    subject = " ".join(str(record[k]) for k in ("name", "url", "crate", "version") if k in record)
    if "target" in record:
        subject = f"[{record['target']}] {subject}".rstrip()
    if "targets" in record:
        subject = f"{subject} targets={','.join(record['targets'])}".strip()
    extras = []
    keys = (
        "actor",
        "job",
        "reported",
        "commit",
        "foreign",
        "reason",
        "detail",
        "message",
        "remote_head",
        "head",
        "discrepancies",
        "changes",
        "confirmed",
    )
    for key in keys:
        if key in record and record[key] not in ("", None):
            value = record[key]
            if key in ("commit", "remote_head", "head") and isinstance(value, str):
                value = value[:12]
            extras.append(f"{key}={value}")
    head = f"{record['position']:>6}  {record['time']}  {record['event']:<20}"
    return f"{head} {subject}  {' '.join(extras)}".rstrip()
