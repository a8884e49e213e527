"""Read-side queries the worker and the repair use: open jobs and one crate's rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.ports import Database


@dataclass(frozen=True)
class OpenJob:
    job: str
    crate_key: str
    crate: str
    attempts: int
    enqueued_at: float
    next_retry: float | None


@dataclass(frozen=True)
class VersionRow:
    version: str
    key: str
    state: str
    digest: str
    line: str

    @property
    def yanked(self) -> bool:
        return self.state == "yanked"


def open_jobs(db: Database) -> list[OpenJob]:
    """Every open job, oldest first."""
    rows = db.query(
        "SELECT job, crate_key, crate, attempts, enqueued_at, next_retry FROM view_jobs "
        "WHERE state = 'open' ORDER BY enqueued_pos"
    )
    return [OpenJob(r[0], r[1], r[2], int(r[3]), float(r[4]), r[5]) for r in rows]


def live_versions(db: Database, crate_key: str) -> list[VersionRow]:
    """A crate's versions that belong in the index (not deleted), in publication order."""
    rows = db.query(
        "SELECT version, vers_key, state, digest, line FROM view_versions "
        "WHERE crate_key = ? AND state <> 'deleted' ORDER BY seq",
        (crate_key,),
    )
    return [VersionRow(*r) for r in rows]


_IN_LIST = 500
"""Crate keys per ``IN (...)`` list: well below the bound-parameter limit of every SQLite build."""


def live_versions_of(
    db: Database, crate_keys: Iterable[str], *, with_deleted: bool = False
) -> dict[str, list[VersionRow]]:
    """:func:`live_versions` of many crates, a few queries in all: crate key -> its rows.

    The keys keep their given order (duplicates dropped); a key without versions maps to ``[]``.
    ``with_deleted`` adds the deleted versions: every version the ledger has a record of.
    """
    found: dict[str, list[VersionRow]] = {key: [] for key in crate_keys}
    keys = list(found)
    live = "" if with_deleted else " AND state <> 'deleted'"
    for start in range(0, len(keys), _IN_LIST):
        part = keys[start : start + _IN_LIST]
        rows = db.query(
            "SELECT crate_key, version, vers_key, state, digest, line FROM view_versions "
            f"WHERE crate_key IN ({', '.join('?' * len(part))}){live} "
            "ORDER BY crate_key, seq",
            part,
        )
        for key, *row in rows:
            found[key].append(VersionRow(*row))
    return found


def crate_spelling(db: Database, crate_keys: Iterable[str]) -> dict[str, str]:
    """The registered spelling of each crate key that has versions."""
    found: dict[str, str] = {}
    for key in crate_keys:
        rows = db.query("SELECT crate FROM view_versions WHERE crate_key = ? LIMIT 1", (key,))
        if rows:
            found[key] = rows[0][0]
    return found
