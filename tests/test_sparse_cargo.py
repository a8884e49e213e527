"""The real cargo over the sparse protocol: ``sparse+http://`` through a CDN front, with the
registry's web API (``ledger serve --worker``) writing a sparse index into a folder.

cargo resolves a version the ledger confirmed by reading the public URL back, refuses a yanked
one, and after a file is lost at the origin and repaired, resolves it again. cargo publishes
through the API and waits for the version to show in the sparse index itself.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.entrypoints.serve.server import Served, start
from ledger.settings import Settings, TargetSpec
from ledger.testing.cargo import CargoHome, cargo_available, publish, resolve, write_package, yank
from ledger.testing.cdn import CdnFront

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not cargo_available(), reason="cargo is not installed"),
]


@dataclass
class Registry:
    settings: Settings
    served: Served
    front: CdnFront
    origin: Path
    root: Path
    token: str

    @property
    def index_url(self) -> str:
        return f"sparse+{self.front.url}"

    def home(self, name: str) -> CargoHome:
        return CargoHome.create(self.root / name, self.index_url, token=self.token)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    origin = tmp_path / "origin"
    origin.mkdir()
    with CdnFront(origin, ttl=60.0) as front:  # an edge that caches, and is told what changed
        spec = TargetSpec.parse(
            f"sparse=sparse+{front.url}?origin={origin}&invalidate={front.invalidate_url}"
        )
        settings = Settings(
            store=f"sqlite:///{tmp_path / 'ledger.db'}",
            targets=(spec,),
            index_dir=tmp_path / "shadow.git",
            crate_dir=tmp_path / "crates",
        )
        with open_ledger(settings) as ledger:
            _, token = ledger.app.create_token("alice", "operator")
        served = start(
            lambda: open_ledger(settings), port=0, max_crate_bytes=settings.max_crate_bytes, worker=True
        )
        try:
            yield Registry(settings, served, front, origin, tmp_path, token)
        finally:
            served.stop()


def purge(front: CdnFront, path: str) -> None:
    """What an operator does at the CDN: drop the edge's copy of a file."""
    body = json.dumps({"paths": [path]}).encode()
    request = urllib.request.Request(front.invalidate_url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def synced(registry: Registry, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with open_ledger(registry.settings) as ledger:
            ledger.views.catch_up()
            (open_jobs,) = ledger.db.query("SELECT COUNT(*) FROM view_jobs WHERE state = 'open'")[0]
        if open_jobs == 0:
            return
        assert time.monotonic() < deadline, f"{open_jobs} job(s) still open"
        time.sleep(0.05)


def test_cargo_resolves_confirmed_refuses_yanked_and_resolves_a_repaired_version(registry: Registry) -> None:
    home = registry.home("alice-home")
    for version in ("0.1.0", "0.2.0"):
        run = publish(home, write_package(registry.root / f"pkg-{version}", "kaze", version))
        assert run.published, run.output  # cargo saw it in the sparse index within its own wait
    assert (registry.origin / "config.json").is_file()
    assert (registry.origin / index_path("kaze")).is_file()

    found = resolve(registry.index_url, "kaze", "=0.2.0")
    assert found.ok, found.output
    assert 'name = "kaze"\nversion = "0.2.0"' in found.output

    assert yank(home, "kaze", "0.2.0").ok
    synced(registry)
    refused = resolve(registry.index_url, "kaze", "=0.2.0")
    assert not refused.ok
    assert "yanked" in refused.output or "failed to select a version" in refused.output, refused.output
    assert resolve(registry.index_url, "kaze", "^0.1").ok

    (registry.origin / index_path("kaze")).unlink()  # lost at the origin
    purge(registry.front, index_path("kaze"))
    assert not resolve(registry.index_url, "kaze", "=0.1.0").ok
    registry.served.stop()  # its worker holds the index writer's lease: the operator stops it
    with open_ledger(registry.settings) as ledger:
        assert ledger.audit_scan(grace=0).counts["lost"] == 2
        assert ledger.repair(actor="operator").confirmed
        assert ledger.audit_scan(grace=0).consistent
    restored = resolve(registry.index_url, "kaze", "=0.1.0")
    assert restored.ok, restored.output
