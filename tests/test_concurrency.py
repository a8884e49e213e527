"""Several processes publishing the same version at once: exactly one wins, the rest are told why.

Each publisher is a separate Python process running the ``ledger`` command line. Opening a store
creates its tables, so the publishers open theirs one at a time (under a file lock), report
ready, and then all read the same line from stdin at the moment the test releases them: the race
is on the publish itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.settings import Settings

PUBLISHERS = 5
LineFactory = Callable[..., dict[str, Any]]

PUBLISHER = """
import fcntl, sys
from ledger.entrypoints import cli
from ledger.bootstrap import build_ledger
from ledger.settings import Settings

store, lock_path = sys.argv[1], sys.argv[2]
with open(lock_path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    opened = build_ledger(Settings(store=store))
    fcntl.flock(lock, fcntl.LOCK_UN)
cli.Session.ledger = lambda self: opened
print("ready", file=sys.stderr, flush=True)
sys.argv = ["ledger", "--store", store, "--actor", "racer", "--json", "publish", "-"]
cli.main()
"""


def race(store: str, line: dict[str, Any], lock: Path) -> list[tuple[int, dict[str, Any]]]:
    """Start every publisher, wait until each is ready, then hand them the same line at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, store, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(PUBLISHERS)
    ]
    for process in processes:
        assert process.stderr is not None
        assert process.stderr.readline() == b"ready\n"
    data = json.dumps(line).encode()
    for process in processes:  # each is blocked reading stdin until now
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.close()
        process.stdin = None  # communicate() must not flush it again
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert stdout, stderr
        results.append((process.returncode, json.loads(stdout)))
    return results


def check_one_winner(store: str, results: list[tuple[int, dict[str, Any]]]) -> None:
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [2] * (PUBLISHERS - 1), results
    losers = [doc["error"] for code, doc in results if code]
    assert all(e["type"] == "AlreadyPublished" for e in losers), losers
    assert all("already published" in e["message"] for e in losers), losers
    winner = next(doc for code, doc in results if code == 0)
    with open_ledger(Settings(store=store)) as ledger:
        events = ledger.timeline()
    published = [(r["crate"], r["version"], r["job"]) for r in events if r["event"] == "VersionPublished"]
    assert published == [("kaze", "0.1.6", winner["job"])]
    assert [r["job"] for r in events if r["event"] == "IndexSyncEnqueued"] == [winner["job"]]


class TestConcurrentPublish:
    @pytest.mark.postgres
    def test_one_of_many_postgres_publishers_wins(
        self, pg_url: str, line: LineFactory, tmp_path: Path
    ) -> None:
        """On PostgreSQL, processes racing to publish one version record it once; the others exit 2."""
        check_one_winner(pg_url, race(pg_url, line("kaze", "0.1.6"), tmp_path / "open.lock"))

    def test_one_of_many_sqlite_publishers_wins(
        self, sqlite_url: str, line: LineFactory, tmp_path: Path
    ) -> None:
        """On one SQLite file, processes racing to publish one version record it once; the others exit 2."""
        check_one_winner(sqlite_url, race(sqlite_url, line("kaze", "0.1.6"), tmp_path / "open.lock"))
