"""Shared helpers for the benchmark scripts: stores, subprocess runs, figures and tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PG_BASE = os.environ.get("LEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
STORE_CHOICES = ("sqlite", "postgresql", "both")


@dataclass(frozen=True)
class Store:
    """A store to measure: its URL, a short label, and what to drop afterwards."""

    label: str
    url: str
    pg_schema: str | None = None


def stores_from_args(values: Sequence[str] | None, workdir: Path) -> list[Store]:
    """``sqlite``, ``postgresql``, ``both`` (the default) or explicit store URLs."""
    chosen: list[Store] = []
    for value in values or ["both"]:
        if value in ("sqlite", "both"):
            chosen.append(Store("SQLite", f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"))
        if value in ("postgresql", "postgres", "both"):
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            chosen.append(Store("PostgreSQL", f"{PG_BASE}?schema={schema}", schema))
        if value.startswith("sqlite:///"):
            chosen.append(Store("SQLite", value))
        elif value.startswith(("postgresql://", "postgres://")):
            chosen.append(Store("PostgreSQL", value))
        elif value not in ("sqlite", "both", "postgresql", "postgres"):
            raise SystemExit(f"unknown store {value!r}: use sqlite, postgresql, both or a store URL")
    return chosen


def drop_pg_schema(store: Store) -> None:
    """Drop the temporary PostgreSQL schema a benchmark created."""
    if store.pg_schema is None:
        return
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{store.pg_schema}" CASCADE')


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


def run_child(argv: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh process; it prints one JSON document as its last line."""
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"child {' '.join(argv)} failed with exit code {done.returncode}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


class TimedIterator(Iterator[T]):
    """Wraps an iterator and adds up the time (wall and CPU) spent producing its items."""

    def __init__(self, source: Iterator[T]) -> None:
        self._source = source
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __iter__(self) -> TimedIterator[T]:
        return self

    def __next__(self) -> T:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return next(self._source)
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def connectivity_check_ms(bare: Path, branch: str, runs: int = 7) -> float:
    """The median time of the check git's receive-pack runs on every push, on the branch's head.

    ``git rev-list --objects <head> --not <parent>``: it marks every object of the parent's
    tree as already present (the whole index) before it walks what the push brought. A fixed
    piece of C work on a given index, it also tells how fast the machine is that day.
    """
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            ["git", f"--git-dir={bare}", "rev-list", "--objects", "--quiet", branch, f"^{branch}~1"],
            check=True,
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {platform.system()}"


def command_line() -> str:
    """The exact command that was run, as it can be pasted into a shell."""
    script = os.path.relpath(sys.argv[0]) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return shlex.join([".venv/bin/python", script, *sys.argv[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s; waits for the process either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99, mean and max of durations in seconds, the figures in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p90_ms": percentile(ordered, 0.90) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


class GitRemote:
    """The index: ``python -m ledger.testing.remote serve --protocol git`` in a process of its own,
    serving ``base/index.git``; its log beside ``base`` (``<base>.log``)."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.bare = base / "index.git"
        log = base.parent / f"{base.name}.log"
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger.testing.remote", "serve", "--dir", str(base), "--protocol", "git"],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url.startswith("git://"):
            self.stop()
            raise SystemExit(f"the git server did not start (see {log})")

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def run_phase(script: str, args: Sequence[str], label: str, *, load_every_s: float = 10.0) -> dict[str, Any]:
    """Run ``script args`` in a fresh process (its stderr passes through) and return the JSON
    document it printed last, with the 1-minute load average sampled while it ran
    (``load_avg_1min``) and its wall time (``phase_wall_s``)."""
    import threading

    print(f"{label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    loads: list[float] = []
    finished = threading.Event()

    def sample_load() -> None:
        while not finished.wait(load_every_s):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    try:
        done = subprocess.run([sys.executable, script, *args], stdout=subprocess.PIPE, text=True, check=False)
    finally:
        finished.set()
        sampler.join()
    if done.returncode != 0:
        raise SystemExit(f"{label} failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads([ln for ln in done.stdout.splitlines() if ln.strip()][-1])
    result["phase_wall_s"] = time.perf_counter() - start
    if loads:
        result["load_avg_1min"] = {"mean": statistics.fmean(loads), "max": max(loads), "samples": len(loads)}
    return result
