"""The crates out of sync (``view_unsynced``): kept, after a batch's rows are written, equal to
the crates with a version whose two views disagree."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from projections.schema import unsynced_refresh
from projections.views.common import _KEYS_PER_STATEMENT, _chunks

if TYPE_CHECKING:
    from ledger.ports import Cursor
    from projections.views.state import BatchRows


def _flush_unsynced(batch: BatchRows, cursor: Cursor) -> None:
    """Keep ``view_unsynced`` equal to the crates with a version out of sync.

    A crate whose index file the batch replaced, or that was already out of sync, is
    compared again version by version. A crate that was in sync and whose registry rows
    alone changed can only be out of sync in the versions changed: only those are compared.
    """
    changed: dict[str, set[str]] = {}
    for crate_key, vers_key in itertools.chain(batch.new_versions, batch.version_updates):
        changed.setdefault(crate_key, set()).add(vers_key)
    whole = set(batch.index_files)
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
