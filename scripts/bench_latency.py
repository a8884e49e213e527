"""Publish-to-confirmed latency of a following worker, woken by the store or polling.

What a publisher's user waits for: from a publish being recorded (its ``IndexSyncEnqueued``
event) to its index job being confirmed by read-back (its ``IndexPushConfirmed`` event), both
times taken from the ledger's own log (``ledger.timeline()``).

For each worker mode, on a fresh copy of the seed ``scripts/bench_sync.py --save-seed`` wrote
(a git:// server repository holding the real baseline index, its clone and a SQLite store that
adopted it):

  wake   a worker process following the log with ``follow(poll=1.0, wake=True)``: it wakes when
         the store says the log grew (SQLite's ``data_version``) or after ``--poll`` seconds;
  poll   the same with ``wake=False``: it looks for new jobs every ``--poll`` seconds only.

The publisher (this process) replays stretches of the real trace's publishes through
``ledger.publish`` at the trace's arrival times, gaps longer than 5 s shortened to 5 s, then
at 10x and 100x (inter-arrival times divided). The trace knows only the end of the 15-minute
window each event was seen in: with ``--arrivals spread`` (the default) a window's publishes
are spaced evenly over its interval, with ``--arrivals window`` they all arrive at its end, back
to back. Each rate replays its own stretch of the trace (the busiest one of the wanted size:
24 / 200 / 300 publishes spread, 60 / 200 / 300 by window), the same stretches for both modes.

Usage: .venv/bin/python scripts/bench_latency.py [--quick] [--seed DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GitRemote, command_line, machine, markdown_table, percentile
from bench_sync import CONFIG, Recorder, _settings

if TYPE_CHECKING:
    from ledger.adapters.realdata import TraceEvent
    from ledger.services.ledger import Ledger

MAX_GAP_S = 5.0
RATES = ((1, "real"), (10, "10x"), (100, "100x"))
SIZES = {"spread": {1: 24, 10: 200, 100: 300}, "window": {1: 60, 10: 200, 100: 300}}
QUICK_SIZES = {"spread": {1: 4, 10: 20, 100: 30}, "window": {1: 10, 10: 20, 100: 30}}
GOALS_P99_S = {1: 1.0, 100: 5.0}
WINDOW_S = 900.0
CONFIRM_TIMEOUT_S = 180.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the worker (child process) ---------------------------------------------------------------


def worker_child(
    store: str, remote: str, clone: Path, wake: bool, poll: float, ready: Path
) -> dict[str, Any]:
    """Follow the log until SIGTERM; this process's CPU time is read from /proc by the parent."""
    import resource

    from ledger.bootstrap import open_ledger
    from ledger.services.sync import SyncWorker, WorkerOptions

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with open_ledger(_settings(store, remote, clone)) as ledger:
        worker = SyncWorker(ledger, ledger.index(), options=WorkerOptions(max_batch=100, index_config=CONFIG))
        worker.run_once()  # warm up: opens the clone and the store's caches
        ready.touch()
        worker.follow(poll=poll, stop=stop, wake=wake)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- choosing the stretches ---------------------------------------------------------------------


def pool_and_foreign(seed_db: Path) -> tuple[list[str], set[str]]:
    """The baseline's crate names in order (the dependency pool of the trace's index lines), and
    the collision keys of crates whose file in the seed holds lines the store did not adopt: a
    job for one of them is held until the operator adopts them, so the stretches avoid them."""
    import sqlite3

    from ledger.adapters.realdata import baseline
    from ledger.domain.names import collision_key

    names: list[str] = []
    lines: Counter[str] = Counter()
    for crate, _ in baseline():
        if not names or names[-1] != crate:
            names.append(crate)
        lines[collision_key(crate)] += 1
    with sqlite3.connect(f"file:{seed_db}?mode=ro&immutable=1", uri=True) as conn:
        adopted = dict(conn.execute("SELECT crate_key, count(*) FROM view_versions GROUP BY crate_key"))
    return names, {key for key, count in lines.items() if adopted.get(key, 0) < count}


