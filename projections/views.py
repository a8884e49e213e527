"""Events to view rows, a batch at a time.

:class:`ViewBatch` folds a batch of events into the row changes they imply (so a version
published and yanked in the same batch becomes one insert), then :meth:`ViewBatch.flush`
writes them with a few ``executemany`` calls inside the caller's transaction, which also moves
the tracking position. Every event is thereby applied exactly once, and the views can be
dropped and rebuilt from position zero.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ledger.domain import Crate, IndexRemote, SyncJob
from ledger.index_format import fields_digest
from ledger.names import collision_key
from ledger.ports import Cursor
from projections.schema import unsynced_refresh

_VERSION_COLUMNS = (
    "crate_key",
    "vers_key",
    "crate",
    "version",
    "state",
    "cksum",
    "line",
    "digest",
    "seq",
    "published_at",
    "updated_at",
    "updated_pos",
    "job",
    "actor",
)
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
_JOB_UPDATABLE = (
    "state",
    "last_error",
    "last_reported",
    "next_retry",
    "commit_id",
    "updated_at",
    "updated_pos",
)


T = TypeVar("T")

_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""``json.dumps(line, separators=(",", ":"), ensure_ascii=False)``, without a new encoder per call."""

_KEYS_PER_STATEMENT = 500
"""Crate keys bound in one statement: well below the bound-parameter limit of every SQLite build."""


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@dataclass
class _IndexFile:
    crate: str
    path: str
    commit: str | None
    source: str
    at: float
    pos: int
    entries: list[list[Any]]  # [version, key, yanked, digest]


