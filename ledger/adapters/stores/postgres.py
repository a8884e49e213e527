"""PostgreSQL: the chained application recorder and a plain connection for views and leases."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.adapters.stores.chain import GENESIS, canonical, next_link
from ledger.domain.errors import StoreUnavailable
from ledger.settings import StoreURL, redact


class ChainedPostgresApplicationRecorder(PostgresApplicationRecorder):
    """Records events and, under the same table lock and transaction, their chain links."""

    record_chain: ClassVar[bool] = True
    """Off only to measure what the chain costs (scripts/bench_chain.py)."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        # One channel per ledger: ledgers in two schemas of one database do not wake each other.
        self.channel_name = f"{self.datastore.schema}_{self.events_table_name}".replace(".", "_")
        self.chain_table_name = f"{events_table_name}_chain"
        chain = Identifier(self.datastore.schema), Identifier(self.chain_table_name)
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {}.{} (position bigint PRIMARY KEY, link text NOT NULL)").format(
                *chain
            )
        )
        self._select_last_link = SQL("SELECT link FROM {}.{} ORDER BY position DESC LIMIT 1").format(*chain)
        self._insert_links = SQL(
            "INSERT INTO {}.{} (position, link) SELECT * FROM unnest(%b::bigint[], %b::text[])"
        ).format(*chain)
        # The events go in as four arrays sent in binary: no composite values to escape as text.
        self._insert_columns = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            Identifier(self.datastore.schema),
            Identifier(self.events_table_name),
            SQL(self.datastore.originator_id_type),
        )
        self._select_existing = SQL(
            "SELECT originator_id FROM {}.{} WHERE originator_version = 1 AND originator_id = ANY(%s)"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """The library's insert, statement after statement in one transaction, without its pipeline.

        In pipeline mode psycopg (3.3.9) stops sending once its queue of statements is empty,
        although the end of a large one may still sit in its output buffer, and waits for
        results: the server waits for the rest of the statement, and neither moves again
        (an import's 20,000-event saves hung so on a busy machine; one save of 50 MB always
        does). Sent outside a pipeline, a statement is written out whole before its result is
        awaited.
        """
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    def existing_ids(self, ids: Sequence[UUID]) -> list[UUID]:
        """Which of these aggregates have any event (every aggregate has a version 1)."""
        if not ids:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_existing, (list(ids),))
            return [row["originator_id"] for row in curs.fetchall()]

    def _insert_stored_events(
        self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._insert_columns,
            (
                [s.originator_id for s in stored_events],
                [s.originator_version for s in stored_events],
                [s.topic for s in stored_events],
                [s.state for s in stored_events],
            ),
        )

    def _fetch_ids_after_insert_events(
        self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # Runs inside the insert's transaction, after LOCK TABLE ... IN EXCLUSIVE MODE.
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if not ids or not self.record_chain:
            return ids
        curs.execute(self._select_last_link)
        row = curs.fetchone()
        link = row["link"] if row else GENESIS
        links = []
        for position, s in zip(ids, stored_events, strict=True):
            payload = canonical(position, s.originator_id, s.originator_version, s.topic, s.state)
            link = next_link(link, payload)
            links.append(link)
        curs.execute(self._insert_links, (list(ids), links))
        return ids


def wakeup(url: StoreURL, channel: str) -> Any:
    """A :class:`~ledger.adapters.stores.wakeup.PostgresWakeup` on the events' channel."""
    from ledger.adapters.stores.wakeup import PostgresWakeup

    return PostgresWakeup(lambda: psycopg.connect(conninfo(url), autocommit=True), channel)


def conninfo(url: StoreURL) -> str:
    return psycopg.conninfo.make_conninfo(
        host=url.host,
        port=url.port,
        dbname=url.dbname,
        user=url.user or None,
        password=url.password or None,
        connect_timeout=5,
        application_name="ledger",
    )


class PostgresDatabase:
    """A plain connection to the ledger's PostgreSQL store, for views, leases and audits."""

    dialect = "postgresql"

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(conninfo(self.url), autocommit=True)
            if self.url.schema:
                conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(self.url.schema)))
                conn.execute(SQL("SET search_path TO {}").format(Identifier(self.url.schema)))
        except psycopg.Error as exc:
            raise self._unavailable(exc, connecting=True) from exc
        return conn

    def _unavailable(self, exc: Exception, *, connecting: bool = False) -> StoreUnavailable:
        text = " ".join(redact(str(exc)).split())
        if connecting:
            return StoreUnavailable(f"cannot reach the PostgreSQL store {self.url.redacted}: {text}")
        return StoreUnavailable(f"the PostgreSQL store {self.url.redacted} failed: {text}")

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, replaced by a new one when the server dropped the old (a restart)."""
        if not self._conn.closed and not self._conn.broken:
            try:
                self._conn.execute("SELECT 1")
            except psycopg.OperationalError:
                pass
            else:
                return self._conn
        self._conn.close()
        self._conn = self._connect()
        return self._conn

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a session advisory lock named ``name`` (creating tables from many processes at once)."""
        self.query("SELECT pg_advisory_lock(hashtext(?))", (name,))
        try:
            yield
        finally:
            self.query("SELECT pg_advisory_unlock(hashtext(?))", (name,))

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        conn = self._live()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield _Cursor(cur)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in autocommit; after a dropped connection it is sent once more on a new one."""
        for attempt in (1, 2):
            try:
                with self._conn.cursor() as cur:
                    cur.execute(self._sql(sql), params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError as exc:
                if attempt == 2 or not (self._conn.closed or self._conn.broken):
                    raise self._unavailable(exc) from exc
                self._live()
        raise AssertionError("unreachable")

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 10000) -> Iterator[tuple[Any, ...]]:
        conn = self._live()
        with conn.transaction(), conn.cursor(name=f"ledger_{uuid4().hex}") as cur:
            cur.itersize = size
            cur.execute(self._sql(sql), params)
            yield from cur

    def close(self) -> None:
        self._conn.close()


class _Cursor:
    """A psycopg cursor that takes the same ``?`` placeholders as sqlite3."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        self._cur.execute(PostgresDatabase._sql(sql), params)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(PostgresDatabase._sql(sql), rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """``COPY table (columns) FROM STDIN``: the quickest way in for many new rows."""
        with self._cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()
