"""Views benchmark on the real crates.io data: rebuild, audit and scans of a ledger at full size.

Setup, for each store, in a process of its own (not measured beyond its own figures):

1. the baseline (138,913 crate files rendered by ``ledger.adapters.realdata.baseline_files``, plus
   ``config.json``) is built once with ``GitIndex.build_commit`` into a bare repository, which
   each store gets a copy of as its index remote;
2. ``import_index`` adopts it (each crate's job confirmed against the remote head);
3. the whole trace is recorded in order: runs of publishes through ``publish_many`` (lines
   from ``ledger.adapters.realdata.index_line``), yanks and unyanks one call each;
4. one worker pass (``Ledger.sync``) pushes every trace job to the remote, so the ledger and
   the index agree as they do in production.

Then, in a fresh process per store (so peak memory is that of the measured steps):

- ``Ledger.rebuild``: every view dropped and rebuilt from position zero (events/s);
- ``Ledger.audit`` without a scan, several times (the consistency query on the whole views);
- the first ``audit --scan``: ``Ledger.scan_index`` (a full scan of every file at the remote's
  head), then ``Ledger.audit``;
- one publish and one worker pass (one commit), then an incremental ``scan_index`` and audit.

Usage: .venv/bin/python scripts/bench_views.py [--store sqlite|postgres|both|URL]...
       [--limit CRATES] [--trace-limit EVENTS] [--audits N] [--index-cache DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    command_line,
    connectivity_check_ms,
    drop_pg_schema,
    machine,
    markdown_table,
    peak_rss_mib,
    run_child,
    stores_from_args,
    timed,
    workdir,
)

if TYPE_CHECKING:
    from ledger.services.ledger import Ledger

ACTOR = "bench"
BRANCH = "master"
GOALS = {
    "rebuild_events_per_s": 40_000.0,
    "first_scan_s": 15.0,
    "incremental_scan_s": 0.2,
    "audit_s": 1.0,
    "peak_mib": 1024.0,
}
WORKER_BATCH = 2000
RETRIES = 8
RETRY_WAIT_S = 5.0
T = TypeVar("T")

RETRIED: list[str] = []
"""Steps that failed because the store went away (another job on this machine restarts
PostgreSQL in its tests) and were run again; reported with the figures."""


def retrying(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, run again (up to ``RETRIES`` times) after the store or the remote went away."""
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from ledger.domain.errors import InfrastructureError

    for attempt in range(1, RETRIES + 1):
        try:
            return fn()
        except (InfrastructureError, PersistenceError, psycopg.OperationalError) as exc:
            if attempt == RETRIES:
                raise
            RETRIED.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            print(f"{what} failed ({exc}); again in {RETRY_WAIT_S:g} s", file=sys.stderr, flush=True)
            time.sleep(RETRY_WAIT_S)
    raise AssertionError("unreachable")


# -- the baseline index (shared by bench_repair) ------------------------------------------------


def build_baseline_index(path: Path, limit: int | None) -> dict[str, Any]:
    """The baseline as a cargo index in a new bare repository at ``path``, branch ``master``."""
    import pygit2

    from ledger.adapters.git.index import GitIndex
    from ledger.adapters.realdata import ReadStats, baseline_files
    from ledger.services.repair import config_bytes

    stats = ReadStats()
    counts = {"files": 0, "lines": 0, "bytes": 0}

    def files() -> Iterator[tuple[str, bytes]]:
        yield "config.json", config_bytes()
        for file_path, data in baseline_files(limit, stats=stats):
            counts["files"] += 1
            counts["lines"] += data.count(b"\n")
            counts["bytes"] += len(data)
            yield file_path, data

    started = time.perf_counter()
    pygit2.init_repository(str(path), bare=True, initial_head=f"refs/heads/{BRANCH}")
    with GitIndex.open(path, str(path), branch=BRANCH) as index:
        commit = index.build_commit(files(), "Baseline: crates.io index on 2024-04-29")
    repo = pygit2.Repository(str(path))
    repo.references.create(f"refs/heads/{BRANCH}", commit, force=True)
    tree = str(repo.revparse_single(commit).peel(pygit2.Commit).tree_id)
    repo.free()
    return {
        **counts,
        "commit": commit,
        "tree": tree,
        "seconds": time.perf_counter() - started,
        "read": stats.to_dict(),
        "peak_rss_mib": peak_rss_mib(),
    }