def arrivals(events: list[TraceEvent], how: str, avoid: set[str]) -> list[tuple[float, TraceEvent]]:
    """The trace's publishes with an arrival time each.

    The trace knows only the end of the 15-minute window an event was seen in. ``spread``: a
    window's publishes arrive evenly spaced over its interval (from the previous window's end to
    its own, the last at its end); ``window``: they all arrive at its end, back to back.
    """
    grouped: list[list[TraceEvent]] = []
    for event in events:
        if event.event != "publish":
            continue
        if grouped and grouped[-1][0].unix_ts == event.unix_ts:
            grouped[-1].append(event)
        else:
            grouped.append([event])
    from ledger.domain.names import collision_key

    timed: list[tuple[float, TraceEvent]] = []
    previous_end: float | None = None
    for window in grouped:
        end = float(window[0].unix_ts)
        begin = end - WINDOW_S if previous_end is None else previous_end
        for k, event in enumerate(window):
            at = end if how == "window" else begin + (k + 1) * (end - begin) / len(window)
            if collision_key(event.crate) not in avoid:
                timed.append((at, event))
        previous_end = end
    return timed


def schedule(stretch: list[tuple[float, TraceEvent]], speed: int) -> list[float]:
    """Each publish's offset from the first: real gaps, shortened to 5 s, divided by ``speed``."""
    offsets = [0.0]
    for (before, _), (at, _) in itertools.pairwise(stretch):
        offsets.append(offsets[-1] + min(MAX_GAP_S, at - before) / speed)
    return offsets


def choose_stretches(
    timed: list[tuple[float, TraceEvent]], sizes: dict[int, int]
) -> dict[int, list[tuple[float, TraceEvent]]]:
    """For each rate, the ``size`` consecutive publishes that replay in the least time (the
    busiest stretch of the trace), stretches of different rates not overlapping."""
    gaps = [0.0] + [min(MAX_GAP_S, b[0] - a[0]) for a, b in itertools.pairwise(timed)]
    used: list[tuple[int, int]] = []
    chosen: dict[int, list[tuple[float, TraceEvent]]] = {}
    for speed, size in sorted(sizes.items(), key=lambda item: -item[1]):
        best: tuple[float, int] | None = None
        span = sum(gaps[1:size])
        for start in range(len(timed) - size + 1):
            if start:
                span += gaps[start + size - 1] - gaps[start]
            end = start + size
            if any(start < u_end and u_start < end for u_start, u_end in used):
                continue
            if best is None or span < best[0] - 1e-9:
                best = (span, start)
        if best is None:
            raise SystemExit(f"no stretch of {size} publishes left in the trace")
        start = best[1]
        used.append((start, start + size))
        chosen[speed] = timed[start : start + size]
    return chosen


# -- one replay -----------------------------------------------------------------------------------


def _parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def job_times(
    ledger: Ledger, since: datetime, jobs: set[str]
) -> tuple[dict[str, float], dict[str, float], set[str]]:
    """Each job's ``IndexSyncEnqueued`` and first ``IndexPushConfirmed`` time, from the log, and
    the jobs held (``IndexSyncHeld``) instead."""
    enqueued: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    held: set[str] = set()
    for record in ledger.timeline(since=since):
        job = record.get("job")
        if job not in jobs:
            continue
        if record["event"] == "IndexSyncEnqueued":
            enqueued.setdefault(job, _parse(record["time"]))
        elif record["event"] == "IndexPushConfirmed":
            confirmed.setdefault(job, _parse(record["time"]))
        elif record["event"] == "IndexSyncHeld":
            held.add(job)
    return enqueued, confirmed, held - set(confirmed)


