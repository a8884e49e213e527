"""PostgreSQL restarted or stopped under a running ledger: clear failures, no duplicates, self-healing."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.bootstrap import open_ledger
from ledger.domain.errors import AlreadyPublished, StoreUnavailable
from ledger.entrypoints.cli import app
from ledger.settings import Settings
from ledger.testing.remote import RemoteServer
from tests.conftest import make_line

pytestmark = pytest.mark.postgres


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0


@pytest.fixture
def server_control(pg_url: str) -> Iterator[None]:
    """Skip where the cluster cannot be controlled from here; always leave it running."""
    if not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        pytest.skip("the PostgreSQL cluster is not controllable from this test")
    try:
        yield
    finally:
        if not pg_ready():
            pg_ctl("start")
        deadline = time.monotonic() + 30
        while not pg_ready() and time.monotonic() < deadline:
            time.sleep(0.2)


def publish_until_recorded(ledger: object, line: dict[str, object], attempts: int = 50) -> int:
    """Retry a publish the way a registry would, until the store takes it or says it has it."""
    failures = 0
    for _ in range(attempts):
        try:
            ledger.publish(line, "alice")  # type: ignore[attr-defined]
            return failures
        except AlreadyPublished:
            return failures
        except StoreUnavailable:
            failures += 1
            time.sleep(0.2)
    pytest.fail("the store never came back")


class TestRestart:
    def test_publisher_worker_and_views_resume_after_a_restart(
        self, pg_url: str, server_control: None, tmp_path: Path
    ) -> None:
        """After a restart, a retried publish is recorded exactly once and the worker and views carry on."""
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        settings = Settings(store=pg_url, remote=server.url, index_dir=tmp_path / "clone.git")
        with server, open_ledger(settings) as ledger:
            ledger.publish(make_line("kaze", "0.1.5"), "alice")
            assert ledger.sync().confirmed == 1

            pg_ctl("restart")
            publish_until_recorded(ledger, make_line("kaze", "0.1.6"))

            published = [e for e in ledger.history("kaze", "0.1.6") if e["event"] == "VersionPublished"]
            assert len(published) == 1
            result = ledger.sync()
            assert result.open_left == 0
            assert ledger.audit(grace=0).consistent
            assert ledger.verify().ok

    def test_cli_says_unavailable_while_the_server_is_down(
        self, pg_url: str, server_control: None, tmp_path: Path
    ) -> None:
        """While PostgreSQL is stopped the CLI exits 3 with a clear message; afterwards nothing is missing."""
        runner = CliRunner()
        line = tmp_path / "line.json"
        line.write_text(
            '{"name":"kaze","vers":"0.1.6","deps":[],"cksum":"' + "a" * 64 + '","features":{},"yanked":false}'
        )
        assert runner.invoke(app, ["--store", pg_url, "init"]).exit_code == 0
        pg_ctl("stop")
        down = runner.invoke(app, ["--store", pg_url, "--json", "publish", str(line)])
        assert down.exit_code == 3
        assert "PostgreSQL" in down.stderr
        pg_ctl("start")
        up = runner.invoke(app, ["--store", pg_url, "publish", str(line)])
        assert up.exit_code == 0, up.stderr
        again = runner.invoke(app, ["--store", pg_url, "publish", str(line)])
        assert again.exit_code == 2
        assert "already published" in again.stderr
