"""Direct reads of the event table, for what the library's recorders do not offer.

Positions with aggregates' events (history), the log as plain rows for the views (no domain
objects, no UUIDs parsed), and the hash chain walk (verify). The table and column names differ
by store; everything else is the same SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Notification
from eventsourcing.sqlite import SQLiteApplicationRecorder

from ledger.adapters.stores.chain import canonical, verify_chain
from ledger.ports import ChainReport, Database, LogRow

EVENTS_TABLE = {"sqlite": "stored_events", "postgresql": "publicationledger_events"}
CHAIN_TABLE = {"sqlite": "event_chain", "postgresql": "publicationledger_events_chain"}
POSITION = {"sqlite": "rowid", "postgresql": "notification_id"}


def _id(db: Database, value: UUID) -> str | UUID:
    return value.hex if db.dialect == "sqlite" else value


def _uuid(value: str | UUID) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def notifications_of(db: Database, ids: Sequence[UUID]) -> list[Notification]:
    """Every stored event of these aggregates, with its log position, in log order."""
    if not ids:
        return []
    table, pos = EVENTS_TABLE[db.dialect], POSITION[db.dialect]
    marks = ", ".join("?" * len(ids))
    rows = db.query(
        f"SELECT {pos}, originator_id, originator_version, topic, state FROM {table} "
        f"WHERE originator_id IN ({marks}) ORDER BY {pos}",
        [_id(db, i) for i in ids],
    )
    return [
        Notification(
            id=r[0], originator_id=_uuid(r[1]), originator_version=r[2], topic=r[3], state=bytes(r[4])
        )
        for r in rows
    ]


def notifications_with_topic(db: Database, topic: str) -> Iterator[Notification]:
    """Every stored event of one topic, with its log position, in log order (read in pages)."""
    table, pos = EVENTS_TABLE[db.dialect], POSITION[db.dialect]
    last = 0
    while True:
        rows = db.query(
            f"SELECT {pos}, originator_id, originator_version, topic, state FROM {table} "
            f"WHERE topic = ? AND {pos} > ? ORDER BY {pos} LIMIT 1000",
            (topic, last),
        )
        for r in rows:
            yield Notification(
                id=r[0], originator_id=_uuid(r[1]), originator_version=r[2], topic=r[3], state=bytes(r[4])
            )
        if len(rows) < 1000:
            return
        last = rows[-1][0]


def count_with_topic(db: Database, topic: str) -> int:
    """How many stored events have this topic."""
    table = EVENTS_TABLE[db.dialect]
    return int(db.query(f"SELECT COUNT(*) FROM {table} WHERE topic = ?", (topic,))[0][0])


def log_rows(recorder: ApplicationRecorder, start: int, limit: int, stop: int | None = None) -> list[LogRow]:
    """Up to ``limit`` stored events after log position ``start`` (and at most ``stop``), in order.

    Read through the recorder's own connection, so a runner whose views live elsewhere (time
    travel's in-memory database) reads the same log. The originator id is the stored text: the
    hex on SQLite, the canonical form on PostgreSQL.
    """
    bound = "" if stop is None else " AND {pos} <= {mark}"
    params = [start] if stop is None else [start, stop]
    if isinstance(recorder, SQLiteApplicationRecorder):
        sql = (
            f"SELECT rowid, originator_id, topic, state FROM {recorder.events_table_name} "
            f"WHERE rowid > ?{bound.format(pos='rowid', mark='?')} ORDER BY rowid LIMIT ?"
        )
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(sql, [*params, limit])
            rows: list[LogRow] = c.fetchall()  # sqlite3.Row: a sequence like the tuple
            return rows
    from eventsourcing.postgres import PostgresApplicationRecorder

    assert isinstance(recorder, PostgresApplicationRecorder)
    table = ".".join(_quoted(name) for name in (recorder.datastore.schema, recorder.events_table_name))
    sql = (
        f"SELECT notification_id AS p, originator_id::text AS o, topic AS t, state AS s FROM {table} "
        f"WHERE notification_id > %s{bound.format(pos='notification_id', mark='%s')} "
        "ORDER BY notification_id LIMIT %s"
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(sql, [*params, limit], prepare=True)
        return [(r["p"], r["o"], r["t"], r["s"]) for r in cur.fetchall()]


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def walk_chain(db: Database) -> ChainReport:
    """Recompute the hash chain over every stored event and compare it with the recorded links."""
    table, chain, pos = EVENTS_TABLE[db.dialect], CHAIN_TABLE[db.dialect], POSITION[db.dialect]
    rows = db.stream(
        f"SELECT e.{pos}, e.originator_id, e.originator_version, e.topic, e.state, c.position, c.link "
        f"FROM {table} e FULL OUTER JOIN {chain} c ON c.position = e.{pos} "
        f"ORDER BY COALESCE(e.{pos}, c.position)"
    )
    return verify_chain(_joined(rows))


def _joined(
    rows: Iterator[tuple[Any, ...]],
) -> Iterator[tuple[int | None, bytes | None, int | None, str | None]]:
    for pos, oid, version, topic, state, link_pos, link in rows:
        if pos is None:
            yield None, None, int(link_pos), str(link)
            continue
        payload = canonical(int(pos), _uuid(oid), int(version), str(topic), bytes(state))
        yield int(pos), payload, (None if link_pos is None else int(link_pos)), link


class SqlEventLog:
    """The :class:`~ledger.ports.EventLog` of a store: plain SQL on its connection, and the
    stored events as rows through the event store's own recorder (see :func:`log_rows`)."""

    def __init__(self, db: Database, recorder: ApplicationRecorder) -> None:
        self.db = db
        self.recorder = recorder

    def rows(self, start: int, limit: int, stop: int | None = None) -> list[LogRow]:
        return log_rows(self.recorder, start, limit, stop)

    def notifications_of(self, ids: Sequence[UUID]) -> list[Notification]:
        return notifications_of(self.db, ids)

    def notifications_with_topic(self, topic: str) -> Iterator[Notification]:
        return notifications_with_topic(self.db, topic)

    def count_with_topic(self, topic: str) -> int:
        return count_with_topic(self.db, topic)

    def chain_link(self, position: int) -> str | None:
        """The hash chain's link at ``position``: the whole log up to it, in one value."""
        chain = CHAIN_TABLE[self.db.dialect]
        rows = self.db.query(f"SELECT link FROM {chain} WHERE position = ?", (position,))
        return str(rows[0][0]) if rows else None

    def walk_chain(self) -> ChainReport:
        return walk_chain(self.db)
