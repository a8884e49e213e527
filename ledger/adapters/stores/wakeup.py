"""Waking the worker when the log grows: PostgreSQL's LISTEN/NOTIFY, SQLite's ``data_version``.

PostgreSQL: every save of events notifies the ledger's channel inside its own transaction (the
event store's recorder does, ``NOTIFY <schema>_publicationledger_events``: one channel per
schema, so that ledgers in two schemas of one database do not wake each other), so the
notification is sent exactly when the events are visible. A connection of the worker's own
listens from the moment the wake-up exists; when it is lost (a restart, a killed backend) it
listens again on a new connection at once, and the worker looks for jobs.

SQLite: ``PRAGMA data_version`` changes on a connection whenever another connection commits to
the file; checking it costs a few microseconds, so a short interval is cheap. A commit that
added no event (a lease renewal) does not wake the worker.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from ledger.logs import warn_step

CHECK_S = 0.02
"""How often the SQLite wake-up looks at ``data_version`` while it waits: at most 20 ms added to
a push that takes 50-150 ms; every 5 ms, an idle worker spent 2.1 % of a core looking
(scripts/bench_idle.py)."""


class SQLiteWakeup:
    """:class:`~ledger.ports.Wakeup` for a SQLite file: the events table grew.

    ``data_version`` moves on every commit of another connection, the worker's own lease
    renewals included; only when it moved is the log's head read, and only a longer log wakes
    the worker (else each renewal would wake it into another pass, and that pass renew again).
    """

    def __init__(self, path: Path, table: str = "stored_events") -> None:
        self._conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._head_sql = f"SELECT MAX(rowid) FROM {table}"
        self._seen = self._version()
        self._head = self._log_head()

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _log_head(self) -> int:
        try:
            return int(self._conn.execute(self._head_sql).fetchone()[0] or 0)
        except sqlite3.OperationalError:  # no events table yet
            return 0

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = self._version()
            if version != self._seen:
                self._seen = version
                head = self._log_head()
                if head != self._head:
                    self._head = head
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(CHECK_S, left))

    def clear(self) -> None:
        self._seen = self._version()
        self._head = self._log_head()

    def close(self) -> None:
        self._conn.close()


class PostgresWakeup:
    """:class:`~ledger.ports.Wakeup` on PostgreSQL: a notification on the events' channel."""

    def __init__(self, connect: Any, channel: str) -> None:
        """``connect()`` opens an autocommit psycopg connection; ``channel`` is the recorder's.

        It listens at once: a notification sent before the first wait (while the worker looks
        for jobs) is kept for that wait, not lost to a connection that was not listening yet.
        """
        self._connect = connect
        self._channel = channel
        self._conn: Any = None
        self._listening()

    def _live(self) -> Any:
        """The listening connection, or None when there is none or it is lost."""
        conn = self._conn
        return None if conn is None or conn.closed or conn.broken else conn

    def _listening(self) -> Any:
        """The listening connection, on a new one when it was lost (None if that failed)."""
        if self._live() is None:
            import psycopg
            from psycopg.sql import SQL, Identifier

            try:
                self._conn = self._connect()
                self._conn.execute(SQL("LISTEN {}").format(Identifier(self._channel)))
            except psycopg.Error as exc:
                warn_step("wakeup_unavailable", error=" ".join(str(exc).split()))
                self._conn = None
        return self._conn

    def wait(self, timeout: float) -> bool:
        import psycopg

        conn = self._live()
        if conn is None:
            if self._listening() is None:
                time.sleep(timeout)
                return False
            return True  # listening again: look now, for what was notified while it was not
        try:
            # Consumed whole (it ends after one): while a notifies() generator is suspended it
            # holds the connection's lock, and the drain below would wait on it for ever.
            woken = bool(list(conn.notifies(timeout=timeout, stop_after=1)))
            if woken:
                self._drain(conn)
            return woken
        except psycopg.Error as exc:
            self._lost(exc)
            time.sleep(min(timeout, 0.05))
            self._listening()  # before the look below, so nothing notified after it is missed
            return True  # look for jobs now: a notification may have been lost with it

    def clear(self) -> None:
        import psycopg

        conn = self._live()
        if conn is None:
            return  # the next wait listens again and returns at once
        try:
            self._drain(conn)
        except psycopg.Error as exc:
            self._lost(exc)

    def _lost(self, exc: Exception) -> None:
        warn_step("wakeup_lost", error=" ".join(str(exc).split()))
        self._close()

    def _drain(self, conn: Any) -> None:
        """Consume notifications already received: one wake-up stands for all of them."""
        for _ in conn.notifies(timeout=0):
            pass

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._close()
