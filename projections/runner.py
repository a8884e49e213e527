"""The batched catch-up runner: applies the event log to the views, a batch per transaction.

Each batch and its tracking position are written in one transaction, after checking that the
position did not move (another runner got there first), so every event is applied exactly
once however many processes catch up at the same time. An event that cannot be decoded or
applied stops the runner with :class:`ProjectionError` naming its log position: nothing is
ever skipped.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from eventsourcing.application import Application

from ledger.domain.errors import LedgerError
from ledger.ports import Cursor, Database, EventLog, LogRow
from ledger.progress import report
from projections.schema import (
    INDEXES,
    TABLES,
    UNSYNCED_TABLE,
    VIEW_TABLES,
    add_columns,
    consistency_view,
    has_table,
    unsynced_refresh,
)
from projections.views import Event, ViewBatch, compact_json, decode, event_time
from projections.views.state import PRIMARY, TargetScope

TRACKING_NAME = "views"
REBUILD_BATCH_SIZE = 10_000
"""Events per transaction when every view is rebuilt from position zero."""
BULK_CATCH_UP = 100_000
"""Events behind from which a catch-up works as a rebuild does (an import leaves the views
more than a million behind; kept batch by batch, on PostgreSQL that took minutes)."""
REBUILD_CACHE_MIB = 128
REBUILD_CHECKPOINT_PAGES = 262_144
"""Pages of SQLite's write-ahead log (4 KiB each) past which a rebuild copies it back."""


