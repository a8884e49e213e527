"""The demo's second part: the same story through the real cargo and ``ledger serve``.

cargo publishes to the ledger's registry API; the worker beside it pushes to a git index on
127.0.0.1 (smart HTTP) and confirms by reading back; cargo, which waits after a publish until it
sees the version in the index, prints "Published" only once that is true. During an outage cargo keeps
waiting while the audit shows the version stuck; when the outage ends, the worker's retry
confirms it and cargo finishes. Skipped, and said so, when cargo is not installed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ledger.bootstrap import open_ledger
from ledger.entrypoints.serve.server import start
from ledger.settings import Settings
from ledger.testing.cargo import (
    CargoHome,
    Dependency,
    PublishRun,
    cargo_available,
    fetch,
    publish,
    write_package,
    yank,
)
from ledger.testing.remote import Mode, RemoteServer

SKIPPED = "cargo is not installed here: the part through `cargo publish` was skipped"
WAIT_S = 30.0


def cargo_story(story: Any, root: Path) -> bool | None:
    """Tell the cargo part; True when it behaved as promised, None when skipped (no cargo)."""
    if not cargo_available():
        story.title("Through cargo: skipped")
        story.say(SKIPPED)
        return None
    server = RemoteServer.start(root / "cargo-remote", protocol="http")
    settings = Settings(
        store=f"sqlite:///{root / 'registry.db'}",
        remote=server.url,
        index_dir=root / "registry-clone.git",
        crate_dir=root / "crates",
    )
    with server:
        with open_ledger(settings) as ledger:
            token = ledger.app.create_token("alice", "demo")[1]
        served = start(
            lambda: open_ledger(settings), port=0, max_crate_bytes=settings.max_crate_bytes, worker=True
        )
        try:
            return _tell(story, settings, server, served.url, token, root)
        finally:
            served.stop()


def _tell(story: Any, settings: Settings, server: RemoteServer, url: str, token: str, root: Path) -> bool:
    story.title("Through cargo: `cargo publish` to `ledger serve --worker`, over a git index on smart HTTP")
    story.say(f"$ ledger serve --worker -> {url} (index {server.url})")
    story.say("$ ledger token create --user alice -> ldg_... (shown once; only its SHA-256 is kept)")
    home = CargoHome.create(root / "cargo-home", server.url, token=token)
    first = publish(home, write_package(root / "kaze-0.1.6", "kaze", "0.1.6", lib_rs="pub fn wind() {}\n"))
    story.say(f"$ cargo publish  # kaze 0.1.6 -> exit {first.returncode}, {_seen(first)}")

    story.title("Through cargo: the outage again; cargo waits, the audit says why")
    server.set_mode(Mode.NO_STATUS)
    runs: list[PublishRun] = []
    package = write_package(root / "kaze-0.1.7", "kaze", "0.1.7", lib_rs="pub fn gust() {}\n")
    waiting = threading.Thread(target=lambda: runs.append(publish(home, package)), daemon=True)
    waiting.start()
    stuck = _wait_for(settings, lambda counts: counts["stuck"] >= 1)
    with open_ledger(settings) as ledger:
        story.audit(ledger.audit(), "ledger audit  # while cargo is still waiting")
    story.say(f"cargo is still waiting: {'yes' if waiting.is_alive() else 'no'}")
    server.set_mode(Mode.OK)
    waiting.join(timeout=90)
    second = runs[0] if runs else None
    story.say(
        "the outage ends; the worker's retry pushes and reads back -> cargo publish exits "
        f"{None if second is None else second.returncode}, {_seen(second)}"
    )

    story.title("Through cargo: resolve, download and verify, yank and unyank")
    consumer_home = CargoHome.create(root / "consumer-home", server.url)
    consumer = write_package(root / "consumer", "consumer", "0.0.1", dependencies=[Dependency("kaze", "0.1")])
    fetched = fetch(consumer_home, consumer)
    story.say(f"$ cargo fetch  # a project depending on kaze 0.1 -> exit {fetched.returncode}")
    yanked = yank(home, "kaze", "0.1.7")
    unyanked = yank(home, "kaze", "0.1.7", undo=True)
    story.say(
        f"$ cargo yank --version 0.1.7 -> exit {yanked.returncode}; --undo -> exit {unyanked.returncode}"
    )
    synced = _wait_for(settings, lambda counts: sum(counts.values()) == 0)
    with open_ledger(settings) as ledger:
        report = ledger.audit()
        story.audit(report)
        pushes = [e for e in ledger.history("kaze", "0.1.7") if e["event"] == "IndexPushAttempted"]
        story.say(f"$ ledger history kaze@0.1.7 -> {len(pushes)} push attempts, each read back")
    return bool(
        first.published
        and stuck
        and second is not None
        and second.published
        and fetched.ok
        and yanked.ok
        and unyanked.ok
        and synced
        and report.consistent
    )


def _seen(run: PublishRun | None) -> str:
    if run is None:
        return "cargo did not finish"
    if run.published:
        return "cargo saw the version in the index and printed Published"
    return "cargo did NOT see the version in the index"


def _wait_for(settings: Settings, done: Any) -> bool:
    """Poll the audit until ``done(counts)``; False after :data:`WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with open_ledger(settings) as ledger:
            if done(ledger.audit().counts):
                return True
        time.sleep(0.2)
    return False