def baseline_index(folder: Path, cache: Path | None, limit: int | None) -> tuple[Path, dict[str, Any]]:
    """The baseline index repository: from the cache folder when it holds one, else built anew."""
    target = (cache if cache is not None else folder) / f"baseline-{limit or 'all'}.git"
    record = target.with_suffix(".json")
    if cache is not None and record.exists() and target.exists():
        return target, json.loads(record.read_text())
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(__file__).resolve()), "--child", "build-index", "--repo", str(target)]
    if limit is not None:
        argv += ["--limit", str(limit)]
    built = run_child(argv)
    record.write_text(json.dumps(built))
    return target, built


def copy_repo(source: Path, target: Path) -> Path:
    """A copy of a bare repository (its own remote for one store)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


# -- setup (child) --------------------------------------------------------------------------------


def setup(url: str, remote: Path, clone: Path, trace_limit: int | None) -> dict[str, Any]:
    """Import the baseline index, record the trace, and sync it to the remote."""
    from ledger.bootstrap import open_ledger
    from ledger.services.sync import WorkerOptions
    from ledger.settings import Settings

    out: dict[str, Any] = {}
    settings = Settings(store=url, remote=str(remote), branch=BRANCH, index_dir=clone, timeout_ms=600_000)
    with open_ledger(settings) as ledger:
        started = time.perf_counter()
        imported = retrying("import", lambda: ledger.import_index(str(remote)))
        out["import"] = {
            "files": imported.files,
            "lines": imported.lines,
            "accepted": imported.accepted,
            "refused": len(imported.refused),
            "events": imported.events,
            "seconds": time.perf_counter() - started,
        }
        out["trace"] = record_trace(ledger, trace_limit)
        started = time.perf_counter()
        options = WorkerOptions(max_batch=WORKER_BATCH, lease_ttl=600.0)
        synced = retrying("sync", lambda: ledger.sync(options))
        # Again after a pass cut short by the store going away; jobs held on index lines the
        # ledger has no record of (the real index has such lines) stay open by design.
        while synced.open_left > synced.held:
            synced = retrying("sync", lambda: ledger.sync(options))
        out["sync"] = {
            "jobs": synced.jobs,
            "confirmed": synced.confirmed,
            "open_left": synced.open_left,
            "held": synced.held,
            "commits": len(synced.commits),
            "seconds": time.perf_counter() - started,
        }
        out["events"] = ledger.views.head()
    out["peak_rss_mib"] = peak_rss_mib()
    out["retried"] = RETRIED
    return out


def record_trace(ledger: Ledger, limit: int | None) -> dict[str, Any]:
    """The trace in order: runs of publishes through ``publish_many``, yanks and unyanks one by one.

    A run of publishes is saved before a yank or unyank of one of its crates, so every change
    of a crate is recorded in the trace's order.
    """
    from ledger.adapters.realdata import ReadStats, baseline, index_line, trace
    from ledger.domain.errors import LedgerError
    from ledger.domain.names import collision_key

    pool: list[str] = []
    for crate, _ in baseline():
        if not pool or pool[-1] != crate:
            pool.append(crate)
    counts = {"publishes": 0, "accepted": 0, "present": 0, "refused": 0, "yanks": 0, "unyanks": 0}
    counts["skipped"] = 0
    pending: list[tuple[int, dict[str, Any]]] = []
    pending_keys: set[str] = set()

    def flush() -> None:
        if pending:
            bulk = retrying("publish_many", lambda: ledger.publish_many(list(pending), ACTOR))
            counts["accepted"] += bulk.accepted
            counts["present"] += bulk.present
            counts["refused"] += len(bulk.refused)
            pending.clear()
            pending_keys.clear()

    stats = ReadStats()
    started = time.perf_counter()
    for number, event in enumerate(trace(limit, stats=stats), start=1):
        if event.event == "publish":
            counts["publishes"] += 1
            pending.append((number, index_line(event.crate, event.version, deps_pool=pool)))
            pending_keys.add(collision_key(event.crate))
            if len(pending) >= 5000:
                flush()
            continue
        if collision_key(event.crate) in pending_keys:
            flush()
        counts[f"{event.event}s"] += 1
        change = ledger.yank if event.event == "yank" else ledger.unyank
        try:
            retrying(event.event, lambda: change(event.crate, event.version, ACTOR))  # noqa: B023
        except LedgerError:
            counts["skipped"] += 1
    flush()
    return {**counts, "seconds": time.perf_counter() - started, "read": stats.to_dict()}


# -- measuring (child) ----------------------------------------------------------------------------


def measure(url: str, remote: Path, clone: Path, audits: int) -> dict[str, Any]:
    """Rebuild, audits and scans on a store the setup filled."""
    from ledger.adapters.realdata import index_line
    from ledger.bootstrap import open_ledger
    from ledger.services.sync import WorkerOptions
    from ledger.settings import Settings

    out: dict[str, Any] = {}
    settings = Settings(store=url, remote=str(remote), branch=BRANCH, index_dir=clone, timeout_ms=600_000)
    with open_ledger(settings) as ledger:
        out["rows"] = retrying("count", lambda: view_rows(ledger))
        out["rebuild"] = retrying("rebuild", lambda: timed_rebuild(ledger))
        out["audit"] = retrying("audit", lambda: timed_audits(ledger, audits))

        scanned, scan_s = retrying("first scan", lambda: timed(ledger.scan_index))
        report, audit_s = retrying("audit", lambda: timed(ledger.audit))
        out["first_scan"] = scan_figures(scanned, scan_s, audit_s, report)

        # One commit: a new version of the first crate of the remote, synced by the worker.
        crate = first_crate(ledger)
        receipt = retrying("publish", lambda: ledger.publish(index_line(crate, "9999.0.0"), ACTOR))
        synced = retrying("sync", lambda: ledger.sync(WorkerOptions(max_batch=WORKER_BATCH)))
        out["commit"] = {"crate": crate, "position": receipt.position, "commits": len(synced.commits)}
        scanned, scan_s = retrying("incremental scan", lambda: timed(ledger.scan_index))
        report, audit_s = retrying("audit", lambda: timed(ledger.audit))
        out["incremental_scan"] = scan_figures(scanned, scan_s, audit_s, report)
        out["audit_after"] = retrying("audit", lambda: timed_audits(ledger, audits))
    # The machine's speed that day: git's connectivity check of the commit just pushed.
    out["connectivity_check_ms"] = connectivity_check_ms(remote, BRANCH)
    out["peak_rss_mib"] = peak_rss_mib()
    out["retried"] = RETRIED
    return out


def timed_rebuild(ledger: Ledger) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    position = ledger.rebuild()
    seconds = time.perf_counter() - started
    return {
        "events": position,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "events_per_s": position / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def view_rows(ledger: Ledger) -> dict[str, int]:
    tables = ("view_versions", "view_index", "view_index_files", "view_jobs")
    return {table: int(ledger.db.query(f"SELECT COUNT(*) FROM {table}")[0][0]) for table in tables}


def first_crate(ledger: Ledger) -> str:
    rows = ledger.db.query("SELECT crate FROM view_index_files ORDER BY crate_key LIMIT 1")
    return str(rows[0][0])


def timed_audits(ledger: Ledger, repeat: int) -> dict[str, Any]:
    times: list[float] = []
    report: Any = None
    for _ in range(repeat):
        report, seconds = timed(ledger.audit)
        times.append(seconds)
    return {
        "seconds": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "discrepancies": len(report.discrepancies),
        "counts": {k: v for k, v in report.counts.items() if v},
    }


def scan_figures(scanned: Any, scan_s: float, audit_s: float, report: Any) -> dict[str, Any]:
    return {
        "seconds": scan_s,
        "scan_reported_s": scanned.duration,
        "audit_s": audit_s,
        "total_s": scan_s + audit_s,
        "full": scanned.full,
        "files": scanned.files,
        "examined": scanned.examined,
        "observed": scanned.observed,
        "discrepancies": len(scanned.discrepancies),
        "audit_counts": {k: v for k, v in report.counts.items() if v},
    }


# -- the parent ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def report(results: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, r in results:
        m = r["measure"]
        rebuild, first, inc = m["rebuild"], m["first_scan"], m["incremental_scan"]
        audit_s = max(m["audit"]["median_s"], m["audit_after"]["median_s"])
        rows.append(
            [
                label,
                f"{rebuild['events']:,}",
                f"{rebuild['seconds']:.1f}",
                f"{rebuild['events_per_s']:,.0f} "
                f"({verdict(rebuild['events_per_s'] >= GOALS['rebuild_events_per_s'])})",
                f"{rebuild['events'] / rebuild['cpu_seconds']:,.0f}",
                f"{first['seconds']:.2f} ({verdict(first['seconds'] <= GOALS['first_scan_s'])})",
                f"{first['total_s']:.2f}",
                f"{inc['seconds'] * 1000:.0f} ({verdict(inc['seconds'] <= GOALS['incremental_scan_s'])})",
                f"{audit_s:.2f} ({verdict(audit_s <= GOALS['audit_s'])})",
                f"{m['peak_rss_mib']:,.0f} ({verdict(m['peak_rss_mib'] < GOALS['peak_mib'])})",
            ]
        )
    headers = [
        "store",
        "events",
        "rebuild s",
        "rebuild events/s",
        "rebuild events per client CPU s",
        "first scan s",
        "first audit --scan s",
        "incremental scan ms",
        "audit s (median)",
        "peak MiB",
    ]
    return markdown_table(headers, rows)


def child_main(args: argparse.Namespace) -> int:
    if args.child == "build-index":
        result = build_baseline_index(Path(args.repo), args.limit)
    elif args.child == "setup":
        result = setup(args.store[0], Path(args.repo), Path(args.clone), args.trace_limit)
    else:
        result = measure(args.store[0], Path(args.repo), Path(args.clone), args.audits)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", help="sqlite, postgres, both (default) or a store URL; repeatable"
    )
    parser.add_argument("--limit", type=int, default=None, help="baseline crates (default all)")
    parser.add_argument("--trace-limit", type=int, default=None, help="trace events (default all)")
    parser.add_argument("--audits", type=int, default=5, help="audits without scan to time (default 5)")
    parser.add_argument("--index-cache", type=Path, help="keep the built baseline index here for reuse")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child", choices=["build-index", "setup", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--clone", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    before_load = os.getloadavg()
    results: list[tuple[str, dict[str, Any]]] = []
    script = str(Path(__file__).resolve())
    with workdir("bench-views-") as folder:
        base, built = baseline_index(folder, args.index_cache, args.limit)
        print(f"baseline index: {json.dumps(built)}", file=sys.stderr, flush=True)
        for store in stores_from_args(args.store, folder):
            tag = store.label.lower()
            remote = copy_repo(base, folder / f"remote-{tag}.git")
            clone = folder / f"clone-{tag}.git"
            common = ["--store", store.url, "--repo", str(remote), "--clone", str(clone)]
            try:
                print(f"setting up {store.label} ...", file=sys.stderr, flush=True)
                argv = [script, "--child", "setup", *common]
                if args.trace_limit is not None:
                    argv += ["--trace-limit", str(args.trace_limit)]
                prepared = run_child(argv)
                print(json.dumps(prepared), file=sys.stderr, flush=True)
                load = os.getloadavg()[0]
                print(f"measuring {store.label} (load {load:.2f}) ...", file=sys.stderr, flush=True)
                measured = run_child([script, "--child", "measure", *common, "--audits", str(args.audits)])
                print(json.dumps(measured), file=sys.stderr, flush=True)
            finally:
                retrying("drop schema", lambda: drop_pg_schema(store))  # noqa: B023
            results.append((store.label, {"setup": prepared, "measure": measured, "load_before": load}))
    after_load = os.getloadavg()
    table = report(results)
    print(f"Command: `{command_line()}`")
    print(
        f"Machine: {machine()}; load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in before_load)}, after: {', '.join(f'{x:.2f}' for x in after_load)}"
    )
    for label, r in results:
        print(
            f"{label}: load before measuring {r['load_before']:.2f}; machine reference: git's "
            f"connectivity check of the last push, {r['measure']['connectivity_check_ms']:.0f} ms"
        )
    print()
    print(table)
    if args.json is not None:
        document = {"command": command_line(), "baseline_index": built, "results": dict(results)}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
