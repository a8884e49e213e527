"""Secrets: passwords in store URLs and credentials in remote URLs never appear anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.bootstrap import build_ledger, open_ledger
from ledger.domain.errors import StoreUnavailable
from ledger.entrypoints.cli import app
from ledger.settings import Settings, StoreURL, redact
from ledger.testing.remote import Mode, RemoteServer
from tests.conftest import make_line

SECRET = "s3cr3t-pa55"


class TestRedaction:
    @pytest.mark.parametrize(
        "text",
        [
            f"postgresql://ledger:{SECRET}@db.internal:5432/ledger",
            f"http://bot:{SECRET}@127.0.0.1:9/index.git",
            f"failed to push to https://x-access-token:{SECRET}@example.invalid/index.git: timed out",
            f"git://{SECRET}@127.0.0.1/index.git",
        ],
    )
    def test_redact_removes_userinfo(self, text: str) -> None:
        """redact() removes every user:password@ part of a URL inside any text."""
        assert SECRET not in redact(text)

    def test_store_url_repr_hides_the_password(self) -> None:
        """A parsed store URL shows neither its password in repr nor in str."""
        url = StoreURL.parse(f"postgresql://ledger:{SECRET}@127.0.0.1:5432/test")
        assert url.password == SECRET
        assert SECRET not in repr(url)
        assert SECRET not in str(url)


class TestStoreSecrets:
    def test_unreachable_store_error_hides_the_password(self) -> None:
        """The error for an unreachable PostgreSQL store names it without its password."""
        with pytest.raises(StoreUnavailable) as caught:
            build_ledger(Settings(store=f"postgresql://ledger:{SECRET}@127.0.0.1:1/test"))
        assert SECRET not in str(caught.value)
        assert SECRET not in json.dumps(caught.value.to_dict())

    def test_cli_never_prints_the_password(self) -> None:
        """Every CLI output for a store with a password, human and JSON, leaves it out."""
        runner = CliRunner()
        store = f"postgresql://ledger:{SECRET}@127.0.0.1:1/test"
        for args in (["audit"], ["--json", "audit"], ["--json", "history", "kaze"], ["verify"]):
            result = runner.invoke(app, ["--store", store, *args])
            assert result.exit_code == 3
            assert SECRET not in result.stdout
            assert SECRET not in result.stderr


class TestRemoteSecrets:
    def test_remote_credentials_stay_out_of_events_logs_and_output(
        self, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A remote URL with credentials never reaches events, log lines, errors or CLI output."""
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        remote = server.url.replace("http://", f"http://bot:{SECRET}@")
        settings = Settings(store=store_url, remote=remote, index_dir=tmp_path / "clone.git", timeout_ms=1500)
        caplog.set_level(logging.INFO, logger="ledger")
        with server, open_ledger(settings) as ledger:
            ledger.publish(make_line("kaze", "0.1.6"), "alice")
            assert ledger.sync().confirmed == 1
            ledger.publish(make_line("kaze", "0.1.7"), "alice")
            server.set_mode(Mode.HTTP_500)
            assert ledger.sync().confirmed == 0
            server.set_mode(Mode.OK)
            records = ledger.timeline()
        assert any(r.get("remote") for r in records)
        assert SECRET not in json.dumps(records)
        assert SECRET not in caplog.text

        runner = CliRunner()
        for args in (["--json", "timeline"], ["--json", "audit", "--scan"], ["--json", "worker", "--once"]):
            result = runner.invoke(app, ["--store", store_url, "--remote", remote, *args])
            assert SECRET not in result.stdout + result.stderr, args
