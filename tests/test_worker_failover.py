"""Two following workers: one index writer at a time, and the standby takes over when the active one dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ledger.adapters.stores.lease import Lease
from ledger.bootstrap import open_ledger
from ledger.settings import Settings
from ledger.testing.remote import RemoteServer
from tests.conftest import make_line

SCRIPT = Path(__file__).with_name("follow_worker.py")


def wait_until(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


class TestFailover:
    def test_standby_takes_over_when_the_writer_dies(self, store_url: str, tmp_path: Path) -> None:
        """The lease names one writer; after SIGKILL the standby holds it and confirms new publishes."""
        server = RemoteServer.start(tmp_path / "remote", protocol="git")
        settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "a.git")
        workers: dict[str, subprocess.Popen[bytes]] = {}
        with server, open_ledger(settings) as ledger:
            lease = Lease(ledger.db, "observer")
            try:
                for name, clone in (("first", "a.git"), ("second", "b.git")):
                    holder = f"{socket.gethostname()}-{name}"
                    workers[holder] = subprocess.Popen(
                        [sys.executable, str(SCRIPT), store_url, server.url, str(tmp_path / clone), holder]
                    )
                    if name == "first":
                        assert wait_until(lambda: lease.state().holder is not None)
                ledger.publish(make_line("serde", "1.0.0"), "alice")
                assert wait_until(
                    lambda: ledger.audit(grace=0).consistent and not ledger.audit().discrepancies
                )
                active = lease.state().holder
                assert active in workers

                os.kill(workers[active].pid, signal.SIGKILL)
                workers[active].wait()
                killed_at = time.monotonic()
                ledger.publish(make_line("serde", "1.0.1"), "alice")
                assert wait_until(lambda: not ledger.audit().discrepancies)
                failover = time.monotonic() - killed_at
                standby = lease.state().holder
                assert standby is not None
                assert standby != active
                assert failover < 30
            finally:
                for process in workers.values():
                    if process.poll() is None:
                        process.terminate()
                        process.wait(timeout=10)
