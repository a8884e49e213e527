"""What the views share: an event's stored state as they read it, and the statements that write their rows.

A handler reads the fields it needs from the stored JSON; the library's encoded values (times,
UUIDs) are read with :func:`_epoch` and :func:`_uuid_text`, to the same values the domain
events hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import Mapper

from ledger.ports import CopyCursor, Cursor

T = TypeVar("T")

_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""``json.dumps(line, separators=(",", ":"), ensure_ascii=False)``, without a new encoder per call."""

_JSON = json.JSONDecoder()


_KEYS_PER_STATEMENT = 500
"""Crate keys bound in one statement: well below the bound-parameter limit of every SQLite build."""


Event = tuple[int, str, str, dict[str, Any]]
"""An event as the views fold it: log position, originator id (text), topic, state."""


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
