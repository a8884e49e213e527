"""``ledger serve --serve-index TARGET``: the registry serves its own sparse index folder under
the target's public URL, cargo publishes to it and resolves from it with ``sparse+http://``, and
the worker's read-back goes through the same URL."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.entrypoints.serve.files import IndexFiles
from ledger.entrypoints.serve.server import Served, start
from ledger.settings import Settings, TargetSpec
from ledger.testing.cargo import CargoHome, cargo_available, publish, resolve, write_package
from ledger.testing.s3 import free_port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Settings, str]]:
    port = free_port()
    origin = tmp_path / "index"
    spec = TargetSpec.parse(f"sparse=sparse+http://127.0.0.1:{port}/index/?origin={origin}")
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'ledger.db'}",
        targets=(spec,),
        index_dir=tmp_path / "shadow.git",
        crate_dir=tmp_path / "crates",
    )
    with open_ledger(settings) as ledger:
        _, token = ledger.app.create_token("alice", "operator")
    origin.mkdir()
    running = start(
        lambda: open_ledger(settings),
        port=port,
        max_crate_bytes=settings.max_crate_bytes,
        worker=True,
        index_files=IndexFiles(origin, "/index/"),
    )
    try:
        yield running, settings, token
    finally:
        running.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str | None, bytes]:
    """Status, ETag and body of one GET, on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("ETag"), response.read()
    finally:
        conn.close()


def port_of(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1])


def test_the_folder_is_served_as_cargo_reads_it(served: tuple[Served, Settings, str], tmp_path: Path) -> None:
    running, _, _ = served
    port = port_of(running)
    status, etag, body = get(port, "/index/config.json")  # written by serve --worker, read back here
    assert status == 200
    assert b'"dl"' in body
    assert etag is not None
    assert get(port, "/index/config.json", {"If-None-Match": etag})[0] == 304
    assert get(port, "/index/ka/ze/kaze")[0] == 404
    assert get(port, "/index/.ledger/head")[0] == 404, "the head marker is not an index file"
    assert get(port, "/index/../ledger.db")[0] == 400
    assert get(port, "/index/ka//ze")[0] == 400


@pytest.mark.slow
@pytest.mark.skipif(not cargo_available(), reason="cargo is not installed")
def test_cargo_publishes_and_resolves_through_the_registry_alone(
    served: tuple[Served, Settings, str], tmp_path: Path
) -> None:
    running, settings, token = served
    index_url = f"sparse+http://127.0.0.1:{port_of(running)}/index/"
    home = CargoHome.create(tmp_path / "home", index_url, token=token)
    run = publish(home, write_package(tmp_path / "pkg", "kaze", "0.3.0"))
    assert run.published, run.output
    assert (tmp_path / "index" / index_path("kaze")).is_file()
    found = resolve(index_url, "kaze", "=0.3.0")
    assert found.ok, found.output
    with open_ledger(settings) as ledger:
        confirmed = [e for e in ledger.history("kaze") if e["event"] == "IndexPushConfirmed"]
        assert [e["target"] for e in confirmed] == ["sparse"]
