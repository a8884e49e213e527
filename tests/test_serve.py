"""``ledger serve`` over HTTP: cargo's routes, its error shape, statuses, and nothing written on a
refusal. The requests are made with the standard library against the real server (waitress)."""

from __future__ import annotations

import http.client
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.entrypoints.serve.server import Served, start
from ledger.settings import Settings
from tests.test_registry import body, crate_bytes, metadata

MAX_CRATE = 64 * 1024


@pytest.fixture
def settings(store_url: str, tmp_path: Path) -> Settings:
    return Settings(store=store_url, crate_dir=tmp_path / "crates", max_crate_bytes=MAX_CRATE)


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    with open_ledger(settings):
        pass  # the tables, before the threads
    running = start(lambda: open_ledger(settings), port=0, max_crate_bytes=MAX_CRATE, threads=4)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def token(settings: Settings) -> str:
    with open_ledger(settings) as ledger:
        return ledger.app.create_token("alice", "operator")[1]


def request(
    served: Served, method: str, path: str, payload: bytes | None = None, token: str | None = None
) -> tuple[int, dict[str, Any] | bytes]:
    host, port = served.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": token} if token else {}
    conn.request(method, path, body=payload, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    if answer.getheader("Content-Type") == "application/json":
        return answer.status, json.loads(data)
    return answer.status, data


def detail(document: dict[str, Any] | bytes) -> str:
    assert isinstance(document, dict), document
    (error,) = document["errors"]
    return str(error["detail"])


def nothing_written(settings: Settings) -> None:
    assert settings.crate_dir is not None
    assert not settings.crate_dir.exists() or not any(p.is_file() for p in settings.crate_dir.rglob("*"))
    with open_ledger(settings) as ledger:
        assert ledger.app.find_crate("kaze") is None


class TestRoutes:
    def test_publish_download_yank_unyank_and_owners(self, served: Served, token: str) -> None:
        crate = crate_bytes("kaze", "0.1.6")
        status, answer = request(
            served, "PUT", "/api/v1/crates/new", body(metadata("kaze", "0.1.6"), crate), token
        )
        assert (status, answer) == (
            200,
            {"warnings": {"invalid_categories": [], "invalid_badges": [], "other": []}},
        )
        assert request(served, "GET", "/api/v1/crates/kaze/0.1.6/download") == (200, crate)
        assert request(served, "DELETE", "/api/v1/crates/kaze/0.1.6/yank", token=token) == (200, {"ok": True})
        assert request(served, "PUT", "/api/v1/crates/kaze/0.1.6/unyank", token=token) == (200, {"ok": True})
        status, owners = request(served, "GET", "/api/v1/crates/kaze/owners")
        assert status == 200
        assert isinstance(owners, dict)
        assert [u["login"] for u in owners["users"]] == ["alice"]

    def test_errors_come_in_cargos_shape_with_a_4xx(self, served: Served, token: str) -> None:
        good = body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6"))
        status, answer = request(served, "PUT", "/api/v1/crates/new", good)
        assert status == 401
        assert "API token" in detail(answer)
        assert request(served, "PUT", "/api/v1/crates/new", good, token)[0] == 200
        status, answer = request(served, "PUT", "/api/v1/crates/new", good, token)
        assert status == 409
        assert "already published" in detail(answer)
        status, answer = request(served, "GET", "/api/v1/crates/kaze/9.9.9/download")
        assert status == 404
        assert "no version 9.9.9" in detail(answer)
        status, answer = request(served, "GET", "/api/v2/nothing")
        assert status == 404
        assert request(served, "GET", "/api/v1/crates/new")[0] == 405


class TestBadBodies:
    @pytest.mark.parametrize(
        ("payload", "status"),
        [
            (lambda good: good[:-7], 400),  # the .crate is shorter than its length says
            (lambda good: struct.pack("<I", struct.unpack("<I", good[:4])[0] + 99) + good[4:], 400),  # lies
            (lambda good: struct.pack("<I", 1 << 30) + good[4:], 413),  # over the metadata's limit
            (lambda good: struct.pack("<I", 3) + b"{x}" + struct.pack("<I", 1) + b"x", 400),  # not JSON
            (lambda _: body(metadata("Kaze!", "0.1.6"), crate_bytes("x", "1.0.0")), 400),  # invalid name
            (lambda _: body(metadata("kaze", "01.0.0"), crate_bytes("x", "1.0.0")), 400),  # invalid version
            (lambda _: body(metadata("kaze", "0.1.6"), b"\0" * (MAX_CRATE + 1)), 413),  # over the limit
        ],
    )
    def test_each_gets_a_clear_4xx_and_nothing_is_written(
        self, served: Served, token: str, settings: Settings, payload: Any, status: int
    ) -> None:
        good = body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6"))
        answered, answer = request(served, "PUT", "/api/v1/crates/new", payload(good), token)
        assert answered == status
        assert len(detail(answer)) > 10
        nothing_written(settings)

    def test_a_request_over_the_size_limit_is_refused_before_it_is_read(
        self, served: Served, token: str, settings: Settings
    ) -> None:
        huge = b"\0" * (MAX_CRATE + 2 * 1024 * 1024)
        status, answer = request(served, "PUT", "/api/v1/crates/new", huge, token)
        assert status == 413
        assert "limit" in detail(answer)
        nothing_written(settings)


def test_the_command_serves_until_stopped(store_url: str, tmp_path: Path) -> None:
    """``ledger serve --port 0`` prints its URL, answers, and stops on SIGTERM."""
    env = {**os.environ, "LEDGER_STORE": store_url, "LEDGER_CRATE_DIR": str(tmp_path / "crates")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        host, port = url.removeprefix("http://").split(":")
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("GET", "/api/v1/crates/kaze/owners")
                answer = conn.getresponse()
                assert answer.status == 404
                assert "no crate named" in json.loads(answer.read())["errors"][0]["detail"]
                break
            except ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            finally:
                conn.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
