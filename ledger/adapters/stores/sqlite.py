"""SQLite: the chained application recorder and a plain connection for views and leases."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from ledger.adapters.stores.chain import GENESIS, canonical, next_link
from ledger.domain.errors import StoreUnavailable

CHAIN_TABLE = "event_chain"
BUSY_TIMEOUT_S = 30.0


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """Records events and, in the same transaction, the hash chain link of each."""

    record_chain: ClassVar[bool] = True
    """Off only to measure what the chain costs (scripts/bench_chain.py)."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} (position INTEGER PRIMARY KEY, link TEXT NOT NULL)",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The first INSERT takes the write lock, so the rowids and the last link cannot move.
        ids = self._insert_rows(c, stored_events)
        if not ids or not self.record_chain:
            return ids
        c.execute(f"SELECT link FROM {CHAIN_TABLE} ORDER BY position DESC LIMIT 1")
        row = c.fetchone()
        link = row[0] if row else GENESIS
        links = []
        for position, s in zip(ids, stored_events, strict=True):
            assert position is not None
            payload = canonical(position, s.originator_id, s.originator_version, s.topic, s.state)
            link = next_link(link, payload)
            links.append((position, link))
        c.executemany(f"INSERT INTO {CHAIN_TABLE} (position, link) VALUES (?, ?)", links)
        return ids

    def _insert_rows(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Insert the events with one ``executemany``; their rowids, which SQLite allots in order.

        Under the write lock each new rowid is one more than the largest, so the rows get
        consecutive ids after the first; the largest rowid afterwards proves it.
        """
        rows = [
            (
                s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                s.originator_version,
                s.topic,
                s.state,
            )
            for s in stored_events
        ]
        if not rows:
            return []
        c.execute(self.insert_events_statement, rows[0])
        first = int(c.lastrowid)
        c.executemany(self.insert_events_statement, rows[1:])
        ids = list(range(first, first + len(rows)))
        c.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")
        last = c.fetchone()[0]
        if last != ids[-1]:
            msg = f"rowids of a batch are not consecutive: expected {ids[-1]}, found {last}"
            raise PersistenceError(msg)
        return ids

    def existing_ids(self, ids: Sequence[UUID]) -> list[UUID]:
        """Which of these aggregates have any event (every aggregate has a version 1)."""
        found: list[UUID] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                c.execute(
                    f"SELECT originator_id FROM {self.events_table_name} "
                    f"WHERE originator_version = 1 AND originator_id IN ({', '.join('?' * len(chunk))})",
                    [i.hex for i in chunk],
                )
                found += [UUID(row[0]) for row in c.fetchall()]
        return found


class SQLiteDatabase:
    """A plain connection to the ledger's SQLite file, for views, leases and audits."""

    dialect = "sqlite"

    def __init__(self, path: Path | None) -> None:
        """Open the file at ``path``, or a private in-memory database for ``None``."""
        self.path = path
        try:
            self._conn = sqlite3.connect(
                str(path) if path is not None else ":memory:",
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Debian's SQLite is built to zero every page it frees (a DROP TABLE of the views
            # wrote each of their pages again: 5 s of a 60 s rebuild). What this connection
            # deletes, views and leases, is derived from events that are kept for ever.
            self._conn.execute("PRAGMA secure_delete=OFF")
        except sqlite3.Error as exc:
            msg = f"cannot open the SQLite store {str(path)!r}: {exc}"
            raise StoreUnavailable(msg) from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken at once so concurrent writers queue instead of failing."""
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise
        finally:
            cur.close()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Nothing to hold: SQLite serialises schema changes by itself."""
        yield

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 10000) -> Iterator[tuple[Any, ...]]:
        cur = self._conn.execute(sql, params)
        try:
            while rows := cur.fetchmany(size):
                yield from rows
        finally:
            cur.close()

    def close(self) -> None:
        self._conn.close()
