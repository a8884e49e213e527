"""Events to view rows, a batch at a time.

:class:`ViewBatch` folds a batch of events into the row changes they imply (so a version
published and yanked in the same batch becomes one insert), then :meth:`ViewBatch.flush`
writes them with a few statements inside the caller's transaction, which also moves
the tracking position. Every event is thereby applied exactly once, and the views can be
dropped and rebuilt from position zero.

Events are folded from their stored state as JSON (see :func:`decode`), not from domain event
objects: the views need a few fields of each, and building the objects cost most of a rebuild.
A handler reads the fields it needs; the library's encoded values (times, UUIDs) are read with
:func:`_epoch` and :func:`_uuid_text`, to the same values the domain events hold.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from ledger.adapters.stores.events import LogRow
from ledger.domain.aggregates import IMPORT_ACTOR, Crate, IndexRemote, SyncJob
from ledger.domain.index_format import fields_digest
from ledger.domain.names import collision_key
from ledger.ports import CopyCursor, Cursor
from projections.schema import unsynced_refresh

# The columns each batch inserts, in the order of its rows.
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
_INDEX_FILE_COLUMNS = (
    "crate_key",
    "crate",
    "path",
    "commit_id",
    "source",
    "updated_at",
    "updated_pos",
    "entries_length",
    "entries_sha256",
)
_INDEX_COLUMNS = (
    "crate_key",
    "vers_key",
    "crate",
    "version",
    "yanked",
    "digest",
    "commit_id",
    "source",
    "updated_at",
    "updated_pos",
)
_UPSERT_INDEX_ROW = (
    f"INSERT INTO view_index ({', '.join(_INDEX_COLUMNS)}) VALUES ({', '.join('?' * len(_INDEX_COLUMNS))}) "
    "ON CONFLICT (crate_key, vers_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _INDEX_COLUMNS[2:])
)
"""Insert an index row, or overwrite the row of its version (a row a file appended)."""
_WHERE_VALUE_DIFFERS = " WHERE " + " OR ".join(
    f"view_index.{c} <> excluded.{c}" for c in ("crate", "version", "yanked", "digest")
)
"""... only where the stored row holds another value (else it keeps the event since which it holds it)."""
_VERSION_ROW = operator.itemgetter(*_VERSION_COLUMNS)
_JOB_ROW = operator.itemgetter(*_JOB_COLUMNS)
_JOB_UPDATABLE = ("state", *_JOB_COLUMNS[_JOB_COLUMNS.index("last_error") :])
"""The columns of a job a later event changes (``attempts`` and ``failures`` are added to)."""


T = TypeVar("T")

_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""``json.dumps(line, separators=(",", ":"), ensure_ascii=False)``, without a new encoder per call."""

_JSON = json.JSONDecoder()

ADOPTED_FIRST = 1 << 48
"""Subtracted from the order (``seq``) of a version adopted from an index (actor ``import``): its
line was in the index before any version published through the ledger, and stays before them,
in the order adopted. Log positions stay far below it."""

_KEYS_PER_STATEMENT = 500
"""Crate keys bound in one statement: well below the bound-parameter limit of every SQLite build."""


Event = tuple[int, str, str, dict[str, Any]]
"""An event as the views fold it: log position, originator id (text), topic, state."""


def decode(mapper: Mapper[Any], row: LogRow, *, compact: bool = False) -> Event:
    """A stored event's state as JSON, the library's encoded values (times, UUIDs) left encoded.

    Plain JSON when the state was stored as plain JSON by the current version of its class;
    otherwise (encrypted, compressed, or an older class version to upcast) through the
    library's domain event, encoded again into the same shape. A topic that names no event
    class fails here, like a state that is not JSON. ``compact``: the mapper writes JSON as
    ``_LINE_JSON`` does (see :func:`compact_json`), so a line's stored text is kept.
    """
    position, originator_id, topic, raw = row
    handler = _handler(topic)
    if mapper.cipher is None and mapper.compressor is None:
        text = raw.decode()
        state = _loads_entries(text) if compact and handler is ViewBatch._confirmed else None
        if state is None:
            state = _loads(text, compact)
        if "class_version" not in state:
            return position, originator_id, topic, state
    stored = StoredEvent(originator_id=UUID(originator_id), originator_version=0, topic=topic, state=raw)
    event = vars(mapper.to_domain_event(stored)).copy()
    del event["originator_id"], event["originator_version"]
    return position, originator_id, topic, json.loads(mapper.transcoder.encode(event))


