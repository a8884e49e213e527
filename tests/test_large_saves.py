"""Large saves: one transaction of tens of megabytes is written whole, on both stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.bootstrap import open_ledger
from ledger.settings import Settings, StoreURL
from tests.conftest import pg_admin

HANG_S = 120.0
"""How long a save may take before the test calls it stuck (it takes about a second)."""


def _stop_backends(schema: str) -> None:
    """End the server sessions of a stuck save, so that its schema can be dropped."""
    with pg_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE %s",
            (f"%{schema}%",),
        )


def test_a_save_of_fifty_megabytes_is_recorded_whole(store_url: str) -> None:
    """500 events of 100 kB in one save: every one is stored, with its chain link.

    On PostgreSQL the library sends a save through psycopg's pipeline mode, which left the end
    of such a statement unsent and waited for its result for ever (the server waiting in
    ``ClientRead``); the ledger's recorder sends it outside a pipeline.
    """
    with open_ledger(Settings(store=store_url)) as ledger:
        recorder = ledger.app.recorder
        events = [
            StoredEvent(uuid4(), 1, "ledger:Filler", os.urandom(50_000).hex().encode()) for _ in range(500)
        ]
        saved: list[Sequence[int] | None] = []
        failed: list[BaseException] = []

        def save() -> None:
            try:
                saved.append(recorder.insert_events(events))
            except BaseException as exc:  # reported below
                failed.append(exc)

        worker = threading.Thread(target=save, daemon=True)
        worker.start()
        worker.join(HANG_S)
        if worker.is_alive():
            schema = StoreURL.parse(store_url).schema
            if schema:
                _stop_backends(schema)
            pytest.fail(f"a save of 50 MB did not return within {HANG_S:.0f} s")
        assert not failed, failed
        positions = list(saved[0] or [])
        assert positions == list(range(1, 501))
        report = ledger.verify()
        assert report.ok, report.broken
        assert report.events == 500
