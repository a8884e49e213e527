"""The batched catch-up runner: applies the event log to the views, a batch per transaction.

Each batch and its tracking position are written in one transaction, after checking that the
position did not move (another runner got there first), so every event is applied exactly
once however many processes catch up at the same time. An event that cannot be decoded or
applied stops the runner with :class:`ProjectionError` naming its log position: nothing is
ever skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification

from ledger.application import PublicationLedger
from ledger.errors import LedgerError
from ledger.ports import Cursor, Database
from projections.schema import (
    TABLES,
    UNSYNCED_TABLE,
    VIEW_TABLES,
    consistency_view,
    has_table,
    unsynced_refresh,
)
from projections.views import ViewBatch

TRACKING_NAME = "views"
REBUILD_BATCH_SIZE = 10_000
"""Events per transaction when every view is rebuilt from position zero."""


class ProjectionError(LedgerError):
    """An event the views cannot apply; the runner stops at it."""

    exit_code = 1


class ViewRunner:
    """Keeps the views of one store up to date with its event log."""

    def __init__(self, app: PublicationLedger, db: Database, *, batch_size: int = 2000) -> None:
        self.app = app
        self.db = db
        self.batch_size = batch_size

    # -- schema -----------------------------------------------------------------------------

    def create_tables(self) -> None:
        with self.db.transaction() as cur:
            self._create_view_tables(cur)
            self._ensure_unsynced(cur)

    def _create_view_tables(self, cur: Cursor) -> None:
        for statement in TABLES:
            cur.execute(statement)
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
        """Drop the views and their tracking, then replay the whole log from position zero.

        ``view_unsynced`` is made once at the end, from the rebuilt views, instead of batch by
        batch; a rebuild that stops half way leaves it to the next :meth:`create_tables`.
        """
        self.drop_tables()
        with self.db.transaction() as cur:
            self._create_view_tables(cur)
        batch_size = self.batch_size
        self.batch_size = max(batch_size, REBUILD_BATCH_SIZE)
        try:
            position = self.catch_up()
        finally:
            self.batch_size = batch_size
        with self.db.transaction() as cur:
            self._ensure_unsynced(cur)
            if self.db.dialect == "postgresql":
                # New tables have no statistics until autovacuum gets to them, and without any
                # the planner joins whole tables where the audit needs a few rows of each.
                cur.execute(f"ANALYZE {', '.join(VIEW_TABLES)}")
        return position

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
        """Apply every event after the tracked position (up to ``until`` or ``until_time``)."""
        while True:
            start = self.position()
            if until is not None and start >= until:
                return start
            notifications = self.app.recorder.select_notifications(
                start=start, limit=self.batch_size, stop=until, inclusive_of_start=False
            )
            if not notifications:
                return start
            events = self._decode(notifications)
            stop_early = False
            if until_time is not None:
                kept = list(itertools.takewhile(lambda pe: pe[1].timestamp <= until_time, events))
                stop_early = len(kept) < len(events)
                events = kept
            if events:
                self._apply(start, events)
            if stop_early:
                return self.position()

    def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Read-your-writes: catch up until the views include ``position``."""
        deadline = time.monotonic() + timeout
        while self.catch_up() < position:
            if time.monotonic() > deadline:
                msg = f"the views did not reach log position {position} within {timeout} s"
                raise ProjectionError(msg, position=position)
            time.sleep(0.01)

    def _decode(self, notifications: Sequence[Notification]) -> list[tuple[int, Any]]:
        decoded = []
        for n in notifications:
            try:
                decoded.append((n.id, self.app.mapper.to_domain_event(n)))
            except Exception as exc:
                msg = f"cannot decode the event at log position {n.id} ({n.topic}): {exc}"
                raise ProjectionError(msg, position=n.id, topic=n.topic) from exc
        return decoded

    def _apply(self, start: int, events: list[tuple[int, Any]]) -> None:
        try:
            with self.db.transaction() as cur:
                if self._tracked_for_update(cur) != start:
                    return  # another runner applied this batch first
                batch = ViewBatch(track_unsynced=has_table(self.db, "view_unsynced", cur))
                for position, event in events:
                    batch.apply(position, event, cur)
                batch.flush(cur)
                self._track(cur, batch.last_position)
        except LedgerError:
            raise
        except Exception as exc:
            position = self._culprit(start, events)
            msg = f"cannot apply the event at log position {position} to the views: {exc}"
            raise ProjectionError(msg, position=position) from exc

    def _culprit(self, start: int, events: list[tuple[int, Any]]) -> int:
        """Apply the batch one event at a time, then roll back: the first that fails is named."""

        class _Rollback(Exception):
            pass

        culprit = events[0][0]
        try:
            with self.db.transaction() as cur:
                track_unsynced = has_table(self.db, "view_unsynced", cur)
                for position, event in events:
                    culprit = position
                    batch = ViewBatch(track_unsynced=track_unsynced)
                    batch.apply(position, event, cur)
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
