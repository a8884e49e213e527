"""The scans view (``view_scans``): a row per scan of the real index; the files a scan found
differing replace those of the index view."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from projections.views.common import _LINE_JSON, _epoch
from projections.views.index import _file_position, _replace_file

if TYPE_CHECKING:
    from ledger.ports import Cursor
    from projections.views.state import BatchRows


def _scanned(batch: BatchRows, pos: int, remote: str, e: dict[str, Any], cursor: Cursor) -> None:
    at = _epoch(e["timestamp"])
    batch.scans.append(
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
        if _file_position(batch, crate_key, cursor) > e["base_position"]:
            continue  # a push confirmed after the scan's comparison knows better
        crate, path = found[0], found[1]
        _replace_file(
            batch,
            crate_key,
            crate=crate,
            path=path,
            commit=e["head"],
            source="scan",
            at=at,
            pos=pos,
            text=_LINE_JSON.encode(found[2]),
        )


def _flush_scans(batch: BatchRows, cursor: Cursor) -> None:
    """Insert the batch's scans."""
    if batch.scans:
        cursor.executemany(
            "INSERT INTO view_scans (position, remote, branch, head, base_position, at, files, "
            "changed_files, discrepancies) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            batch.scans,
        )