@contextmanager
def bulk_load(db: Database) -> Iterator[None]:
    """Settings of the views' connection while a rebuild loads every view, restored after.

    SQLite: a page cache of ``REBUILD_CACHE_MIB`` (the default 2 MiB makes the inserts into
    the growing tables read their pages again), and the write-ahead log copied back into the
    database once it holds ``REBUILD_CHECKPOINT_PAGES`` instead of 1,000 pages: each batch
    writes tens of MiB, and copying them back after every commit (with an ``fsync``) copied
    the pages many batches touch once a batch; the log is copied back and emptied at the end.
    PostgreSQL: commits that do not wait for their WAL to reach the disk. A crash may lose the
    last batches, each whole with its tracking position, and the rebuild goes on from there.
    """
    if db.dialect == "sqlite":
        cache = int(db.query("PRAGMA cache_size")[0][0])
        checkpoint = int(db.query("PRAGMA wal_autocheckpoint")[0][0])
        settings = [f"PRAGMA cache_size = {-REBUILD_CACHE_MIB * 1024}"]
        settings.append(f"PRAGMA wal_autocheckpoint = {REBUILD_CHECKPOINT_PAGES}")
        restores = [f"PRAGMA cache_size = {cache}", f"PRAGMA wal_autocheckpoint = {checkpoint}"]
        restores.append("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        settings, restores = ["SET synchronous_commit = off"], ["RESET synchronous_commit"]
    for setting in settings:
        db.query(setting)
    try:
        yield
    finally:
        for restore in restores:
            db.query(restore)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while batches are folded.

    Decoded events and their rows make no reference cycles, so reference counting frees them;
    the collector's passes over each batch's many small objects cost a third of a rebuild.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ProjectionError(LedgerError):
    """An event the views cannot apply; the runner stops at it."""

    exit_code = 1


class ViewRunner:
    """Keeps the views of one store up to date with its event log."""

    def __init__(
        self,
        app: Application[Any],
        db: Database,
        log: EventLog,
        *,
        batch_size: int = 2000,
        scope: TargetScope = PRIMARY,
    ) -> None:
        self.app = app
        self.db = db
        self.log = log
        self.batch_size = batch_size
        self.scope = scope
        """The index target these views are of (a ledger with several keeps views for each)."""

    # -- schema -----------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create (or bring up to date) every view table; safe while batches are applied.

        When the views exist, the tracking row is locked first, as every batch locks it first:
        a ledger opened while another applies a batch waits for that batch, instead of taking
        the index locks of its ``CREATE INDEX IF NOT EXISTS`` and then waiting for the row while
        the batch waits for those locks (a deadlock PostgreSQL broke under ``ledger serve``,
        whose serving threads open their ledgers while the worker catches up).
        """
        with self.db.transaction() as cur:
            if has_table(self.db, "view_tracking", cur):
                self._tracked_for_update(cur)
            self._create_view_tables(cur)
            self._ensure_unsynced(cur)

    def _create_view_tables(self, cur: Cursor, *, indexes: bool = True) -> None:
        for statement in TABLES + (INDEXES if indexes else []):
            cur.execute(statement)
        add_columns(cur, self.db.dialect)
        cur.execute(consistency_view(self.db.dialect))
        cur.execute(
            "INSERT INTO view_tracking (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
            (TRACKING_NAME,),
        )

    def _ensure_unsynced(self, cur: Cursor) -> None:
        """Create ``view_unsynced`` from the views as they stand, unless it exists.

        Batches keep it up to date once it exists; while it does not (a rebuild is replaying
        the log, or the views predate it), they leave it alone and the audit compares every
        crate. The tracking row is locked first, so no batch is applied meanwhile.
        """
        self._tracked_for_update(cur)
        if not has_table(self.db, "view_unsynced", cur):
            cur.execute(UNSYNCED_TABLE)
            cur.execute(unsynced_refresh(None))
            if self.db.dialect == "postgresql":
                cur.execute("ANALYZE view_unsynced")

    def drop_tables(self) -> None:
        with self.db.transaction() as cur:
            cur.execute("DROP VIEW IF EXISTS consistency")
            for table in VIEW_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {table}")

    def rebuild(self) -> int:
        """Drop the views and their tracking, then replay the whole log from position zero."""
        self.drop_tables()
        with self.db.transaction() as cur:
            self._create_view_tables(cur, indexes=False)
        with _collector_paused():
            return self._catch_up_in_bulk()

    def _catch_up_in_bulk(self) -> int:
        """Catch up from far behind (a rebuild, an import) the way a rebuild does.

        Batches of ``REBUILD_BATCH_SIZE`` events under :func:`bulk_load`, with no
        ``view_unsynced`` to keep batch by batch: it is dropped first and made once at the end
        from the views as they then stand, as are the secondary indexes a rebuild leaves out;
        also when the catch-up stops half way, so the views are left whole at their last batch.
        A batch that another runner applies meanwhile keeps ``view_unsynced`` from the moment
        it exists again.
        """
        with self.db.transaction() as cur:
            self._tracked_for_update(cur)
            cur.execute("DROP TABLE IF EXISTS view_unsynced")
        batch_size = self.batch_size
        self.batch_size = max(batch_size, REBUILD_BATCH_SIZE)
        try:
            with bulk_load(self.db):
                return self._catch_up(None, None, self.position())
        finally:
            self.batch_size = batch_size
            with self.db.transaction() as cur:
                for statement in INDEXES:
                    cur.execute(statement)
                self._ensure_unsynced(cur)
                if self.db.dialect == "postgresql":
                    # New tables have no statistics until autovacuum gets to them, and without
                    # any the planner joins whole tables where the audit needs a few rows of each.
                    cur.execute(f"ANALYZE {', '.join(VIEW_TABLES)}")

    # -- positions --------------------------------------------------------------------------

    def position(self) -> int:
        rows = self.db.query("SELECT position FROM view_tracking WHERE name = ?", (TRACKING_NAME,))
        return int(rows[0][0]) if rows else 0

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def lag(self) -> int:
        """How many log positions the views are behind the log."""
        return max(0, self.head() - self.position())

    # -- applying ---------------------------------------------------------------------------

    def catch_up(self, *, until: int | None = None, until_time: datetime | None = None) -> int:
        """Apply every event after the tracked position (up to ``until`` or ``until_time``).

        At least ``BULK_CATCH_UP`` events behind, all the way, as a rebuild does (see
        :meth:`_catch_up_in_bulk`).
        """
        with _collector_paused():
            start = self.position()
            if until is None and until_time is None and self.head() - start >= BULK_CATCH_UP:
                return self._catch_up_in_bulk()
            return self._catch_up(until, until_time, start)

    def _catch_up(self, until: int | None, until_time: datetime | None, start: int) -> int:
        """On PostgreSQL, while a whole batch is applied, the next one is read and decoded in a
        thread: the server's work on the one overlaps the decoding of the other. SQLite works in
        this process, and a reading thread there only contends for the interpreter with the
        writing one (a rebuild of the baseline import took 13 % longer with it, and 35 % more CPU)."""
        read_ahead = self.db.dialect == "postgresql"
        total = until if until is not None else self.head()
        ahead: Future[list[Event]] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="views-reader") as reader:
            while True:
                if until is not None and start >= until:
                    return start
                events = ahead.result() if ahead is not None else self._read(start, until)
                ahead = None
                if not events:
                    return start
                stop_early = False
                if until_time is not None:
                    kept = list(itertools.takewhile(lambda e: event_time(e[3]) <= until_time, events))
                    stop_early = len(kept) < len(events)
                    events = kept
                if stop_early:
                    if events:
                        self._apply(start, events)
                    return self.position()
                if read_ahead and len(events) == self.batch_size:
                    ahead = reader.submit(self._read, events[-1][0], until)
                if self._apply(start, events):
                    start = events[-1][0]
                    report("views: events", start, total)
                else:  # another runner applied it first: go on from where it got to
                    ahead = None
                    start = self.position()

    def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Read-your-writes: catch up until the views include ``position``."""
        deadline = time.monotonic() + timeout
        while self.catch_up() < position:
            if time.monotonic() > deadline:
                msg = f"the views did not reach log position {position} within {timeout} s"
                raise ProjectionError(msg, position=position)
            time.sleep(0.01)

    def _read(self, start: int, until: int | None) -> list[Event]:
        """The next batch of events after ``start``, decoded."""
        return self._decode(self.log.rows(start, self.batch_size, until))

    def _decode(self, rows: list[LogRow]) -> list[Event]:
        mapper, decoded = self.app.mapper, []
        compact = compact_json(mapper)
        for row in rows:
            try:
                decoded.append(decode(mapper, row, compact=compact))
            except Exception as exc:
                position, topic = row[0], row[2]
                msg = f"cannot decode the event at log position {position} ({topic}): {exc}"
                raise ProjectionError(msg, position=position, topic=topic) from exc
        return decoded

    def _apply(self, start: int, events: list[Event]) -> bool:
        """Apply a batch that follows position ``start``; False if another runner moved it first."""
        try:
            with self.db.transaction() as cur:
                if self._tracked_for_update(cur) != start:
                    return False
                batch = ViewBatch(
                    track_unsynced=has_table(self.db, "view_unsynced", cur),
                    dialect=self.db.dialect,
                    scope=self.scope,
                )
                for event in events:
                    batch.apply(event, cur)
                batch.flush(cur)
                self._track(cur, batch.last_position)
            return True
        except LedgerError:
            raise
        except Exception as exc:
            position = self._culprit(start, events)
            msg = f"cannot apply the event at log position {position} to the views: {exc}"
            raise ProjectionError(msg, position=position) from exc

    def _culprit(self, start: int, events: list[Event]) -> int:
        """Apply the batch one event at a time, then roll back: the first that fails is named."""

        class _Rollback(Exception):
            pass

        culprit = events[0][0]
        try:
            with self.db.transaction() as cur:
                track_unsynced = has_table(self.db, "view_unsynced", cur)
                for event in events:
                    culprit = event[0]
                    batch = ViewBatch(
                        track_unsynced=track_unsynced, dialect=self.db.dialect, scope=self.scope
                    )
                    batch.apply(event, cur)
                    batch.flush(cur)
                raise _Rollback
        except _Rollback:
            return events[-1][0]
        except Exception:  # noqa: BLE001  (any failure names the event that caused it)
            return culprit

    def _tracked_for_update(self, cur: Cursor) -> int:
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        cur.execute(f"SELECT position FROM view_tracking WHERE name = ?{lock}", (TRACKING_NAME,))
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def _track(self, cur: Cursor, position: int) -> None:
        cur.execute(
            "INSERT INTO view_tracking (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (TRACKING_NAME, position),
        )