LINE_TEXT = " line as stored"
"""The key under which :func:`decode` keeps the stored text of a ``line`` value, when it is
what ``_LINE_JSON`` would make of it (not an event attribute: it has spaces)."""


def _loads(text: str, compact: bool) -> dict[str, Any]:
    """One JSON object; with ``compact`` (stored by an encoder like ``_LINE_JSON``) the text of
    its ``line`` object is kept too, instead of encoding the line again for the views.

    The line is read on its own and a 0 put in its place for the rest; the 0 is found as the
    top-level ``line`` or the text is read again whole.
    """
    at = text.find('"line":{') if compact else -1
    if at >= 0:
        line, end = _JSON.raw_decode(text, at + 7)
        state = _object(text[: at + 7] + "0" + text[end:])
        if type(state.get("line")) is int and state["line"] == 0:
            state["line"] = line
            state[LINE_TEXT] = text[at + 7 : end]
            return state
    return _object(text)


ENTRIES_TEXT = " entries as stored"
"""The key under which :func:`decode` keeps a confirmation's ``entries`` as their stored JSON
text, undecoded (``entries`` is then None): a confirmation carries the crate's whole file, and
the views decode only what it adds to the file before it (see :func:`_fold_files`)."""

_ENTRIES_LAST = ',"entries":['


def _loads_entries(text: str) -> dict[str, Any] | None:
    """A confirmation's state, its ``entries`` (the last attribute) kept as their stored text;
    None when the text does not end with them as its top-level ``entries``."""
    at = text.rfind(_ENTRIES_LAST)
    if at < 0 or not text.endswith("]}"):
        return None
    start = at + len(_ENTRIES_LAST) - 1
    try:
        state = _object(text[:start] + "0}")
    except ValueError:
        return None
    if type(state.get("entries")) is not int or state["entries"] != 0:
        return None
    state["entries"] = None
    state[ENTRIES_TEXT] = text[start:-1]
    return state


def _object(text: str) -> dict[str, Any]:
    state, end = _JSON.raw_decode(text)
    if end != len(text) or type(state) is not dict:
        raise ValueError(f"the stored state is not one JSON object: {text[:80]!r}")
    return state


def compact_json(mapper: Mapper[Any]) -> bool:
    """Whether the mapper's transcoder writes JSON exactly as ``_LINE_JSON`` does."""
    encoder = getattr(mapper.transcoder, "encoder", None)
    return (
        isinstance(encoder, json.JSONEncoder)
        and (encoder.item_separator, encoder.key_separator)
        == (_LINE_JSON.item_separator, _LINE_JSON.key_separator)
        and encoder.ensure_ascii == _LINE_JSON.ensure_ascii
        and encoder.sort_keys == _LINE_JSON.sort_keys
        and encoder.allow_nan == _LINE_JSON.allow_nan
    )


def _datetime(value: dict[str, str]) -> datetime:
    """A stored ``datetime``."""
    if value["_type_"] != "datetime_iso":
        raise ValueError(f"not a stored datetime: {value!r}")
    return datetime.fromisoformat(value["_data_"])


def _epoch(value: dict[str, str]) -> float:
    """A stored ``datetime`` as seconds since the epoch (``event.timestamp.timestamp()``)."""
    return _datetime(value).timestamp()


def event_time(state: dict[str, Any]) -> datetime:
    """When the event happened (``event.timestamp``)."""
    return _datetime(state["timestamp"])


def _uuid_text(value: str) -> str:
    """``str(UUID(value))``: the hex SQLite stores is cut into its groups without a UUID built."""
    if len(value) == 32:
        h = value.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(UUID(value))


def _stored_uuid(value: dict[str, str]) -> str:
    """A stored UUID value as ``str(uuid)``."""
    if value["_type_"] != "uuid_hex":
        raise ValueError(f"not a stored UUID: {value!r}")
    return _uuid_text(value["_data_"])


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(cursor: Cursor, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    """Insert rows (tuples in the order of ``columns``): SQLite row by row with ``executemany``,
    PostgreSQL with ``COPY`` (a rebuild of the baseline import took 89 s with it, 102 s with one
    ``INSERT ... SELECT FROM unnest(...)`` of an array a column per table)."""
    if not rows:
        return
    if isinstance(cursor, CopyCursor):
        cursor.copy_rows(table, columns, rows)
    else:
        names = ", ".join(columns)
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)