@dataclass
class ViewBatch:
    """The row changes of one batch of events, merged."""

    new_versions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version_updates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    new_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    index_files: dict[str, _IndexFile] = field(default_factory=dict)
    scans: list[tuple[Any, ...]] = field(default_factory=list)
    last_position: int = 0
    track_unsynced: bool = True
    """Keep ``view_unsynced`` (False while it does not exist)."""

    def apply(self, position: int, event: Any, cursor: Cursor) -> None:
        """Fold one event into the batch (reads the cursor only for scans' race checks)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, position, event, cursor)
        self.last_position = position

    # -- registry side ----------------------------------------------------------------------

    def _published(self, pos: int, e: Crate.VersionPublished, _: Cursor) -> None:
        at = e.timestamp.timestamp()
        line = e.line
        text = _LINE_JSON.encode(line)
        yanked = line.get("yanked")
        # A line already saying "yanked":false renders as itself for its digest.
        digest = hashlib.sha256(text.encode()).hexdigest() if yanked is False else fields_digest(line)
        crate_key = collision_key(e.crate)
        self.new_versions[(crate_key, e.key)] = {
            "crate_key": crate_key,
            "vers_key": e.key,
            "crate": e.crate,
            "version": e.version,
            "state": "yanked" if yanked else "published",
            "cksum": e.cksum,
            "line": text,
            "digest": digest,
            "seq": pos,
            "published_at": at,
            "updated_at": at,
            "updated_pos": pos,
            "job": str(e.job),
            "actor": e.actor,
        }

    def _version_change(self, pos: int, e: Any, state: str) -> None:
        key = (collision_key(e.crate), e.key)
        change = {
            "state": state,
            "updated_at": e.timestamp.timestamp(),
            "updated_pos": pos,
            "job": str(e.job),
        }
        target = self.new_versions.get(key)
        if target is not None:
            target.update(change)
        else:
            self.version_updates.setdefault(key, {}).update(change)

    # -- jobs -------------------------------------------------------------------------------

    def _enqueued(self, pos: int, e: SyncJob.IndexSyncEnqueued, _: Cursor) -> None:
        at = e.timestamp.timestamp()
        self.new_jobs[str(e.originator_id)] = {
            "job": str(e.originator_id),
            "crate_key": collision_key(e.crate),
            "crate": e.crate,
            "versions": json.dumps(e.versions),
            "cause": e.cause,
            "actor": e.actor,
            "state": "open",
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

    def _job_change(self, pos: int, e: Any, attempts: int = 0, failures: int = 0, **change: Any) -> None:
        job = str(e.originator_id)
        change.update(updated_at=e.timestamp.timestamp(), updated_pos=pos)
        target = self.new_jobs.get(job)
        if target is None:
            target = self.job_updates.setdefault(job, {"attempts": 0, "failures": 0})
        target.update(change)
        target["attempts"] += attempts
        target["failures"] += failures

    def _attempted(self, pos: int, e: SyncJob.IndexPushAttempted, _: Cursor) -> None:
        self._job_change(pos, e, attempts=1, last_reported=e.reported, commit_id=e.commit)

    def _failed(self, pos: int, e: SyncJob.IndexPushFailed, _: Cursor) -> None:
        error = e.reason if not e.detail else f"{e.reason}: {e.detail}"
        self._job_change(pos, e, failures=1, last_error=error, next_retry=e.next_retry)

    def _confirmed(self, pos: int, e: SyncJob.IndexPushConfirmed, _: Cursor) -> None:
        self.index_files[collision_key(e.crate)] = _IndexFile(
            crate=e.crate,
            path=e.path,
            commit=e.commit,
            source="push",
            at=e.timestamp.timestamp(),
            pos=pos,
            entries=e.entries,
        )
        self._job_change(pos, e, last_error=None, next_retry=None, commit_id=e.commit)

    def _completed(self, pos: int, e: SyncJob.IndexSyncCompleted, _: Cursor) -> None:
        self._job_change(pos, e, state="completed", commit_id=e.commit)

    def _abandoned(self, pos: int, e: SyncJob.IndexSyncAbandoned, _: Cursor) -> None:
        self._job_change(pos, e, state="abandoned", last_error=f"abandoned: {e.reason}")

    # -- the real index ---------------------------------------------------------------------

    def _scanned(self, pos: int, e: IndexRemote.IndexScanned, cursor: Cursor) -> None:
        at = e.timestamp.timestamp()
        self.scans.append(
            (
                pos,
                e.originator_id.hex,
                e.branch,
                e.head,
                e.base_position,
                at,
                e.files,
                e.changed_files,
                len(e.discrepancies),
            )
        )
        for crate_key, found in e.observed.items():
            if self._file_position(crate_key, cursor) > e.base_position:
                continue  # a push confirmed after the scan's comparison knows better
            crate, path = found[0], found[1]
            self.index_files[crate_key] = _IndexFile(
                crate=crate,
                path=path,
                commit=e.head,
                source="scan",
                at=at,
                pos=pos,
                entries=found[2],
            )

    def _repaired(self, pos: int, e: IndexRemote.RepairApplied, _: Cursor) -> None:
        if not e.confirmed:
            return
        at = e.timestamp.timestamp()
        for change in e.changes:
            self.index_files[collision_key(change["crate"])] = _IndexFile(
                crate=change["crate"],
                path=change["path"],
                commit=e.commit,
                source="repair",
                at=at,
                pos=pos,
                entries=change["entries"],
            )

    def _file_position(self, crate_key: str, cursor: Cursor) -> int:
        known = self.index_files.get(crate_key)
        if known is not None:
            return known.pos
        cursor.execute("SELECT updated_pos FROM view_index_files WHERE crate_key = ?", (crate_key,))
        row = cursor.fetchone()
        return int(row[0]) if row else 0

    # -- writing ----------------------------------------------------------------------------

    def flush(self, cursor: Cursor) -> None:
        """Write the merged changes with the caller's cursor (inside its transaction)."""
        if self.new_versions:
            cursor.executemany(
                _insert("view_versions", _VERSION_COLUMNS),
                [tuple(r[c] for c in _VERSION_COLUMNS) for r in self.new_versions.values()],
            )
        if self.version_updates:
            cursor.executemany(
                "UPDATE view_versions SET state = ?, updated_at = ?, updated_pos = ?, job = ? "
                "WHERE crate_key = ? AND vers_key = ?",
                [
                    (c["state"], c["updated_at"], c["updated_pos"], c["job"], k[0], k[1])
                    for k, c in self.version_updates.items()
                ],
            )
        if self.new_jobs:
            cursor.executemany(
                _insert("view_jobs", _JOB_COLUMNS),
                [tuple(r[c] for c in _JOB_COLUMNS) for r in self.new_jobs.values()],
            )
        # One statement per set of changed columns, each with all its jobs.
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for job, change in self.job_updates.items():
            columns = tuple(c for c in _JOB_UPDATABLE if c in change)
            params = [change[c] for c in columns]
            updates.setdefault(columns, []).append((change["attempts"], change["failures"], *params, job))
        for columns, rows in updates.items():
            sets = ", ".join(f"{c} = ?" for c in columns)
            cursor.executemany(
                "UPDATE view_jobs SET attempts = attempts + ?, failures = failures + ?, "
                f"{sets} WHERE job = ?",
                rows,
            )
        self._flush_index(cursor)
        if self.track_unsynced:
            self._flush_unsynced(cursor)
        if self.scans:
            cursor.executemany(
                "INSERT INTO view_scans (position, remote, branch, head, base_position, at, files, "
                "changed_files, discrepancies) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self.scans,
            )

    def _flush_unsynced(self, cursor: Cursor) -> None:
        """Keep ``view_unsynced`` equal to the crates with a version out of sync.

        A crate whose index file the batch replaced, or that was already out of sync, is
        compared again version by version. A crate that was in sync and whose registry rows
        alone changed can only be out of sync in the versions changed: only those are compared.
        """
        changed: dict[str, set[str]] = {}
        for crate_key, vers_key in itertools.chain(self.new_versions, self.version_updates):
            changed.setdefault(crate_key, set()).add(vers_key)
        whole = set(self.index_files)
        registry_only = sorted(changed.keys() - whole)
        for chunk in _chunks(registry_only, _KEYS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            cursor.execute(f"SELECT crate_key FROM view_unsynced WHERE crate_key IN ({marks})", chunk)
            whole.update(row[0] for row in cursor.fetchall())
        for chunk in _chunks(sorted(whole), _KEYS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            cursor.execute(f"DELETE FROM view_unsynced WHERE crate_key IN ({marks})", chunk)
            cursor.execute(unsynced_refresh(len(chunk)), chunk)
        pairs = [(c, v) for c in registry_only if c not in whole for v in sorted(changed[c])]
        for part in _chunks(pairs, _KEYS_PER_STATEMENT // 2):
            cursor.execute(unsynced_refresh(len(part), versions=True), [k for pair in part for k in pair])

    def _flush_index(self, cursor: Cursor) -> None:
        if not self.index_files:
            return
        keys = [(k,) for k in self.index_files]
        cursor.executemany("DELETE FROM view_index WHERE crate_key = ?", keys)
        cursor.executemany("DELETE FROM view_index_files WHERE crate_key = ?", keys)
        cursor.executemany(
            "INSERT INTO view_index_files (crate_key, crate, path, commit_id, source, updated_at, "
            "updated_pos) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(k, f.crate, f.path, f.commit, f.source, f.at, f.pos) for k, f in self.index_files.items()],
        )
        rows = [
            (k, key, f.crate, version, int(bool(yanked)), digest, f.commit, f.source, f.at, f.pos)
            for k, f in self.index_files.items()
            for version, key, yanked, digest in f.entries
        ]
        cursor.executemany(
            "INSERT INTO view_index (crate_key, vers_key, crate, version, yanked, digest, commit_id, "
            "source, updated_at, updated_pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _state_handler(state: str) -> Callable[[ViewBatch, int, Any, Cursor], None]:
    def handle(batch: ViewBatch, pos: int, e: Any, _: Cursor) -> None:
        batch._version_change(pos, e, state)

    return handle


_HANDLERS: dict[type, Callable[[ViewBatch, int, Any, Cursor], None]] = {
    Crate.VersionPublished: ViewBatch._published,
    Crate.VersionYanked: _state_handler("yanked"),
    Crate.VersionUnyanked: _state_handler("published"),
    Crate.VersionDeleted: _state_handler("deleted"),
    SyncJob.IndexSyncEnqueued: ViewBatch._enqueued,
    SyncJob.IndexPushAttempted: ViewBatch._attempted,
    SyncJob.IndexPushFailed: ViewBatch._failed,
    SyncJob.IndexPushConfirmed: ViewBatch._confirmed,
    SyncJob.IndexSyncCompleted: ViewBatch._completed,
    SyncJob.IndexSyncAbandoned: ViewBatch._abandoned,
    IndexRemote.IndexScanned: ViewBatch._scanned,
    IndexRemote.RepairApplied: ViewBatch._repaired,
}
