"""Load: several publisher processes and two workers on PostgreSQL, driven by the real trace.

The first ``--days`` of the real crates.io trace are replayed in ``--seconds`` (many times the
real rate) by ``--publishers`` processes, each owning the crates whose name hashes to it, while
two worker processes follow the log against a git:// remote on 127.0.0.1. Halfway through, the
active worker (the lease holder) is killed with SIGKILL; the standby must take over.

At the end it checks: every accepted change is exactly one event (none lost, none duplicated),
the queue drains, the scan of the real index is consistent, and one index writer held the lease
at a time (the lease holder, sampled every 50 ms, changes only at the failover). It prints the
rates held and the failover time.

    .venv/bin/python scripts/load_test.py --days 7 --seconds 120 --publishers 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, drop_pg_schema, machine, markdown_table, stores_from_args, workdir

from ledger.adapters.realdata import index_line, trace
from ledger.adapters.stores.lease import Lease
from ledger.bootstrap import open_ledger
from ledger.domain.errors import AlreadyPublished, Conflict, LedgerError, NotFound
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import RemoteServer

LEASE_TTL = 3.0


def events_for(days: float) -> list[Any]:
    """The trace's first ``days`` of events."""
    chosen = []
    start: int | None = None
    for event in trace():
        start = event.unix_ts if start is None else start
        if event.unix_ts - start > days * 86400:
            break
        chosen.append(event)
    return chosen


def owner(crate: str, publishers: int) -> int:
    return zlib.crc32(crate.lower().replace("-", "_").encode()) % publishers


# -- the roles ------------------------------------------------------------------------------------


def publisher(store: str, index: int, publishers: int, days: float, seconds: float, t0: float) -> None:
    """Replay this publisher's share of the trace on the compressed schedule; print its counts."""
    events = events_for(days)
    first, span = events[0].unix_ts, max(1, events[-1].unix_ts - events[0].unix_ts)
    counts = {"publish": 0, "yank": 0, "unyank": 0, "refused": 0, "unavailable": 0}
    accepted: list[list[str]] = []
    with open_ledger(Settings(store=store)) as ledger:
        for event in events:
            if owner(event.crate, publishers) != index:
                continue
            due = t0 + (event.unix_ts - first) / span * seconds
            if (wait := due - time.time()) > 0:
                time.sleep(wait)
            try:
                if event.event == "publish":
                    ledger.publish(index_line(event.crate, event.version), f"publisher-{index}")
                elif event.event == "yank":
                    ledger.yank(event.crate, event.version, f"publisher-{index}")
                else:
                    ledger.unyank(event.crate, event.version, f"publisher-{index}")
            except (AlreadyPublished, Conflict, NotFound):
                counts["refused"] += 1
                continue
            except LedgerError:
                counts["refused"] += 1
                continue
            counts[event.event] += 1
            accepted.append([event.event, event.crate, event.version])
    print(json.dumps({"counts": counts, "accepted": accepted}))


def worker(store: str, remote: str, clone: str, name: str) -> None:
    settings = Settings(store=store, remote=remote, index_dir=Path(clone))
    with open_ledger(settings) as ledger:
        options = WorkerOptions(max_batch=500, lease_ttl=LEASE_TTL, backoff_base=1.0)
        SyncWorker(ledger, ledger.index(), options=options, name=name).follow(poll=0.2)


# -- the driver -----------------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def drive(args: argparse.Namespace) -> None:
    with workdir("ledger-load-") as folder:
        store = stores_from_args(["postgresql"], folder)[0]
        server = RemoteServer.start(folder / "remote", protocol="git")
        workers: dict[str, subprocess.Popen[str]] = {}
        try:
            with open_ledger(Settings(store=store.url)) as ledger:
                lease = Lease(ledger.db, "observer", ttl=LEASE_TTL)
                for name in ("worker-a", "worker-b"):
                    workers[name] = spawn("worker", store.url, server.url, str(folder / f"{name}.git"), name)
                t0 = time.time() + 3.0
                publishers = [
                    spawn(
                        "publisher",
                        store.url,
                        str(i),
                        str(args.publishers),
                        str(args.days),
                        str(args.seconds),
                        str(t0),
                    )
                    for i in range(args.publishers)
                ]
                holders, failover = watch(ledger, lease, workers, t0, args.seconds)
                results = [json.loads(p.communicate()[0].splitlines()[-1]) for p in publishers]
                publish_end = time.time()
                drained = wait_for_drain(ledger, timeout=600)
                confirm_end = time.time()
                checks = verify(ledger, results, server, folder)
        finally:
            for process in workers.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
            server.stop()
            drop_pg_schema(store)
    report(args, results, holders, failover, checks, drained, t0, publish_end, confirm_end)