def _delete(cursor: Cursor, dialect: str, table: str, keys: list[str]) -> None:
    """Delete the rows of these crate keys."""
    if dialect == "postgresql":
        cursor.execute(f"DELETE FROM {table} WHERE crate_key = ANY(?)", [keys])
    else:
        cursor.executemany(f"DELETE FROM {table} WHERE crate_key = ?", [(k,) for k in keys])


@dataclass
class _IndexFile:
    crate: str
    path: str
    commit: str | None
    source: str
    at: float
    pos: int
    text: str
    """The entries as JSON (as ``_LINE_JSON`` writes them): ``[[version, key, yanked, digest], ...]``."""


_IndexRow = tuple[tuple[str, str, int, str], _IndexFile, bool]
"""One version of a file in the index view: its value (crate, version, yanked, digest), the file
event since which it holds it, and whether the value changed within the batch (else it may have
held since before the batch). A tuple: a batch of confirmations makes millions of them."""

_StoredFile = tuple[int | None, str | None]
"""What the index view keeps of a crate's file to recognise its successors: the length of its
entries' JSON text and the SHA-256 of that text without its closing bracket."""


def _opening_sha(text: str) -> str:
    """SHA-256 of a file's entries as JSON without the closing bracket."""
    return hashlib.sha256(text[:-1].encode()).hexdigest()


def _added_at(text: str, before: str | None, stored: _StoredFile | None) -> int | None:
    """Where the entries ``text`` adds to the file before it begin, when ``text`` is that file with
    entries appended (a publish appends its version) or that file again (the length of ``text``:
    jobs of one crate confirmed by the same push); None when it is not.

    The file before is the batch's previous one (``before``) or, for the batch's first, the
    stored one, known by its length and the digest of its opening.
    """
    if before is not None:
        length, opening = len(before), None
    elif stored is not None and stored[0] is not None:
        length, opening = stored[0], stored[1]
    else:
        return None
    if len(text) == length:  # the same file again, if its opening matches
        if not text.endswith("]"):
            return None
    elif len(text) < length or length < 3 or text[length - 1] != ",":
        return None
    if before is not None:
        return length if text.startswith(before[:-1]) else None
    return length if _opening_sha(text[:length]) == opening else None


def _entries(text: str, start: int = 0) -> list[list[Any]]:
    """The entries of a file's JSON text, or those from ``start`` where appended entries begin."""
    if start >= len(text):
        return []
    entries = json.loads(text if start == 0 else "[" + text[start:])
    if type(entries) is not list:
        raise ValueError(f"a file's entries are not a list: {text[:80]!r}")
    return entries


def _fold_files(files: list[_IndexFile], stored: _StoredFile | None) -> tuple[dict[str, _IndexRow], bool]:
    """The rows the batch's files of one crate leave, and whether they are the whole file.

    Each file's rows are compared with those the file before it left, and a row that holds the
    same value keeps the file since which it holds it. A file that is the one before it with
    entries appended (what a publish confirms) is read from where the new entries begin: its
    other rows are those of the file before. When the batch's first file appends to the stored
    one, the rows are not the whole file (False): only the appended ones, to be written where
    they differ from the stored rows; the others are left as stored.
    """
    rows: dict[str, _IndexRow] = {}
    whole = False
    before: str | None = None
    for new in files:
        start = _added_at(new.text, before, stored)  # None: read whole
        changes: dict[str, _IndexRow] = {}
        for version, key, yanked, digest in _entries(new.text, start or 0):
            value = (new.crate, version, int(bool(yanked)), digest)
            old = rows.get(key)
            if old is None:
                changes[key] = (value, new, whole)  # new to the batch: new to the file once whole
            else:
                changes[key] = old if old[0] == value else (value, new, True)
        if start is None:  # the rows the file before left are replaced
            rows, whole = changes, True
        else:
            rows.update(changes)
        before = new.text
    return rows, whole