def replay(
    ledger: Ledger, recorder: Recorder, stretch: list[tuple[float, TraceEvent]], speed: int, pid: int
) -> dict[str, Any]:
    offsets = schedule(stretch, speed)
    since = datetime.now(UTC)
    load_before = os.getloadavg()
    cpu_before = proc_cpu_s(pid)
    jobs: set[str] = set()
    refused_before = sum(recorder.refused.values())
    lag_max = 0.0
    started = time.perf_counter()
    for offset, (_, event) in zip(offsets, stretch, strict=True):
        wait = started + offset - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        lag_max = max(lag_max, time.perf_counter() - started - offset)
        receipt = recorder.single(event)
        if receipt is not None and receipt.job is not None:
            jobs.add(str(receipt.job))
    published_s = time.perf_counter() - started
    deadline = time.perf_counter() + CONFIRM_TIMEOUT_S
    while True:
        enqueued, confirmed, held = job_times(ledger, since, jobs)
        if len(confirmed) + len(held) >= len(jobs) or time.perf_counter() > deadline:
            break
        time.sleep(0.5)
    # The last confirmation's time, then the worker's CPU time up to now (it polls once more at most).
    cpu_s = proc_cpu_s(pid) - cpu_before
    wall_s = time.perf_counter() - started
    latencies = sorted((confirmed[j] - enqueued[j]) * 1000 for j in jobs if j in confirmed and j in enqueued)
    planned_s = offsets[-1]
    return {
        "speed": speed,
        "publishes": len(stretch),
        "accepted_jobs": len(jobs),
        "refused": sum(recorder.refused.values()) - refused_before,
        "confirmed": len(confirmed),
        "held": len(held),
        "unconfirmed": len(jobs) - len(confirmed),
        "trace_from": stretch[0][1].unix_ts,
        "trace_to": stretch[-1][1].unix_ts,
        "trace_windows": len({e.unix_ts for _, e in stretch}),
        "planned_s": planned_s,
        "published_s": published_s,
        "planned_rate": (len(stretch) - 1) / planned_s if planned_s else None,
        "held_rate": (len(stretch) - 1) / published_s if published_s else None,
        "schedule_lag_max_ms": lag_max * 1000,
        "wall_s": wall_s,
        "worker_cpu_s": cpu_s,
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else float("nan"),
            "min": latencies[0] if latencies else float("nan"),
        },
        "latencies_ms": latencies,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


# -- one mode -------------------------------------------------------------------------------------


def run_mode(
    mode: str, args: argparse.Namespace, stretches: dict[int, list[tuple[float, TraceEvent]]], pool: list[str]
) -> dict[str, Any]:
    from ledger.bootstrap import open_ledger

    here = args.workdir / mode
    if here.exists():
        shutil.rmtree(here)
    print(f"{mode}: copying the seed ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    shutil.copytree(args.seed / "seeded", here)
    copy_s = time.perf_counter() - start
    store = f"sqlite:///{here / 'ledger.db'}"
    clone = here / "clone.git"
    server = GitRemote(here / "srv")
    ready = here / "worker.ready"
    worker_log = (here / "worker.log").open("wb")
    argv = [sys.executable, __file__, "--child-worker", "--store-url", store, "--remote", server.url]
    argv += ["--clone", str(clone), "--poll", str(args.poll), "--ready", str(ready)]
    argv += ["--wake"] if mode == "wake" else ["--no-wake"]
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=worker_log, text=True)
    out: dict[str, Any] = {"mode": mode, "copy_s": copy_s, "replays": {}}
    try:
        start = time.perf_counter()
        while not ready.exists():
            if worker.poll() is not None:
                raise SystemExit(
                    f"{mode}: the worker exited with {worker.returncode} (see {here / 'worker.log'})"
                )
            time.sleep(0.1)
        out["worker_warm_up_s"] = time.perf_counter() - start
        time.sleep(args.poll * 2)  # let the worker settle into following
        with open_ledger(_settings(store, server.url, clone)) as ledger:
            recorder = Recorder(ledger, pool)
            for speed, label in RATES:
                print(
                    f"{mode}: replaying {len(stretches[speed])} publishes at {label} ...",
                    file=sys.stderr,
                    flush=True,
                )
                result = replay(ledger, recorder, stretches[speed], speed, worker.pid)
                out["replays"][label] = result
                shown = {k: v for k, v in result.items() if k != "latencies_ms"}
                print(f"{mode} {label}: {json.dumps(shown)}", file=sys.stderr, flush=True)
                time.sleep(args.poll * 2)
            out["refused"] = dict(recorder.refused)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                stdout, _ = worker.communicate(timeout=60)
                lines = [ln for ln in stdout.splitlines() if ln.strip()]
                if lines:
                    out["worker"] = json.loads(lines[-1])
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        worker_log.close()
        server.stop()
        if not args.keep:
            shutil.rmtree(here, ignore_errors=True)
    return out


# -- report ---------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value == value else "-"


def _rate(r: dict[str, Any]) -> str:
    if r["planned_rate"] is None:
        return f"all at once ({r['published_s'] * 1000:,.0f} ms)"
    return f"{r['held_rate']:.2f} / {r['planned_rate']:.2f} (lag max {r['schedule_lag_max_ms']:,.0f} ms)"


