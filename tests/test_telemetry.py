"""The scrape endpoint of a following worker: what it shows during a 2020-02-20 outage and after.

A real worker follows the log in a thread of its own while the index server answers pushes with
no status (the push is dropped, the pusher is not told). ``GET /metrics`` is scraped over HTTP
as Prometheus would: the stuck gauge and the failed-push counter rise; once the server heals the
job is confirmed, the stuck gauge falls to 0 and the failure counter stops. ``promtool check
metrics`` (when installed) accepts what the endpoint serves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.adapters.telemetry import serve_metrics, worker_registry
from ledger.bootstrap import open_ledger
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import Mode, RemoteServer
from tests.conftest import make_line

OPTIONS = WorkerOptions(backoff_base=1.0, backoff_cap=0.2)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return str(answer.read().decode())


def sample(text: str, name: str) -> float:
    """The value of one sample line, ``name`` with its labels as written."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} in the scrape")


STUCK = 'ledger_versions_out_of_sync{class="stuck"}'
NO_STATUS = 'ledger_push_failures_total{reason="no_status"}'


def wait_for(port: int, check: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(port)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last scrape:\n{text}")
        time.sleep(0.1)


def test_a_no_status_outage_shows_on_the_endpoint_and_clears_after_recovery(
    store_url: str, tmp_path: Path
) -> None:
    server = RemoteServer.start(tmp_path / "remote", protocol="http")
    settings = Settings(
        store=store_url, remote=server.url, index_dir=tmp_path / "clone.git", connect_timeout_ms=1000
    )
    registry, metrics = worker_registry(lambda: open_ledger(settings))
    http = serve_metrics(registry, 0)
    port = http.port
    stop = threading.Event()

    def follow() -> None:
        with open_ledger(settings) as ledger:
            SyncWorker(ledger, ledger.index(), options=OPTIONS, metrics=metrics).follow(poll=0.05, stop=stop)

    thread = threading.Thread(target=follow, name="following-worker")
    try:
        with open_ledger(settings) as ledger:
            ledger.publish(make_line("kaze", "0.1.0"), "alice")
            thread.start()
            healthy = wait_for(
                port, lambda t: sample(t, "ledger_jobs_confirmed_total") >= 1, "a first confirmation"
            )
            assert sample(healthy, "ledger_remote_up") == 1
            assert sample(healthy, "ledger_store_up") == 1

            server.set_mode(Mode.NO_STATUS)
            ledger.publish(make_line("kaze", "0.1.1"), "alice")
            outage = wait_for(
                port, lambda t: sample(t, NO_STATUS) >= 2 and sample(t, STUCK) >= 1, "the outage to show"
            )
            assert sample(outage, STUCK) == 1
            later = wait_for(
                port, lambda t: sample(t, NO_STATUS) > sample(outage, NO_STATUS), "more failures"
            )
            assert sample(later, 'ledger_pushes_total{reported="no_status"}') >= 2  # recorded as said

            server.set_mode(Mode.OK)
            healed = wait_for(port, lambda t: sample(t, STUCK) == 0, "recovery")
            assert sample(healed, "ledger_jobs_confirmed_total") == 2
            time.sleep(0.5)
            settled = scrape(port)
            assert sample(settled, NO_STATUS) == sample(healed, NO_STATUS)  # the counter stopped
            assert sample(settled, "ledger_publish_to_confirmed_seconds_count") == 2
            assert ledger.audit().consistent
        if shutil.which("promtool"):
            checked = subprocess.run(
                ["promtool", "check", "metrics"], input=settled, capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        http.close()
        server.stop()


def test_the_endpoint_answers_while_the_store_is_down(tmp_path: Path) -> None:
    """No store to read: the scrape still answers, and says so."""
    settings = Settings(store="postgresql://ledger@127.0.0.1:1/none", connect_timeout_ms=300)
    registry, _ = worker_registry(lambda: open_ledger(settings))
    http = serve_metrics(registry, 0)
    try:
        text = scrape(http.port)
        assert sample(text, "ledger_store_up") == 0
        assert 'ledger_push_failures_total{reason="unreachable"} 0.0' in text
    finally:
        http.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_refuses_a_broken_exposition() -> None:
    """The promtool check above can fail: a counter without its suffix is refused."""
    broken = "# HELP ledger_x x\n# TYPE ledger_x counter\nledger_x 1\n"
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=broken, capture_output=True, text=True, check=False
    )
    assert checked.returncode != 0


class TestLogsAndVersion:
    def test_version(self) -> None:
        from importlib.metadata import version

        from typer.testing import CliRunner

        from ledger.entrypoints.cli import app

        result = CliRunner().invoke(app, ["--version"])
        assert (result.exit_code, result.stdout) == (0, f"ledger {version('ledger')}\n")

    def test_log_format_and_level_from_the_environment(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from ledger.entrypoints.cli import app

        store = f"sqlite:///{tmp_path / 'l.db'}"
        line = (
            '{"name":"kaze","vers":"0.1.6","deps":[],"cksum":"'
            + "6f" * 32
            + '","features":{},"yanked":false}'
        )
        runner = CliRunner()
        text = runner.invoke(
            app,
            ["--store", store, "publish", "-"],
            input=line,
            env={"LEDGER_LOG_FORMAT": "text", "LEDGER_LOG_LEVEL": "info"},
        )
        assert text.exit_code == 0, text.stderr
        assert "info VersionPublished crate=kaze version=0.1.6 actor=" in text.stderr
        jsonl = runner.invoke(
            app, ["--store", store, "yank", "kaze", "0.1.6"], env={"LEDGER_LOG_LEVEL": "INFO"}
        )
        logged = [json.loads(row) for row in jsonl.stderr.splitlines() if row.startswith("{")]
        assert any(r["step"] == "VersionYanked" and r["crate"] == "kaze" for r in logged)
        bad = runner.invoke(app, ["--store", store, "audit"], env={"LEDGER_LOG_FORMAT": "xml"})
        assert bad.exit_code == 2
        assert "LEDGER_LOG_FORMAT must be json or text, not 'xml'" in bad.stderr
