"""Publish benchmark on the real crates.io data: single-publish latency and batched throughput.

For each store, in a process of its own (so peak memory is per store):

(b) the batched path: every baseline version (1,050,952 by default) through
    ``publish_many`` with ~5000 events per save: events/s, versions/s, wall time, peak memory;
(a) then single publishes of the first ``--single`` trace publishes (real names and versions,
    lines from ``ledger.adapters.realdata.index_line``) on the store the import filled: p50/p99 latency.

Usage: .venv/bin/python scripts/bench_publish.py [--store sqlite|postgresql|both|URL]...
       [--single N] [--limit N] [--events-per-save N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    TimedIterator,
    command_line,
    drop_pg_schema,
    machine,
    markdown_table,
    peak_rss_mib,
    percentile,
    run_child,
    stores_from_args,
    workdir,
)

GOALS = {
    "SQLite": {"p99_ms": 2.0, "events_per_s": 50_000},
    "PostgreSQL": {"p99_ms": 5.0, "events_per_s": 20_000},
}
MEMORY_GOAL_MIB = 1024.0


def baseline_lines(limit: int | None, pool: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Numbered index lines of the baseline; ``pool`` collects the crates already passed."""
    from ledger.adapters.realdata import baseline, index_line

    current: str | None = None
    for number, (crate, version) in enumerate(baseline(limit), start=1):
        if crate != current:
            if current is not None:
                pool.append(current)
            current = crate
        yield number, index_line(crate, version, deps_pool=pool)
    if current is not None:
        pool.append(current)


def measure(url: str, single: int, limit: int | None, events_per_save: int) -> dict[str, Any]:
    """Both measurements on one store (run in a child process)."""
    from ledger.adapters.realdata import ReadStats, index_line, trace
    from ledger.bootstrap import open_ledger
    from ledger.domain.errors import LedgerError
    from ledger.settings import Settings

    out: dict[str, Any] = {"url": url}
    with open_ledger(Settings(store=url)) as ledger:
        pool: list[str] = []
        source = TimedIterator(baseline_lines(limit, pool))
        start, cpu = time.perf_counter(), time.process_time()
        bulk = ledger.publish_many(source, "bench", events_per_save=events_per_save)
        wall = time.perf_counter() - start
        ledger_s = wall - source.seconds
        ledger_cpu_s = time.process_time() - cpu - source.cpu_seconds
        out["bulk"] = {
            "versions": bulk.accepted,
            "present": bulk.present,
            "refused": len(bulk.refused),
            "events": bulk.events,
            "jobs": bulk.jobs,
            "wall_s": wall,
            "source_s": source.seconds,
            "ledger_s": ledger_s,
            "ledger_cpu_s": ledger_cpu_s,
            "events_per_cpu_s": bulk.events / ledger_cpu_s,
            "events_per_s": bulk.events / ledger_s,
            "versions_per_s": bulk.accepted / ledger_s,
            "events_per_s_wall": bulk.events / wall,
            "peak_rss_mib": peak_rss_mib(),
        }

        stats = ReadStats()
        latencies: list[float] = []
        skipped = 0
        for event in trace(stats=stats):
            if len(latencies) >= single:
                break
            if event.event != "publish":
                continue
            line = index_line(event.crate, event.version, deps_pool=pool)
            start = time.perf_counter()
            try:
                ledger.publish(line, "bench")
            except LedgerError:
                skipped += 1
                continue
            latencies.append(time.perf_counter() - start)
        latencies.sort()
        out["single"] = {
            "publishes": len(latencies),
            "skipped": skipped,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
            "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def report(results: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, r in results:
        bulk, single = r["bulk"], r["single"]
        goal = GOALS[label]
        p99_ok = single["p99_ms"] <= goal["p99_ms"]
        rate_ok = bulk["events_per_s"] >= goal["events_per_s"]
        memory_ok = r["peak_rss_mib"] < MEMORY_GOAL_MIB
        rows.append(
            [
                label,
                f"{single['p50_ms']:.2f}",
                f"{single['p99_ms']:.2f} ({_verdict(p99_ok)}: <= {goal['p99_ms']:g})",
                f"{bulk['versions']:,}",
                f"{bulk['events']:,}",
                f"{bulk['wall_s']:.1f}",
                f"{bulk['events_per_s']:,.0f} ({_verdict(rate_ok)}: >= {goal['events_per_s']:,})",
                f"{bulk['events_per_cpu_s']:,.0f}",
                f"{bulk['versions_per_s']:,.0f}",
                f"{r['peak_rss_mib']:,.0f} ({_verdict(memory_ok)}: < {MEMORY_GOAL_MIB:,.0f})",
            ]
        )
    headers = [
        "store",
        "publish p50 ms",
        "publish p99 ms",
        "versions",
        "events",
        "wall s",
        "events/s",
        "events per client CPU s",
        "versions/s",
        "peak MiB",
    ]
    return markdown_table(headers, rows)


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        action="append",
        help="sqlite, postgresql, both (default) or a store URL; repeatable",
    )
    parser.add_argument("--single", type=int, default=2000, help="single publishes to time (default 2000)")
    parser.add_argument("--limit", type=int, default=None, help="baseline versions to import (default all)")
    parser.add_argument("--events-per-save", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = measure(args.store[0], args.single, args.limit, args.events_per_save)
        print(json.dumps(result))
        return 0

    before_load = f"{os.getloadavg()[0]:.2f}"
    results: list[tuple[str, dict[str, Any]]] = []
    with workdir("bench-publish-") as folder:
        for store in stores_from_args(args.store, folder):
            child = [__file__, "--child", "--store", store.url, "--single", str(args.single)]
            child += ["--events-per-save", str(args.events_per_save)]
            if args.limit is not None:
                child += ["--limit", str(args.limit)]
            print(f"measuring {store.label} ...", file=sys.stderr, flush=True)
            try:
                result = run_child(child)
            finally:
                drop_pg_schema(store)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append((store.label, result))
    table = report(results)
    print(f"Command: `{command_line()}`")
    print(f"Machine: {machine()}; load average before: {before_load}, after: {os.getloadavg()[0]:.2f}")
    print()
    print(table)
    if args.json is not None:
        args.json.write_text(json.dumps({"command": command_line(), "results": dict(results)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
