"""The queue view (``view_jobs``): a row per sync job enqueued, updated by its attempts,
failures, confirmations, holds and outcome."""

from __future__ import annotations

import json
import operator
from typing import TYPE_CHECKING, Any

from ledger.domain.names import collision_key
from projections.views.common import _LINE_JSON, ENTRIES_TEXT, _epoch, _insert, _uuid_text
from projections.views.index import _replace_file

if TYPE_CHECKING:
    from ledger.ports import Cursor
    from projections.views.state import BatchRows

# The columns each batch inserts, in the order of its rows.
_JOB_COLUMNS = (
    "job",
    "crate_key",
    "crate",
    "versions",
    "cause",
    "actor",
    "state",
    "attempts",
    "failures",
    "enqueued_at",
    "enqueued_pos",
    "last_error",
    "last_reported",
    "next_retry",
    "commit_id",
    "updated_at",
    "updated_pos",
)
_JOB_ROW = operator.itemgetter(*_JOB_COLUMNS)
_JOB_UPDATABLE = ("state", *_JOB_COLUMNS[_JOB_COLUMNS.index("last_error") :])
"""The columns of a job a later event changes (``attempts`` and ``failures`` are added to)."""


def _enqueued(batch: BatchRows, pos: int, job_id: str, e: dict[str, Any], _: Cursor) -> None:
    at = _epoch(e["timestamp"])
    job = _uuid_text(job_id)
    batch.new_jobs[job] = {
        "job": job,
        "crate_key": collision_key(e["crate"]),
        "crate": e["crate"],
        "versions": json.dumps(e["versions"]),
        "cause": e["cause"],
        "actor": e["actor"],
        "state": batch.scope.new_job_state,
        "attempts": 0,
        "failures": 0,
        "enqueued_at": at,
        "enqueued_pos": pos,
        "last_error": None,
        "last_reported": None,
        "next_retry": None,
        "commit_id": None,
        "updated_at": at,
        "updated_pos": pos,
    }


def _scoped(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    """A job for several targets: open in the views of each (the first's hold it already)."""
    if not batch.scope.primary and batch.scope.name in e["targets"]:
        _job_change(batch, pos, job, e, state="open")


def _job_change(
    batch: BatchRows,
    pos: int,
    job_id: str,
    e: dict[str, Any],
    attempts: int = 0,
    failures: int = 0,
    **change: Any,
) -> None:
    job = _uuid_text(job_id)
    change.update(updated_at=_epoch(e["timestamp"]), updated_pos=pos)
    target = batch.new_jobs.get(job)
    if target is None:
        target = batch.job_updates.setdefault(job, {"attempts": 0, "failures": 0})
    target.update(change)
    target["attempts"] += attempts
    target["failures"] += failures


def _attempted(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    _job_change(batch, pos, job, e, attempts=1, last_reported=e["reported"], commit_id=e["commit"])


def _failed(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    error = e["reason"] if not e["detail"] else f"{e['reason']}: {e['detail']}"
    retry = e["next_retry"]
    _job_change(
        batch, pos, job, e, failures=1, last_error=error, next_retry=None if retry is None else float(retry)
    )


def _confirmed(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    text = e.get(ENTRIES_TEXT)
    _replace_file(
        batch,
        collision_key(e["crate"]),
        crate=e["crate"],
        path=e["path"],
        commit=e["commit"],
        source="push",
        at=_epoch(e["timestamp"]),
        pos=pos,
        text=_LINE_JSON.encode(e["entries"]) if text is None else text,
    )
    # Done for this target: the job completes once every target it is scoped to confirmed it.
    _job_change(
        batch, pos, job, e, state="completed", last_error=None, next_retry=None, commit_id=e["commit"]
    )


def _held(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    _replace_file(
        batch,
        collision_key(e["crate"]),
        crate=e["crate"],
        path=e["path"],
        commit=e["remote_head"],
        source="held",
        at=_epoch(e["timestamp"]),
        pos=pos,
        text=_LINE_JSON.encode(e["entries"]),
    )
    retry = e["next_retry"]
    _job_change(
        batch,
        pos,
        job,
        e,
        last_error=f"foreign_lines: {e['reason']}",
        next_retry=None if retry is None else float(retry),
    )


def _completed(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    _job_change(batch, pos, job, e, state="completed")


def _abandoned(batch: BatchRows, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
    _job_change(batch, pos, job, e, state="abandoned", last_error=f"abandoned: {e['reason']}")


def _flush_jobs(batch: BatchRows, cursor: Cursor) -> None:
    """Insert the batch's new jobs and update the jobs it changed."""
    _insert(cursor, "view_jobs", _JOB_COLUMNS, list(map(_JOB_ROW, batch.new_jobs.values())))
    # One statement per set of changed columns, each with all its jobs.
    updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for job, change in batch.job_updates.items():
        columns = tuple(c for c in _JOB_UPDATABLE if c in change)
        params = [change[c] for c in columns]
        updates.setdefault(columns, []).append((change["attempts"], change["failures"], *params, job))
    for columns, rows in updates.items():
        sets = ", ".join(f"{c} = ?" for c in columns)
        cursor.executemany(
            f"UPDATE view_jobs SET attempts = attempts + ?, failures = failures + ?, {sets} WHERE job = ?",
            rows,
        )
