"""The real cargo against ``ledger serve``: publish, a dependency-rich crate, resolve and fetch,
yank and unyank, and every refusal shown by cargo with the server's reason.

The registry is the ledger's web API (waitress, in this process) with its worker, over a git
index served by the project's git:// server; cargo has a ``CARGO_HOME`` of its own and reaches
nothing else. cargo's own wait for the index after a publish (it polls about once a second) is
what tells that the worker confirmed the version.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.entrypoints.serve.server import Served, start
from ledger.services.ledger import Ledger
from ledger.settings import Settings
from ledger.testing.cargo import (
    CargoHome,
    Dependency,
    cargo_available,
    fetch,
    generate_lockfile,
    publish,
    write_package,
    yank,
)
from ledger.testing.remote import Mode, RemoteServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not cargo_available(), reason="cargo is not installed"),
]


@dataclass
class Registry:
    settings: Settings
    served: Served
    index_url: str
    tokens: dict[str, str]
    root: Path
    remote: RemoteServer

    def home(self, name: str, user: str | None) -> CargoHome:
        token = None if user is None else self.tokens[user]
        return CargoHome.create(self.root / name, self.index_url, token=token)

    def lines(self, crate: str) -> list[dict[str, Any]]:
        """The crate's file at the remote's head, read on a fresh connection."""
        with open_ledger(self.settings) as ledger:
            index = ledger.index()
            head = index.fetch()
            data = index.read_blob(head, index_path(crate)) or b""
        return [json.loads(raw) for raw in data.splitlines()]

    def ledger(self) -> Any:
        return open_ledger(self.settings)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = RemoteServer.start(tmp_path / "remote", protocol="git")
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'ledger.db'}",
        remote=server.url,
        index_dir=tmp_path / "clone.git",
        crate_dir=tmp_path / "crates",
    )
    with open_ledger(settings) as ledger:
        tokens = {user: ledger.app.create_token(user, "operator")[1] for user in ("alice", "bob")}
    served = start(
        lambda: open_ledger(settings), port=0, max_crate_bytes=settings.max_crate_bytes, worker=True
    )
    try:
        yield Registry(settings, served, server.url, tokens, tmp_path, server)
    finally:
        served.stop()
        server.stop()


def synced(registry: Registry, timeout: float = 30.0) -> None:
    """Wait until the worker has confirmed every job (a yank does not wait for the index)."""
    deadline = time.monotonic() + timeout
    while True:
        with registry.ledger() as ledger:
            ledger.views.catch_up()
            (open_jobs,) = ledger.db.query("SELECT COUNT(*) FROM view_jobs WHERE state = 'open'")[0]
        if open_jobs == 0:
            return
        assert time.monotonic() < deadline, f"{open_jobs} job(s) still open"
        time.sleep(0.05)


def published_versions(ledger: Ledger, crate: str) -> list[str]:
    ledger.views.catch_up()
    rows = ledger.db.query("SELECT version FROM view_versions WHERE crate = ? ORDER BY seq", (crate,))
    return [str(r[0]) for r in rows]


def test_publish_resolve_fetch_yank_and_unyank(registry: Registry) -> None:
    home = registry.home("alice-home", "alice")
    core = write_package(registry.root / "pkg-core", "kaze-core", "0.1.0", lib_rs="pub fn core() {}\n")
    run = publish(home, core)
    assert run.published, run.output  # cargo saw the version in the index within its own wait
    (line,) = registry.lines("kaze-core")
    assert line["vers"] == "0.1.0"
    assert not line["yanked"]
    stored = registry.root / "crates"
    (crate_file,) = list(stored.rglob("*.crate"))
    assert line["cksum"] == hashlib.sha256(crate_file.read_bytes()).hexdigest()

    for name in ("kaze-opt", "kaze-unix", "kaze-test"):
        assert publish(home, write_package(registry.root / f"pkg-{name}", name, "0.1.0")).published

    app = write_package(
        registry.root / "pkg-app",
        "kaze-app",
        "0.2.0",
        dependencies=[
            Dependency("core", "0.1", package="kaze-core"),
            Dependency("kaze-opt", "0.1", optional=True),
            Dependency("kaze-test", "0.1", kind="dev"),
            Dependency("kaze-unix", "0.1", target="cfg(unix)"),
        ],
        features={"default": [], "extra": ["dep:kaze-opt"]},
    )
    assert publish(home, app).published
    (app_line,) = registry.lines("kaze-app")
    deps = {d["name"]: d for d in app_line["deps"]}
    assert deps["core"]["package"] == "kaze-core"
    assert deps["core"]["req"] == "^0.1"
    assert deps["kaze-opt"]["optional"] is True
    assert deps["kaze-test"]["kind"] == "dev"
    assert deps["kaze-unix"]["target"] == "cfg(unix)"
    assert all("registry" not in d or d["registry"] is None for d in app_line["deps"])
    assert app_line["features2"] == {"extra": ["dep:kaze-opt"]}
    assert app_line["v"] == 2

    consumer_home = registry.home("consumer-home", None)
    consumer = write_package(
        registry.root / "consumer",
        "consumer",
        "0.0.1",
        dependencies=[Dependency("kaze-app", "0.2", features=("extra",))],
    )
    assert generate_lockfile(consumer_home, consumer).ok
    lock = (consumer / "Cargo.lock").read_text()
    for name in ("kaze-app", "kaze-core", "kaze-opt", "kaze-unix"):
        assert f'name = "{name}"' in lock
    fetched = fetch(consumer_home, consumer)
    assert fetched.ok, fetched.output  # every .crate downloaded and its checksum accepted
    assert consumer_home.downloaded("kaze-core", "0.1.0") is not None

    assert yank(home, "kaze-core", "0.1.0").ok
    synced(registry)
    assert [line["yanked"] for line in registry.lines("kaze-core")] == [True]
    assert yank(home, "kaze-core", "0.1.0", undo=True).ok
    synced(registry)
    assert [line["yanked"] for line in registry.lines("kaze-core")] == [False]
    with registry.ledger() as ledger:
        events = [e["event"] for e in ledger.history("kaze-core", "0.1.0")]
        assert events.count("IndexPushConfirmed") == 3  # publish, yank, unyank: each read back
        assert ledger.audit().consistent


def test_every_refusal_is_shown_by_cargo_and_records_nothing(registry: Registry) -> None:
    alice = registry.home("alice-home", "alice")
    package = write_package(registry.root / "pkg", "kaze", "1.0.0")
    assert publish(alice, package).published

    again = publish(alice, package)  # cargo itself sees the version in the index and stops
    assert not again.ok
    assert "already exists on `local` index" in again.output
    # While the index refuses pushes, an accepted version is not visible yet: cargo's own check
    # passes and the second upload reaches the server, which refuses it with its reason.
    registry.remote.set_mode(Mode.REJECT)
    pending = write_package(registry.root / "pkg-pending", "kaze", "1.0.1")
    first = publish(alice, pending, wait=0)
    assert first.uploaded, first.output
    second = publish(alice, pending, wait=0)
    assert not second.ok
    assert second.server_error is not None
    assert second.server_error.status == 409
    assert "kaze 1.0.1 is already published" in second.server_error.detail
    registry.remote.set_mode(Mode.OK)
    synced(registry)

    newer = write_package(registry.root / "pkg-newer", "kaze", "1.1.0")
    nobody = publish(registry.home("anonymous", None), newer)
    assert not nobody.ok
    assert "no token" in nobody.output

    bob = publish(registry.home("bob-home", "bob"), newer)
    assert not bob.ok
    assert bob.server_error is not None
    assert bob.server_error.status == 403
    assert "bob is not an owner of kaze" in bob.server_error.detail

    with registry.ledger() as ledger:
        token_id = registry.tokens["alice"].split("_")[1]
        ledger.app.revoke_token(token_id, "operator")
    revoked = publish(alice, newer)
    assert not revoked.ok
    assert revoked.server_error is not None
    assert revoked.server_error.status == 401
    assert "revoked" in revoked.server_error.detail

    with registry.ledger() as ledger:
        assert published_versions(ledger, "kaze") == ["1.0.0", "1.0.1"]
        refused = [e for e in ledger.history("kaze") if e["event"] == "CrateRequestRefused"]
        assert [(e["actor"], e["action"]) for e in refused] == [("bob", "publish")]
    assert [line["vers"] for line in registry.lines("kaze")] == ["1.0.0", "1.0.1"]
    assert len(list((registry.root / "crates").rglob("*.crate"))) == 2