@dataclass
class ViewBatch:
    """The row changes of one batch of events, merged."""

    new_versions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version_updates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    new_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    index_files: dict[str, list[_IndexFile]] = field(default_factory=dict)
    """The files the batch saw replace each crate's, in order (folded when the batch is written)."""
    scans: list[tuple[Any, ...]] = field(default_factory=list)
    last_position: int = 0
    track_unsynced: bool = True
    """Keep ``view_unsynced`` (False while it does not exist)."""
    dialect: str = "sqlite"
    """The store's SQL dialect, for the way rows of many crates are read and deleted."""

    def apply(self, event: Event, cursor: Cursor) -> None:
        """Fold one event into the batch (reads the cursor only for scans' race checks)."""
        handler = _handler(event[2])
        if handler is not None:
            handler(self, event[0], event[1], event[3], cursor)
        self.last_position = event[0]

    # -- registry side ----------------------------------------------------------------------

    def _published(self, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
        at = _epoch(e["timestamp"])
        line = e["line"]
        text = e.get(LINE_TEXT) or _LINE_JSON.encode(line)
        yanked = line.get("yanked")
        # A line already saying "yanked":false renders as itself for its digest.
        digest = hashlib.sha256(text.encode()).hexdigest() if yanked is False else fields_digest(line)
        crate = e["crate"]
        crate_key = collision_key(crate)
        self.new_versions[(crate_key, e["key"])] = {
            "crate_key": crate_key,
            "vers_key": e["key"],
            "crate": crate,
            "version": e["version"],
            "state": "yanked" if yanked else "published",
            "cksum": e["cksum"],
            "line": text,
            "digest": digest,
            "seq": pos - ADOPTED_FIRST if e["actor"] == IMPORT_ACTOR else pos,
            "published_at": at,
            "updated_at": at,
            "updated_pos": pos,
            "job": _stored_uuid(e["job"]),
            "actor": e["actor"],
        }

    def _version_change(self, pos: int, e: dict[str, Any], state: str) -> None:
        key = (collision_key(e["crate"]), e["key"])
        change = {
            "state": state,
            "updated_at": _epoch(e["timestamp"]),
            "updated_pos": pos,
            "job": _stored_uuid(e["job"]),
        }
        target = self.new_versions.get(key)
        if target is not None:
            target.update(change)
        else:
            self.version_updates.setdefault(key, {}).update(change)

    # -- jobs -------------------------------------------------------------------------------

    def _enqueued(self, pos: int, job_id: str, e: dict[str, Any], _: Cursor) -> None:
        at = _epoch(e["timestamp"])
        job = _uuid_text(job_id)
        self.new_jobs[job] = {
            "job": job,
            "crate_key": collision_key(e["crate"]),
            "crate": e["crate"],
            "versions": json.dumps(e["versions"]),
            "cause": e["cause"],
            "actor": e["actor"],
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

    def _job_change(
        self, pos: int, job_id: str, e: dict[str, Any], attempts: int = 0, failures: int = 0, **change: Any
    ) -> None:
        job = _uuid_text(job_id)
        change.update(updated_at=_epoch(e["timestamp"]), updated_pos=pos)
        target = self.new_jobs.get(job)
        if target is None:
            target = self.job_updates.setdefault(job, {"attempts": 0, "failures": 0})
        target.update(change)
        target["attempts"] += attempts
        target["failures"] += failures

    def _attempted(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        self._job_change(pos, job, e, attempts=1, last_reported=e["reported"], commit_id=e["commit"])

    def _failed(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        error = e["reason"] if not e["detail"] else f"{e['reason']}: {e['detail']}"
        retry = e["next_retry"]
        self._job_change(
            pos, job, e, failures=1, last_error=error, next_retry=None if retry is None else float(retry)
        )

    def _confirmed(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        text = e.get(ENTRIES_TEXT)
        self._replace_file(
            collision_key(e["crate"]),
            crate=e["crate"],
            path=e["path"],
            commit=e["commit"],
            source="push",
            at=_epoch(e["timestamp"]),
            pos=pos,
            text=_LINE_JSON.encode(e["entries"]) if text is None else text,
        )
        self._job_change(pos, job, e, last_error=None, next_retry=None, commit_id=e["commit"])

    def _held(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        self._replace_file(
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
        self._job_change(
            pos,
            job,
            e,
            last_error=f"foreign_lines: {e['reason']}",
            next_retry=None if retry is None else float(retry),
        )

    def _completed(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        self._job_change(pos, job, e, state="completed", commit_id=e["commit"])

    def _abandoned(self, pos: int, job: str, e: dict[str, Any], _: Cursor) -> None:
        self._job_change(pos, job, e, state="abandoned", last_error=f"abandoned: {e['reason']}")

    # -- the real index ---------------------------------------------------------------------

    def _scanned(self, pos: int, remote: str, e: dict[str, Any], cursor: Cursor) -> None:
        at = _epoch(e["timestamp"])
        self.scans.append(
            (
                pos,
                UUID(remote).hex,
                e["branch"],
                e["head"],
                e["base_position"],
                at,
                e["files"],
                e["changed_files"],
                len(e["discrepancies"]),
            )
        )
        for crate_key, found in e["observed"].items():
            if self._file_position(crate_key, cursor) > e["base_position"]:
                continue  # a push confirmed after the scan's comparison knows better
            crate, path = found[0], found[1]
            self._replace_file(
                crate_key,
                crate=crate,
                path=path,
                commit=e["head"],
                source="scan",
                at=at,
                pos=pos,
                text=_LINE_JSON.encode(found[2]),
            )

    def _repaired(self, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
        if not e["confirmed"]:
            return
        at = _epoch(e["timestamp"])
        for change in e["changes"]:
            self._replace_file(
                collision_key(change["crate"]),
                crate=change["crate"],
                path=change["path"],
                commit=e["commit"],
                source="repair",
                at=at,
                pos=pos,
                text=_LINE_JSON.encode(change["entries"]),
            )

    def _file_position(self, crate_key: str, cursor: Cursor) -> int:
        known = self.index_files.get(crate_key)
        if known:
            return known[-1].pos
        cursor.execute("SELECT updated_pos FROM view_index_files WHERE crate_key = ?", (crate_key,))
        row = cursor.fetchone()
        return int(row[0]) if row else 0

    def _replace_file(self, crate_key: str, **file: Any) -> None:
        """The index now holds this file for the crate (its rows are worked out when the batch is
        written, see :meth:`_flush_index`)."""
        self.index_files.setdefault(crate_key, []).append(_IndexFile(**file))

    # -- writing ----------------------------------------------------------------------------

    def flush(self, cursor: Cursor) -> None:
        """Write the merged changes with the caller's cursor (inside its transaction)."""
        _insert(
            cursor,
            "view_versions",
            _VERSION_COLUMNS,
            list(map(_VERSION_ROW, self.new_versions.values())),
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
        _insert(cursor, "view_jobs", _JOB_COLUMNS, list(map(_JOB_ROW, self.new_jobs.values())))
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
        """Write the replaced files, and of their rows only those that changed.

        A confirmation carries the crate's whole file; rewriting every row of it for each
        confirmation (a crate with hundreds of versions, published again) was most of what the
        views did for a busy crate. A row keeps the commit, source, time and position of the
        event since which it holds its value. A file that appends entries to the stored one is
        read from where they begin, and its other rows are neither read nor written.
        """
        if not self.index_files:
            return
        keys = list(self.index_files)
        known = self._stored_files(cursor, keys)
        whole: dict[str, dict[str, _IndexRow]] = {}
        appended: dict[str, dict[str, _IndexRow]] = {}
        for crate_key, files in self.index_files.items():
            rows, complete = _fold_files(files, known.get(crate_key))
            (whole if complete else appended)[crate_key] = rows
        _delete(cursor, self.dialect, "view_index_files", keys)
        last = [(k, fs[-1]) for k, fs in self.index_files.items()]
        file_rows = [
            (k, f.crate, f.path, f.commit, f.source, f.at, f.pos, len(f.text), _opening_sha(f.text))
            for k, f in last
        ]
        _insert(cursor, "view_index_files", _INDEX_FILE_COLUMNS, file_rows)
        stored = self._stored_index_rows(cursor, [k for k in whole if k in known])
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        deletes: list[tuple[str, str]] = []
        for crate_key, rows in whole.items():
            old = stored.get(crate_key, {})
            for key, (value, f, changed) in rows.items():
                was = old.get(key)
                if was is None or changed or was != value:
                    written = (*value, f.commit, f.source, f.at, f.pos)
                    if was is None:
                        inserts.append((crate_key, key, *written))
                    else:
                        updates.append((*written, crate_key, key))
            deletes.extend((crate_key, key) for key in old.keys() - rows.keys())
        if deletes:
            cursor.executemany("DELETE FROM view_index WHERE crate_key = ? AND vers_key = ?", deletes)
        if updates:
            cursor.executemany(
                "UPDATE view_index SET crate = ?, version = ?, yanked = ?, digest = ?, commit_id = ?, "
                "source = ?, updated_at = ?, updated_pos = ? WHERE crate_key = ? AND vers_key = ?",
                updates,
            )
        _insert(cursor, "view_index", _INDEX_COLUMNS, inserts)
        self._upsert_index_rows(cursor, appended)

    def _upsert_index_rows(self, cursor: Cursor, appended: dict[str, dict[str, _IndexRow]]) -> None:
        """Write the rows files appended to the stored ones: a row new to the batch only where the
        stored row (if any: a key may repeat in a file) holds another value."""
        changed: list[tuple[Any, ...]] = []
        unchanged: list[tuple[Any, ...]] = []
        for crate_key, rows in appended.items():
            for key, (value, f, within) in rows.items():
                row = (crate_key, key, *value, f.commit, f.source, f.at, f.pos)
                (changed if within else unchanged).append(row)
        if changed:
            cursor.executemany(_UPSERT_INDEX_ROW, changed)
        if unchanged:
            cursor.executemany(_UPSERT_INDEX_ROW + _WHERE_VALUE_DIFFERS, unchanged)

    def _stored_files(self, cursor: Cursor, keys: list[str]) -> dict[str, _StoredFile]:
        """What the index view keeps of these crates' files: crate key -> length, opening digest."""
        found: dict[str, _StoredFile] = {}
        columns = "crate_key, entries_length, entries_sha256 FROM view_index_files"
        for sql, params in self._by_keys(columns, keys):
            cursor.execute(sql, params)
            for crate_key, length, sha in cursor.fetchall():
                found[crate_key] = (None if length is None else int(length), sha)
        return found

    def _by_keys(self, select: str, keys: list[str]) -> list[tuple[str, list[Any]]]:
        """``SELECT {select} WHERE crate_key`` is one of ``keys``: the statements and their parameters."""
        if self.dialect == "postgresql":
            return [(f"SELECT {select} WHERE crate_key = ANY(?)", [keys])]
        return [
            (f"SELECT {select} WHERE crate_key IN ({', '.join('?' * len(chunk))})", list(chunk))
            for chunk in _chunks(keys, _KEYS_PER_STATEMENT)
        ]

    def _stored_index_rows(
        self, cursor: Cursor, keys: list[str]
    ) -> dict[str, dict[str, tuple[str, str, int, str]]]:
        """The index view's rows of these crates as stored: crate key -> version key -> value."""
        stored: dict[str, dict[str, tuple[str, str, int, str]]] = {}
        columns = "crate_key, vers_key, crate, version, yanked, digest FROM view_index"
        for sql, params in self._by_keys(columns, keys):
            cursor.execute(sql, params)
            for crate_key, vers_key, crate, version, yanked, digest in cursor.fetchall():
                stored.setdefault(crate_key, {})[vers_key] = (crate, version, int(yanked), digest)
        return stored


Handler = Callable[[ViewBatch, int, str, dict[str, Any], Cursor], None]


def _state_handler(state: str) -> Handler:
    def handle(batch: ViewBatch, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
        batch._version_change(pos, e, state)

    return handle


_HANDLERS: dict[type, Handler] = {
    Crate.VersionPublished: ViewBatch._published,
    Crate.VersionYanked: _state_handler("yanked"),
    Crate.VersionUnyanked: _state_handler("published"),
    Crate.VersionDeleted: _state_handler("deleted"),
    SyncJob.IndexSyncEnqueued: ViewBatch._enqueued,
    SyncJob.IndexPushAttempted: ViewBatch._attempted,
    SyncJob.IndexPushFailed: ViewBatch._failed,
    SyncJob.IndexPushConfirmed: ViewBatch._confirmed,
    SyncJob.IndexSyncHeld: ViewBatch._held,
    SyncJob.IndexSyncCompleted: ViewBatch._completed,
    SyncJob.IndexSyncAbandoned: ViewBatch._abandoned,
    IndexRemote.IndexScanned: ViewBatch._scanned,
    IndexRemote.RepairApplied: ViewBatch._repaired,
}
_BY_TOPIC: dict[str, Handler | None] = {}


def _handler(topic: str) -> Handler | None:
    """The handler of the event class a stored topic names (None: nothing in the views)."""
    try:
        return _BY_TOPIC[topic]
    except KeyError:
        handler = _BY_TOPIC[topic] = _HANDLERS.get(resolve_topic(topic))
        return handler
