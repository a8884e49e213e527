"""Opening a ledger while another process applies a batch of views: no deadlock.

A batch locks the views' tracking row first, then writes view tables; opening a ledger creates
the tables if missing (``CREATE INDEX IF NOT EXISTS`` locks each table) and then locks the same
row. Taken in that order by both, the opening waits for the batch; taken in the other order,
PostgreSQL found a deadlock under ``ledger serve`` and broke it by failing one of them.
"""

from __future__ import annotations

import threading
import time

from ledger.bootstrap import open_ledger
from ledger.settings import Settings
from projections.runner import TRACKING_NAME
from tests.conftest import make_line


def test_a_ledger_opened_during_a_batch_waits_for_it(store_url: str) -> None:
    settings = Settings(store=store_url)
    errors: list[BaseException] = []
    opened = threading.Event()

    def open_another() -> None:
        try:
            with open_ledger(settings):
                opened.set()
        except BaseException as exc:
            errors.append(exc)

    with open_ledger(settings) as ledger:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        lock = " FOR UPDATE" if ledger.db.dialect == "postgresql" else ""
        with ledger.db.transaction() as cur:  # a batch under way, as the runner applies one
            cur.execute(f"SELECT position FROM view_tracking WHERE name = ?{lock}", (TRACKING_NAME,))
            other = threading.Thread(target=open_another, daemon=True)
            other.start()
            time.sleep(0.5)  # the other opening has reached whatever lock it waits for
            # then writes the view tables, view_jobs among them (the table with secondary indexes)
            cur.execute("UPDATE view_versions SET actor = actor WHERE crate_key = ?", ("nothing",))
            cur.execute("UPDATE view_jobs SET state = state WHERE crate_key = ?", ("nothing",))
        other.join(timeout=60)
        assert not errors, errors
        assert opened.is_set()
        assert ledger.audit().counts["pending"] == 1
