"""The index view (``view_index_files``, ``view_index``): the file the real index holds for each
crate, as pushes, holds, scans and repairs show it, and a row per version in that file.

A confirmation carries the crate's whole file; the batch keeps the files it saw, in order, and
works out their rows when it is written: of those only the rows that changed, and of a file
that appends entries to the one before it, only the appended ones.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ledger.domain.names import collision_key
from projections.views.common import _KEYS_PER_STATEMENT, _LINE_JSON, _chunks, _delete, _epoch, _insert
from projections.views.state import IndexFile

if TYPE_CHECKING:
    from ledger.ports import Cursor
    from projections.views.state import BatchRows

# The columns each batch inserts, in the order of its rows.
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


_IndexRow = tuple[tuple[str, str, int, str], IndexFile, bool]
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


def _fold_files(files: list[IndexFile], stored: _StoredFile | None) -> tuple[dict[str, _IndexRow], bool]:
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


def _repaired(batch: BatchRows, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
    if not e["confirmed"]:
        return
    at = _epoch(e["timestamp"])
    for change in e["changes"]:
        _replace_file(
            batch,
            collision_key(change["crate"]),
            crate=change["crate"],
            path=change["path"],
            commit=e["commit"],
            source="repair",
            at=at,
            pos=pos,
            text=_LINE_JSON.encode(change["entries"]),
        )


def _file_position(batch: BatchRows, crate_key: str, cursor: Cursor) -> int:
    known = batch.index_files.get(crate_key)
    if known:
        return known[-1].pos
    cursor.execute("SELECT updated_pos FROM view_index_files WHERE crate_key = ?", (crate_key,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def _replace_file(batch: BatchRows, crate_key: str, **file: Any) -> None:
    """The index now holds this file for the crate (its rows are worked out when the batch is
    written, see :func:`_flush_index`)."""
    batch.index_files.setdefault(crate_key, []).append(IndexFile(**file))


def _flush_index(batch: BatchRows, cursor: Cursor) -> None:
    """Write the replaced files, and of their rows only those that changed.

    A confirmation carries the crate's whole file; rewriting every row of it for each
    confirmation (a crate with hundreds of versions, published again) was most of what the
    views did for a busy crate. A row keeps the commit, source, time and position of the
    event since which it holds its value. A file that appends entries to the stored one is
    read from where they begin, and its other rows are neither read nor written.
    """
    if not batch.index_files:
        return
    keys = list(batch.index_files)
    known = _stored_files(batch, cursor, keys)
    whole: dict[str, dict[str, _IndexRow]] = {}
    appended: dict[str, dict[str, _IndexRow]] = {}
    for crate_key, files in batch.index_files.items():
        rows, complete = _fold_files(files, known.get(crate_key))
        (whole if complete else appended)[crate_key] = rows
    _delete(cursor, batch.dialect, "view_index_files", keys)
    last = [(k, fs[-1]) for k, fs in batch.index_files.items()]
    file_rows = [
        (k, f.crate, f.path, f.commit, f.source, f.at, f.pos, len(f.text), _opening_sha(f.text))
        for k, f in last
    ]
    _insert(cursor, "view_index_files", _INDEX_FILE_COLUMNS, file_rows)
    stored = _stored_index_rows(batch, cursor, [k for k in whole if k in known])
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
    _upsert_index_rows(cursor, appended)


def _upsert_index_rows(cursor: Cursor, appended: dict[str, dict[str, _IndexRow]]) -> None:
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


def _stored_files(batch: BatchRows, cursor: Cursor, keys: list[str]) -> dict[str, _StoredFile]:
    """What the index view keeps of these crates' files: crate key -> length, opening digest."""
    found: dict[str, _StoredFile] = {}
    columns = "crate_key, entries_length, entries_sha256 FROM view_index_files"
    for sql, params in _by_keys(batch, columns, keys):
        cursor.execute(sql, params)
        for crate_key, length, sha in cursor.fetchall():
            found[crate_key] = (None if length is None else int(length), sha)
    return found


def _by_keys(batch: BatchRows, select: str, keys: list[str]) -> list[tuple[str, list[Any]]]:
    """``SELECT {select} WHERE crate_key`` is one of ``keys``: the statements and their parameters."""
    if batch.dialect == "postgresql":
        return [(f"SELECT {select} WHERE crate_key = ANY(?)", [keys])]
    return [
        (f"SELECT {select} WHERE crate_key IN ({', '.join('?' * len(chunk))})", list(chunk))
        for chunk in _chunks(keys, _KEYS_PER_STATEMENT)
    ]


def _stored_index_rows(
    batch: BatchRows, cursor: Cursor, keys: list[str]
) -> dict[str, dict[str, tuple[str, str, int, str]]]:
    """The index view's rows of these crates as stored: crate key -> version key -> value."""
    stored: dict[str, dict[str, tuple[str, str, int, str]]] = {}
    columns = "crate_key, vers_key, crate, version, yanked, digest FROM view_index"
    for sql, params in _by_keys(batch, columns, keys):
        cursor.execute(sql, params)
        for crate_key, vers_key, crate, version, yanked, digest in cursor.fetchall():
            stored.setdefault(crate_key, {})[vers_key] = (crate, version, int(yanked), digest)
    return stored
