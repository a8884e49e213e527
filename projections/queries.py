"""Read-side queries of the views that the use cases need: jobs, rows, positions, spellings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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


def known_crate_keys(db: Database) -> set[str]:
    """The collision keys of every crate the database view has a row of."""
    return {row[0] for row in db.query("SELECT DISTINCT crate_key FROM view_versions")}


def jobs_of_crate(db: Database, crate_key: str) -> list[tuple[str, str]]:
    """A crate's sync jobs as (job id, versions as JSON), in enqueue order."""
    rows = db.query(
        "SELECT job, versions FROM view_jobs WHERE crate_key = ? ORDER BY enqueued_pos",
        (crate_key,),
    )
    return [(str(job), str(versions)) for job, versions in rows]


def views_position(db: Database, name: str) -> int:
    """The log position the views named ``name`` have reached (0 before the first batch)."""
    rows = db.query("SELECT position FROM view_tracking WHERE name = ?", (name,))
    return int(rows[0][0]) if rows else 0


def versions_changed_since(db: Database, position: int) -> Iterator[tuple[Any, ...]]:
    """Every row of each crate with a row of the database view changed after ``position``:
    (crate_key, crate, digest, state), by crate then publication order."""
    return db.stream(
        "SELECT crate_key, crate, digest, state FROM view_versions WHERE crate_key IN "
        "(SELECT crate_key FROM view_versions WHERE updated_pos > ?) ORDER BY crate_key, seq",
        (position,),
    )


def version_cksum(db: Database, crate_key: str, vers_key: str) -> str | None:
    """The ``.crate`` file's SHA-256 of a published or yanked version; None otherwise."""
    rows = db.query(
        "SELECT cksum FROM view_versions WHERE crate_key = ? AND vers_key = ? AND state <> 'deleted'",
        (crate_key, vers_key),
    )
    return str(rows[0][0]) if rows else None