def watch(
    ledger: Any, lease: Lease, workers: dict[str, subprocess.Popen[str]], t0: float, seconds: float
) -> tuple[list[tuple[float, str | None]], dict[str, float | None]]:
    """Sample the lease holder every 50 ms; kill the active worker halfway; time the takeover."""
    holders: list[tuple[float, str | None]] = []
    killed_at: float | None = None
    taken_at: float | None = None
    confirmed_after: float | None = None
    victim: str | None = None
    while time.time() < t0 + seconds:
        state = lease.state()
        holder = state.holder if state.expires_at > time.time() else None
        if not holders or holders[-1][1] != holder:
            holders.append((time.time(), holder))
        if killed_at is None and time.time() > t0 + seconds / 2 and holder in workers:
            victim = holder
            workers[holder].send_signal(signal.SIGKILL)
            workers[holder].wait()
            killed_at = time.time()
        if killed_at is not None and taken_at is None and holder not in (None, victim):
            taken_at = time.time()
        if taken_at is not None and confirmed_after is None:
            last = ledger.db.query("SELECT MAX(updated_at) FROM view_jobs WHERE state = 'completed'")
            if last and last[0][0] and last[0][0] > taken_at:
                confirmed_after = last[0][0]
        time.sleep(0.05)
    return holders, {
        "killed_at": killed_at,
        "lease_taken_s": None if taken_at is None or killed_at is None else taken_at - killed_at,
        "first_confirmation_s": None
        if confirmed_after is None or killed_at is None
        else confirmed_after - killed_at,
        "victim": victim,  # type: ignore[dict-item]
    }


def wait_for_drain(ledger: Any, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        ledger.views.catch_up()
        if not ledger.db.query("SELECT 1 FROM view_jobs WHERE state = 'open' LIMIT 1"):
            return True
        time.sleep(0.5)
    return False


def verify(ledger: Any, results: list[dict[str, Any]], server: RemoteServer, folder: Path) -> dict[str, Any]:
    """No change lost or duplicated; the real index agrees with the ledger."""
    accepted = [tuple(a) for r in results for a in r["accepted"]]
    kinds = {"publish": "VersionPublished", "yank": "VersionYanked", "unyank": "VersionUnyanked"}
    expected: dict[tuple[str, str, str], int] = {}
    for kind, crate, version in accepted:
        key = (kinds[kind], crate, version)
        expected[key] = expected.get(key, 0) + 1
    recorded: dict[tuple[str, str, str], int] = {}
    for record in ledger.timeline():
        if record["event"] in kinds.values():
            key = (record["event"], record["crate"], record["version"])
            recorded[key] = recorded.get(key, 0) + 1
    published = [k for k in recorded if k[0] == "VersionPublished"]
    settings = Settings(store=ledger.settings.store, remote=server.url, index_dir=folder / "audit.git")
    with open_ledger(settings) as auditor:
        report = auditor.audit_scan(grace=0)
    return {
        "changes_accepted": len(accepted),
        "events_recorded": sum(recorded.values()),
        "none_lost_or_duplicated": recorded == expected,
        "publish_duplicates": sum(1 for k in published if recorded[k] > 1),
        "scan_consistent": report.consistent and not report.discrepancies,
        "discrepancies": len(report.discrepancies),
        "chain_intact": ledger.verify().ok,
    }


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    holders: list[tuple[float, str | None]],
    failover: dict[str, Any],
    checks: dict[str, Any],
    drained: bool,
    t0: float,
    publish_end: float,
    confirm_end: float,
) -> None:
    counts: dict[str, int] = {}
    for r in results:
        for key, value in r["counts"].items():
            counts[key] = counts.get(key, 0) + value
    changes = counts["publish"] + counts["yank"] + counts["unyank"]
    real_rate = changes / (args.days * 86400)
    held = changes / (publish_end - t0)
    named = [h for _, h in holders if h is not None]
    changes_of_holder = sum(1 for a, b in itertools.pairwise(named) if a != b)
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print(
        markdown_table(
            ["what", "figure"],
            [
                (
                    "trace replayed",
                    f"{args.days} days, {changes} accepted changes ({counts['refused']} refused)",
                ),
                (
                    "publishers / workers",
                    f"{args.publishers} processes / 2 following workers (PostgreSQL, git://)",
                ),
                ("publish rate held", f"{held:,.1f} changes/s = {held / real_rate:,.0f}x the real rate"),
                (
                    "all confirmed after",
                    f"{confirm_end - t0:,.1f} s ({'drained' if drained else 'NOT drained'})",
                ),
                ("failover: lease taken", _seconds(failover["lease_taken_s"])),
                ("failover: first confirmation", _seconds(failover["first_confirmation_s"])),
                ("lease holder changes", f"{changes_of_holder} (1 expected: the failover)"),
                (
                    "events: accepted vs recorded",
                    f"{checks['changes_accepted']} vs {checks['events_recorded']}",
                ),
                ("none lost or duplicated", checks["none_lost_or_duplicated"]),
                (
                    "audit --scan consistent",
                    f"{checks['scan_consistent']} ({checks['discrepancies']} discrepancies)",
                ),
                ("hash chain intact", checks["chain_intact"]),
            ],
        )
    )
    ok = (
        drained
        and checks["none_lost_or_duplicated"]
        and checks["scan_consistent"]
        and checks["chain_intact"]
        and changes_of_holder == 1
    )
    print("load test:", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "publisher":
        store, index, publishers, days, seconds, t0 = sys.argv[2:8]
        publisher(store, int(index), int(publishers), float(days), float(seconds), float(t0))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--publishers", type=int, default=4)
    drive(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
