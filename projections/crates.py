"""The views as the scan and the repair compare them with the real index, by crate key: each
crate's registered rows (the database view), the file the ledger believes it has (the index
view), and the fingerprints of both, read in chunks of keys or in one streaming query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.names import index_path
from ledger.domain.real_lines import fingerprint, tag
from ledger.ports import Database
from projections.queries import VersionRow
from projections.schema import has_table

KEYS_PER_QUERY = 500


@dataclass
class Registered:
    """The database view of one crate: its registered spelling and every version, in order."""

    name: str
    rows: list[VersionRow] = field(default_factory=list)

    @property
    def path(self) -> str:
        return index_path(self.name)

    @property
    def live(self) -> list[VersionRow]:
        return [r for r in self.rows if r.state != "deleted"]


@dataclass
class Belief:
    """The index view of one crate: where the ledger believes its file is and what it holds."""

    crate: str
    path: str
    entries: dict[str, tuple[str, bool, str]] = field(default_factory=dict)


def chunks(keys: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) >= KEYS_PER_QUERY:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_registered(db: Database, keys: Iterable[str], *, with_lines: bool) -> dict[str, Registered]:
    """The database view of each crate key that has versions (a query per 500 keys)."""
    found: dict[str, Registered] = {}
    line = "line" if with_lines else "''"
    for chunk in chunks(keys):
        marks = ", ".join("?" * len(chunk))
        rows = db.query(
            f"SELECT crate_key, crate, version, vers_key, state, digest, {line} FROM view_versions "
            f"WHERE crate_key IN ({marks}) ORDER BY crate_key, seq",
            chunk,
        )
        for crate_key, crate, version, vers_key, state, digest, text in rows:
            entry = found.setdefault(crate_key, Registered(crate))
            entry.rows.append(VersionRow(version, vers_key, state, digest, text))
    return found


def load_beliefs(db: Database, keys: Iterable[str]) -> dict[str, Belief]:
    """The index view of each crate key the ledger has a file for (a query per 500 keys)."""
    found: dict[str, Belief] = {}
    for chunk in chunks(keys):
        marks = ", ".join("?" * len(chunk))
        for crate_key, crate, path in db.query(
            f"SELECT crate_key, crate, path FROM view_index_files WHERE crate_key IN ({marks})", chunk
        ):
            found[crate_key] = Belief(crate, path)
        for crate_key, version, vers_key, yanked, digest in db.query(
            "SELECT crate_key, version, vers_key, yanked, digest FROM view_index "
            f"WHERE crate_key IN ({marks})",
            chunk,
        ):
            belief = found.get(crate_key)
            if belief is not None:
                belief.entries[vers_key] = (version, bool(yanked), digest)
    return found


def known_lines(registered: Registered | None, belief: Belief | None) -> dict[str, tuple[str, str, str]]:
    """The digests of every line the views know for one crate."""
    known: dict[str, tuple[str, str, str]] = {}
    if belief is not None:
        for key, (version, _, digest) in belief.entries.items():
            known[digest] = (version, key, belief.crate)
    if registered is not None:
        for row in registered.rows:
            known[row.digest] = (row.version, row.key, registered.name)
    return known


def registry_fingerprints(db: Database, *, ordered: bool) -> dict[str, tuple[str, str | None]]:
    """Every crate key of the database view: its spelling and the fingerprint of its live lines.

    Ordered fingerprints follow publication order (a file's exact bytes); unordered ones only
    the set of lines, and are aggregated by the store, a row per crate.
    """
    if not ordered:
        flag = "CASE WHEN state = 'yanked' THEN 'y' ELSE 'n' END"
        listed = _concat(db, f"CASE WHEN state <> 'deleted' THEN digest || {flag} END")
        return {
            crate_key: (crate, fingerprint(tags.split(","), ordered=False) if tags else None)
            for crate_key, crate, tags in db.stream(
                f"SELECT crate_key, MIN(crate), {listed} FROM view_versions GROUP BY crate_key"
            )
        }
    found: dict[str, tuple[str, str | None]] = {}
    current: str | None = None
    name = ""
    tags: list[str] = []
    for crate_key, crate, digest, state in db.stream(
        "SELECT crate_key, crate, digest, state FROM view_versions ORDER BY crate_key, seq"
    ):
        if crate_key != current:
            if current is not None:
                found[current] = (name, fingerprint(tags, ordered=True))
            current, name, tags = crate_key, crate, []
        if state != "deleted":
            tags.append(tag(digest, state == "yanked"))
    if current is not None:
        found[current] = (name, fingerprint(tags, ordered=True))
    return found


def belief_fingerprints(db: Database, keys: Iterable[str] | None = None) -> dict[str, tuple[str, str | None]]:
    """Each crate key of the index view (all, or those of ``keys``): the path believed and the
    fingerprint of its entries."""
    listed = _concat(db, "i.digest || CASE WHEN i.yanked = 1 THEN 'y' ELSE 'n' END")
    query = (
        f"SELECT f.crate_key, f.path, {listed} FROM view_index_files f "
        "LEFT JOIN view_index i ON i.crate_key = f.crate_key{where} GROUP BY f.crate_key, f.path"
    )
    if keys is None:
        rows: Iterable[tuple[Any, ...]] = db.stream(query.format(where=""))
    else:
        rows = (
            row
            for chunk in chunks(keys)
            for row in db.query(
                query.format(where=f" WHERE f.crate_key IN ({', '.join('?' * len(chunk))})"), chunk
            )
        )
    return {
        crate_key: (path, fingerprint(tags.split(","), ordered=False) if tags else None)
        for crate_key, path, tags in rows
    }


def unsynced_keys(db: Database) -> set[str] | None:
    """The crates with a version out of sync (``view_unsynced``); None when it is not kept."""
    if not has_table(db, "view_unsynced"):
        return None
    return {row[0] for row in db.query("SELECT crate_key FROM view_unsynced")}


def _concat(db: Database, expression: str) -> str:
    """The store's aggregate joining ``expression`` over a group with commas (NULLs skipped)."""
    if db.dialect == "postgresql":
        return f"string_agg({expression}, ',')"
    return f"group_concat({expression}, ',')"


def last_scan(db: Database, remote: str, branch: str) -> tuple[str | None, int] | None:
    rows = db.query(
        "SELECT head, files FROM view_scans WHERE remote = ? AND branch = ? ORDER BY position DESC LIMIT 1",
        (remote, branch),
    )
    return (rows[0][0], int(rows[0][1])) if rows else None