def _goal(speed: int, p99_ms: float) -> str:
    goal = GOALS_P99_S.get(speed)
    if goal is None:
        return "-"
    return f"{'met' if p99_ms <= goal * 1000 else 'missed'} (<= {goal:g} s)"


def report(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for mode, m in results["modes"].items():
        for label, r in m["replays"].items():
            lat = r["latency_ms"]
            rows.append(
                [
                    mode,
                    label,
                    f"{r['publishes']} ({r['trace_windows']} trace windows)",
                    _rate(r),
                    f"{r['confirmed']} / {r['accepted_jobs']}",
                    _ms(lat["p50"]),
                    _ms(lat["p90"]),
                    _ms(lat["p99"]),
                    _ms(lat["max"]),
                    f"{r['worker_cpu_s']:.2f} s over {r['wall_s']:.1f} s",
                    _goal(r["speed"], lat["p99"]),
                    f"{r['load_avg_before'][0]:.2f} / {r['load_avg_after'][0]:.2f}",
                ]
            )
    headers = [
        "mode",
        "rate",
        "publishes",
        "rate held / planned (publishes/s)",
        "confirmed / jobs",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "worker CPU",
        "p99 goal",
        "load 1 min before / after",
    ]
    parts = [
        f"Machine: {results['machine']}; SQLite store (the seed's); "
        f"poll {results['poll_s']:g} s, max_batch 100; arrivals: {results['arrivals']}.",
        "",
        f"```\n{results['command']}\n```",
        "",
        markdown_table(headers, rows),
    ]
    modes = results["modes"]
    if "wake" in modes and "poll" in modes:
        ratio_rows = []
        for label in modes["wake"]["replays"]:
            w = modes["wake"]["replays"][label]["latency_ms"]
            p = modes["poll"]["replays"].get(label, {}).get("latency_ms")
            if p is None:
                continue
            ratio_rows.append(
                [
                    label,
                    f"{p['p50'] / w['p50']:.1f}x" if w["p50"] else "-",
                    f"{p['p99'] / w['p99']:.1f}x" if w["p99"] else "-",
                ]
            )
        parts += ["", markdown_table(["rate", "poll/wake p50", "poll/wake p99"], ratio_rows)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seed", type=Path, default=Path("/work/bench/seed"), help="a folder --save-seed wrote"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/work/bench/latency"), help="where the copies go"
    )
    parser.add_argument("--modes", nargs="+", choices=["wake", "poll"], default=["wake", "poll"])
    parser.add_argument(
        "--arrivals",
        choices=["spread", "window"],
        default="spread",
        help="a window's publishes evenly spread over its 15 minutes (the default) or all at its end",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="the worker's poll interval (s)")
    parser.add_argument(
        "--quick", action="store_true", help="10 / 20 / 30 publishes instead of 60 / 200 / 300"
    )
    parser.add_argument("--keep", action="store_true", help="keep each mode's copy of the seed")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--child-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--clone", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--wake", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_worker:
        result = worker_child(args.store_url, args.remote, args.clone, args.wake, args.poll, args.ready)
        print(json.dumps(result))
        return 0

    from ledger.adapters.realdata import trace

    if not (args.seed / "seeded" / "ledger.db").exists():
        raise SystemExit(f"no seed in {args.seed}: run scripts/bench_sync.py --save-seed {args.seed} first")
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else SIZES
    print("reading the baseline and the seed's adopted versions ...", file=sys.stderr, flush=True)
    pool, foreign = pool_and_foreign(args.seed / "seeded" / "ledger.db")
    stretches = choose_stretches(arrivals(list(trace()), args.arrivals, foreign), sizes[args.arrivals])
    results: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "poll_s": args.poll,
        "arrivals": args.arrivals,
        "sizes": {str(k): v for k, v in sizes[args.arrivals].items()},
        "max_gap_s": MAX_GAP_S,
        "modes": {},
    }
    for mode in args.modes:
        results["modes"][mode] = run_mode(mode, args, stretches, pool)
    text = report(results)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "report": text}, indent=1))
    counts = Counter(r["unconfirmed"] for m in results["modes"].values() for r in m["replays"].values())
    return 0 if set(counts) <= {0} else 1


if __name__ == "__main__":
    sys.exit(main())
