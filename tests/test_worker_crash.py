"""The worker killed with SIGKILL at each step: a restart converges, nothing is wrongly closed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.settings import Settings
from ledger.testing.remote import RemoteServer
from tests.conftest import make_line

SCRIPT = Path(__file__).with_name("crash_worker.py")
PUBLISHED = [("kaze", "0.1.5"), ("kaze", "0.1.6"), ("wasmer-runtime-core", "0.14.0")]


def file_versions(server: RemoteServer, crate: str) -> list[str]:
    head = server.head()
    if head is None:
        return []
    repo = pygit2.Repository(str(server.bare_path))
    try:
        data = bytes(repo[head].peel(pygit2.Commit).tree[index_path(crate)].data)
    except KeyError:
        return []
    return [json.loads(line)["vers"] for line in data.splitlines()]


class TestCrashRecovery:
    @pytest.mark.parametrize("point", ["after_commit", "after_push", "after_readback"])
    def test_restart_converges_without_duplicates(self, point: str, store_url: str, tmp_path: Path) -> None:
        """A worker killed at any step leaves every job open; the next pass confirms each version exactly once."""
        with RemoteServer.start(tmp_path / "remote", protocol="http") as server:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                for crate, version in PUBLISHED:
                    ledger.publish(make_line(crate, version), "alice")

            crashed = subprocess.run(
                [sys.executable, str(SCRIPT), store_url, server.url, str(tmp_path / "clone.git"), point],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert crashed.returncode == -signal.SIGKILL, crashed.stderr

            with open_ledger(settings) as ledger:
                events = [e["event"] for e in ledger.history("kaze")]
                assert "IndexSyncCompleted" not in events
                assert "IndexPushConfirmed" not in events
                landed = file_versions(server, "kaze")
                assert landed == ([] if point == "after_commit" else ["0.1.5", "0.1.6"])

                result = ledger.sync()
                assert result.open_left == 0
                assert result.confirmed == 3  # one job per publish
                assert ledger.audit(grace=0).consistent

            assert file_versions(server, "kaze") == ["0.1.5", "0.1.6"]
            assert file_versions(server, "wasmer-runtime-core") == ["0.14.0"]
