"""The database view of versions (``view_versions``): a row per version published, its state
moved by yanks, unyanks and deletions."""

from __future__ import annotations

import hashlib
import operator
from typing import TYPE_CHECKING, Any

from ledger.domain.aggregates import IMPORT_ACTOR
from ledger.domain.index_format import fields_digest
from ledger.domain.names import collision_key
from projections.views.common import _LINE_JSON, LINE_TEXT, _epoch, _insert, _stored_uuid

if TYPE_CHECKING:
    from ledger.ports import Cursor
    from projections.views.state import BatchRows

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
_VERSION_ROW = operator.itemgetter(*_VERSION_COLUMNS)

ADOPTED_FIRST = 1 << 48
"""Subtracted from the order (``seq``) of a version adopted from an index (actor ``import``): its
line was in the index before any version published through the ledger, and stays before them,
in the order adopted. Log positions stay far below it."""


def _published(batch: BatchRows, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
    at = _epoch(e["timestamp"])
    line = e["line"]
    text = e.get(LINE_TEXT) or _LINE_JSON.encode(line)
    yanked = line.get("yanked")
    # A line already saying "yanked":false renders as itself for its digest.
    digest = hashlib.sha256(text.encode()).hexdigest() if yanked is False else fields_digest(line)
    crate = e["crate"]
    crate_key = collision_key(crate)
    batch.new_versions[(crate_key, e["key"])] = {
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


def _version_change(batch: BatchRows, pos: int, e: dict[str, Any], state: str) -> None:
    key = (collision_key(e["crate"]), e["key"])
    change = {
        "state": state,
        "updated_at": _epoch(e["timestamp"]),
        "updated_pos": pos,
        "job": _stored_uuid(e["job"]),
    }
    target = batch.new_versions.get(key)
    if target is not None:
        target.update(change)
    else:
        batch.version_updates.setdefault(key, {}).update(change)


def _flush_versions(batch: BatchRows, cursor: Cursor) -> None:
    """Insert the batch's new versions and update the versions it changed."""
    _insert(
        cursor,
        "view_versions",
        _VERSION_COLUMNS,
        list(map(_VERSION_ROW, batch.new_versions.values())),
    )
    if batch.version_updates:
        cursor.executemany(
            "UPDATE view_versions SET state = ?, updated_at = ?, updated_pos = ?, job = ? "
            "WHERE crate_key = ? AND vers_key = ?",
            [
                (c["state"], c["updated_at"], c["updated_pos"], c["job"], k[0], k[1])
                for k, c in batch.version_updates.items()
            ],
        )
