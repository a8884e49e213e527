"""The 2020-02-20 incident, replayed against a real server that answers pushes with no status."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bootstrap import open_ledger
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings
from ledger.testing.cargo import cargo_available, resolve
from ledger.testing.remote import Mode, RemoteServer
from tests.conftest import make_line

INCIDENT = [("kaze", "0.1.6"), ("wasmer-runtime-core", "0.14.0"), ("wasmer-win-exception-handler", "0.14.0")]


class TestIncident:
    def test_versions_pushed_without_status_stay_open_then_confirm(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Pushes answered with no per-ref status are never taken as success; after recovery cargo resolves kaze 0.1.6."""
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
        with server, open_ledger(settings) as ledger:
            ledger.publish(make_line("kaze", "0.1.5"), "kaze-author")
            assert ledger.sync().confirmed == 1

            server.set_mode(Mode.NO_STATUS)
            for crate, version in INCIDENT:
                ledger.publish(make_line(crate, version), f"{crate}-author")
            outage = ledger.sync(WorkerOptions(max_batch=10))
            assert outage.confirmed == 0
            assert outage.open_left == 3

            report = ledger.audit()
            stuck = {(d.crate, d.version) for d in report.discrepancies if d.cls == "stuck"}
            assert stuck == set(INCIDENT)
            assert not report.consistent
            for crate, version in INCIDENT:
                events = ledger.history(crate, version)
                attempt = next(e for e in events if e["event"] == "IndexPushAttempted")
                assert attempt["reported"] == "no_status"
                failure = next(e for e in events if e["event"] == "IndexPushFailed")
                assert failure["reason"] == "no_status"
                assert "IndexSyncCompleted" not in [e["event"] for e in events]

            server.set_mode(Mode.OK)
            recovered = ledger.sync()
            assert recovered.confirmed == 3
            assert ledger.audit(grace=0).consistent

            if not cargo_available():
                pytest.skip("cargo is not installed")
            resolved = resolve(server.url, "kaze", "=0.1.6")
            assert resolved.ok, resolved.output
            assert 'name = "kaze"\nversion = "0.1.6"' in resolved.output
            missing = resolve(server.url, "kaze", "=0.1.7")
            assert not missing.ok
            assert "failed to select a version" in missing.output
