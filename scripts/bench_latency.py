"""Publish-to-confirmed latency of a following worker, woken by the store or polling.

What a publisher's user waits for: from a publish being recorded (its ``IndexSyncEnqueued``
event) to its index job being confirmed by read-back (its ``IndexPushConfirmed`` event), both
times taken from the ledger's own log (``ledger.timeline()``).

For each worker mode, on a fresh copy of the seed ``scripts/bench_sync.py --save-seed`` wrote
(a git:// server repository holding the real baseline index, its clone and a SQLite store that
adopted it):

  wake   a worker process following the log with ``follow(poll=1.0, wake=True)``: it wakes when
         the store says the log grew (SQLite's ``data_version``, PostgreSQL's NOTIFY) or after
         ``--poll`` seconds;
  poll   the same with ``wake=False``: it looks for new jobs every ``--poll`` seconds only.

The store (``--store``):

  sqlite      (the default) each mode's copy of the seed's SQLite store;
  postgresql  a database of its own per mode, ``CREATE DATABASE ledger_latency_<mode> TEMPLATE
              ledger_latency_seed`` (dropped at the end unless ``--keep``). The template is built
              once from the seed: bench_sync's ``adopt`` (``import_index`` over git:// from a copy
              of the seed's server, with a copy of its clone, then the views caught up) into a fresh
              database, whose comment records the seed's head commit; later runs reuse it while
              that head matches the seed's ``seed.json`` and rebuild it when not.

The publish path (``--path``):

  serve    (the default: the registry's publish path) ``ledger serve`` without its own worker, in
           a process of its own on the mode's store; each publish is a cargo publish request
           (``PUT /api/v1/crates/new``: u32 LE length, JSON metadata, u32 LE length, the .crate),
           built from the same index line the library path records (``Recorder.line``) the way
           ``scripts/bench_serve.py`` builds them, sent over one keep-alive connection with the
           token of a user made owner of the trace's crates beforehand. A publish's job is found
           in the log by its crate and version (``VersionPublished``); refusals are counted by
           HTTP status and error;
  library  ``ledger.publish`` in this process; a publish's job is its receipt's; refusals are
           counted by ``LedgerError`` class.

The publisher replays stretches of the real trace's publishes at the trace's arrival times, gaps
longer than 5 s shortened to 5 s, then at 10x and 100x (inter-arrival times divided). The trace
knows only the end of the 15-minute window each event was seen in: with ``--arrivals spread``
(the default) a window's publishes are spaced evenly over its interval, with ``--arrivals window``
they all arrive at its end, back to back. Each rate replays its own stretch of the trace (the
busiest one of the wanted size: 24 / 200 / 300 publishes spread, 60 / 200 / 300 by window), the
same stretches for both modes.

Usage: .venv/bin/python scripts/bench_latency.py [--store sqlite|postgresql] [--path serve|library]
       [--modes wake poll] [--arrivals spread|window] [--poll S] [--quick] [--seed DIR]
       [--workdir DIR] [--keep] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PG_BASE,
    GitRemote,
    command_line,
    machine,
    markdown_table,
    process_cpu_s,
    run_phase,
    stop_process,
)
from bench_serve import PUBLISH_PATH, SEED, USER, TextPool, crate_file, metadata, publish_body, summary
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

PG_TEMPLATE = "ledger_latency_seed"
PG_SCHEMA = "ledger"
SERVE_READY_TIMEOUT_S = 120.0
OPERATOR = "operator"
STORE_TITLES = {
    "sqlite": "SQLite store (each mode on a copy of the seed's)",
    "postgresql": f"PostgreSQL store (each mode on a database copied from template {PG_TEMPLATE}, "
    "the seed adopted)",
}
PATH_TITLES = {
    "serve": "publishes through `ledger serve` (cargo's PUT /api/v1/crates/new, one keep-alive "
    "connection; the server's own worker off)",
    "library": "publishes through `ledger.publish` (the library, in the publisher's process)",
}
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


# -- reading the log ----------------------------------------------------------------------------


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


def version_key(crate: str, version: str) -> str:
    """How a publish is named until its job is known: the crate's collision key and the version."""
    from ledger.domain.names import collision_key

    return f"{collision_key(crate)}@{version}"


def jobs_by_version(ledger: Ledger, since: datetime, keys: set[str]) -> dict[str, str]:
    """The job of each ``crate@version`` of ``keys`` published since ``since``, from its
    ``VersionPublished`` event (or the ``IndexSyncEnqueued`` naming it)."""
    found: dict[str, str] = {}
    for record in ledger.timeline(since=since):
        if record["event"] == "VersionPublished":
            versions = [record.get("version")]
        elif record["event"] == "IndexSyncEnqueued":
            versions = list(record.get("versions") or [])
        else:
            continue
        for version in versions:
            key = version_key(str(record.get("crate")), str(version))
            if key in keys and record.get("job"):
                found.setdefault(key, str(record["job"]))
    return found


# -- the publish paths ----------------------------------------------------------------------------


class Publisher(Protocol):
    """Sends one trace publish; says what names it when accepted (None when refused)."""

    refused: Counter[str]

    def publish(self, event: TraceEvent) -> str | None: ...

    def jobs(self, ledger: Ledger, since: datetime, accepted: set[str]) -> set[str]:
        """The jobs of the accepted publishes (those found so far)."""
        ...


class LibraryPath:
    """``ledger.publish`` in this process: an accepted publish is named by its receipt's job."""

    def __init__(self, ledger: Ledger, pool: list[str]) -> None:
        self.recorder = Recorder(ledger, pool)
        self.refused = self.recorder.refused

    def publish(self, event: TraceEvent) -> str | None:
        receipt = self.recorder.single(event)
        if receipt is None or receipt.job is None:
            return None
        return str(receipt.job)

    def jobs(self, ledger: Ledger, since: datetime, accepted: set[str]) -> set[str]:
        return accepted


class ServePath:
    """cargo publish requests to ``ledger serve``, over one keep-alive connection: an accepted
    publish is named ``crate@version``, its job found in the log."""

    def __init__(self, url: str, token: str, bodies: dict[tuple[str, str], bytes]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": token, "Content-Type": "application/octet-stream"}
        self.bodies = bodies
        self.refused: Counter[str] = Counter()
        self.found: dict[str, str] = {}
        self.reconnects = 0
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def publish(self, event: TraceEvent) -> str | None:
        status, detail = self._put(self.bodies[(event.crate, event.version)])
        if status == 200:
            return version_key(event.crate, event.version)
        self.refused[refusal(status, detail, event)] += 1
        return None

    def jobs(self, ledger: Ledger, since: datetime, accepted: set[str]) -> set[str]:
        missing = accepted - self.found.keys()
        if missing:
            self.found.update(jobs_by_version(ledger, since, missing))
        return {self.found[key] for key in accepted if key in self.found}

    def close(self) -> None:
        self.conn.close()

    def _put(self, body: bytes) -> tuple[int, str]:
        try:
            self.conn.request("PUT", PUBLISH_PATH, body=body, headers=self.headers)
            answer = self.conn.getresponse()
            data = answer.read()
            if answer.will_close:
                self._reconnect()
        except (OSError, http.client.HTTPException) as exc:
            self._reconnect()
            return -1, type(exc).__name__
        return answer.status, "" if answer.status == 200 else error_detail(data)

    def _reconnect(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.reconnects += 1


def error_detail(data: bytes) -> str:
    """The ``detail`` of cargo's error shape (``{"errors": [{"detail": ...}]}``), else the text."""
    try:
        return str(json.loads(data)["errors"][0]["detail"])
    except (ValueError, KeyError, IndexError, TypeError):
        return data[:200].decode(errors="replace")


def refusal(status: int, detail: str, event: TraceEvent) -> str:
    """A refused request's counter: its status and error, without the crate's name and version."""
    if status < 0:
        return f"publish: connection error {detail}"
    text = detail.replace(event.crate, "CRATE").replace(event.version, "VERSION")
    return f"publish: HTTP {status} {re.sub(r'[0-9]+', 'N', text)[:80]}"


def build_bodies(
    stretches: dict[int, list[tuple[float, TraceEvent]]], pool: list[str]
) -> dict[tuple[str, str], bytes]:
    """cargo's publish body for every publish of the stretches, from ``Recorder.line`` (the
    library path's index line), built the way ``scripts/bench_serve.py`` builds them."""
    lines = Recorder(cast("Ledger", None), pool)  # line() reads the dependency pool only
    text = TextPool(SEED)
    bodies: dict[tuple[str, str], bytes] = {}
    for speed in sorted(stretches):
        for _, event in stretches[speed]:
            if (event.crate, event.version) not in bodies:
                line = lines.line(event)
                meta = metadata(line)
                bodies[(event.crate, event.version)] = publish_body(meta, crate_file(line, meta, text))
    return bodies


def grant(ledger: Ledger, crates: set[str]) -> tuple[str, int]:
    """A token for the bench user, made an owner of every crate of ``crates`` the store knows
    (a new crate is its publisher's); the token and how many crates it was made owner of."""
    from ledger.domain.errors import LedgerError

    _, token = ledger.app.create_token(USER, OPERATOR)
    added = 0
    for name in sorted(crates):
        crate = ledger.app.find_crate(name)
        if crate is None or USER in crate.owners:
            continue
        with contextlib.suppress(LedgerError):  # e.g. another spelling: its publishes are refused
            ledger.app.add_owner(name, USER, OPERATOR)
            added += 1
    return token, added


@contextlib.contextmanager
def serving(store: str, remote: str, here: Path) -> Iterator[str]:
    """``ledger serve`` (no worker) on ``store`` in a process of its own, on a free port; its URL
    once it answers. Its output goes to ``here/serve.log``."""
    from ledger.testing.s3 import free_port

    port = free_port()
    argv = [sys.executable, "-m", "ledger", "--store", store, "--remote", remote, "serve"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--crate-dir", str(here / "crates")]
    with (here / "serve.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_answering(url, process, here / "serve.log")
            yield url
        finally:
            stop_process(process)


def wait_answering(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    """Until the server answers an HTTP request (any status), or SystemExit."""
    parts = urlsplit(url)
    deadline = time.perf_counter() + SERVE_READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise SystemExit(f"ledger serve exited with {process.returncode} (see {log})")
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=5)
        try:
            conn.request("GET", "/api/v1/crates")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            if time.perf_counter() > deadline:
                raise SystemExit(f"ledger serve did not answer at {url} (see {log})") from None
            time.sleep(0.1)
        finally:
            conn.close()


@contextlib.contextmanager
def publish_path(
    args: argparse.Namespace,
    ledger: Ledger,
    mode: Mode,
    stretches: dict[int, list[tuple[float, TraceEvent]]],
    pool: list[str],
    bodies: dict[tuple[str, str], bytes],
) -> Iterator[Publisher]:
    """The publisher of ``--path``; with serve, the server runs for as long as it is used."""
    if args.path == "library":
        yield LibraryPath(ledger, pool)
        return
    start = time.perf_counter()
    token, owned = grant(ledger, {event.crate for s in stretches.values() for _, event in s})
    mode.out["serve"] = {"owners_added": owned, "grant_s": time.perf_counter() - start}
    start = time.perf_counter()
    with serving(mode.store, mode.server.url, mode.here) as url:
        mode.out["serve"]["start_s"] = time.perf_counter() - start
        publisher = ServePath(url, token, bodies)
        try:
            yield publisher
        finally:
            publisher.close()
            mode.out["serve"]["reconnects"] = publisher.reconnects


# -- one replay -----------------------------------------------------------------------------------


def await_confirmed(
    ledger: Ledger, publisher: Publisher, since: datetime, accepted: set[str]
) -> tuple[set[str], dict[str, float], dict[str, float], set[str]]:
    """Until every accepted publish's job is confirmed or held (or ``CONFIRM_TIMEOUT_S``): the
    jobs, their enqueue and confirmation times, and those held."""
    deadline = time.perf_counter() + CONFIRM_TIMEOUT_S
    while True:
        jobs = publisher.jobs(ledger, since, accepted)
        enqueued, confirmed, held = job_times(ledger, since, jobs)
        if len(confirmed) + len(held) >= len(accepted) or time.perf_counter() > deadline:
            return jobs, enqueued, confirmed, held
        time.sleep(0.5)


def replay(
    ledger: Ledger, publisher: Publisher, stretch: list[tuple[float, TraceEvent]], speed: int, pid: int
) -> dict[str, Any]:
    offsets = schedule(stretch, speed)
    since = datetime.now(UTC)
    load_before = os.getloadavg()
    cpu_before = process_cpu_s(pid)
    accepted: set[str] = set()
    refused_before = sum(publisher.refused.values())
    calls_ms: list[float] = []
    lag_max = 0.0
    started = time.perf_counter()
    for offset, (_, event) in zip(offsets, stretch, strict=True):
        wait = started + offset - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        lag_max = max(lag_max, time.perf_counter() - started - offset)
        sent = time.perf_counter()
        found = publisher.publish(event)
        calls_ms.append((time.perf_counter() - sent) * 1000)
        if found is not None:
            accepted.add(found)
    published_s = time.perf_counter() - started
    jobs, enqueued, confirmed, held = await_confirmed(ledger, publisher, since, accepted)
    # The last confirmation's time, then the worker's CPU time up to now (it polls once more at most).
    cpu_s = process_cpu_s(pid) - cpu_before
    wall_s = time.perf_counter() - started
    latencies = sorted((confirmed[j] - enqueued[j]) * 1000 for j in jobs if j in confirmed and j in enqueued)
    planned_s = offsets[-1]
    return {
        "speed": speed,
        "publishes": len(stretch),
        "accepted_jobs": len(accepted),
        "jobs_found": len(jobs),
        "refused": sum(publisher.refused.values()) - refused_before,
        "confirmed": len(confirmed),
        "held": len(held),
        "unconfirmed": len(accepted) - len(confirmed),
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
        "latency_ms": summary(latencies),
        "publish_call_ms": summary(calls_ms),
        "latencies_ms": latencies,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


# -- the PostgreSQL template --------------------------------------------------------------------


def pg_url(dbname: str, schema: str | None = PG_SCHEMA) -> str:
    """``PG_BASE`` with another database (and the ledger's schema, for a store URL)."""
    parts = urlsplit(PG_BASE)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", f"schema={schema}" if schema else "", ""))


def pg_admin() -> Any:
    """An autocommit connection to the server's ``postgres`` database (for CREATE/DROP DATABASE)."""
    import psycopg

    return psycopg.connect(pg_url("postgres", None), autocommit=True, connect_timeout=5)


def drop_database(name: str) -> None:
    from psycopg.sql import SQL, Identifier

    with pg_admin() as conn:
        conn.execute(SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(name)))


def seed_head(seed: Path) -> str:
    """The head commit of the seed's index, as ``seed.json`` records it."""
    recorded = json.loads((seed / "seed.json").read_text())
    return str(recorded.get("import", {}).get("head") or recorded["commit"])


def template_mark() -> dict[str, Any] | None:
    """What the template's comment records (the seed it came from), None when there is none."""
    with pg_admin() as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (PG_TEMPLATE,),
        ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        mark: dict[str, Any] = json.loads(row[0])
    except ValueError:
        return None
    return mark


def ensure_template(args: argparse.Namespace) -> dict[str, Any]:
    """The template database of the seed: reused when its comment names the seed's head, else
    (re)built; what it records about its build."""
    head = seed_head(args.seed)
    mark = template_mark()
    if mark is not None and mark.get("seed_head") == head:
        print(f"template {PG_TEMPLATE}: reused (seed head {head[:12]})", file=sys.stderr, flush=True)
        return {**mark, "reused": True}
    print(
        f"template {PG_TEMPLATE}: building from the seed (head {head[:12]}) ...", file=sys.stderr, flush=True
    )
    mark = {
        "seed_head": head,
        "seed": str(args.seed),
        "built_at": datetime.now(UTC).isoformat(),
        **build_template(args),
    }
    from psycopg.sql import SQL, Identifier, Literal

    with pg_admin() as conn:
        conn.execute(
            SQL("COMMENT ON DATABASE {} IS {}").format(Identifier(PG_TEMPLATE), Literal(json.dumps(mark)))
        )
    print(
        f"template {PG_TEMPLATE}: import_index {mark['import_s']:.1f} s + views {mark['views_s']:.1f} s "
        f"({mark['build_s']:.1f} s in all)",
        file=sys.stderr,
        flush=True,
    )
    return {**mark, "reused": False}


def build_template(args: argparse.Namespace) -> dict[str, Any]:
    """bench_sync's ``adopt`` (a child process) into a fresh template database, over a git
    server on a copy of the seed's, with a copy of the seed's clone."""
    from psycopg.sql import SQL, Identifier

    started = time.perf_counter()
    drop_database(PG_TEMPLATE)
    with pg_admin() as conn:
        conn.execute(SQL("CREATE DATABASE {}").format(Identifier(PG_TEMPLATE)))
    here = args.workdir / "template"
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    shutil.copytree(args.seed / "seeded" / "srv", here / "srv")
    shutil.copytree(args.seed / "seeded" / "clone.git", here / "clone.git")
    server = GitRemote(here / "srv")
    try:
        argv = ["--child", "adopt", "--store-url", pg_url(PG_TEMPLATE), "--remote", server.url]
        adopted = run_phase(
            str(Path(__file__).with_name("bench_sync.py")),
            [*argv, "--clone", str(here / "clone.git")],
            f"template {PG_TEMPLATE}: adopt",
        )
    finally:
        server.stop()
        shutil.rmtree(here, ignore_errors=True)
    keys = ("head", "accepted", "refused", "confirmed_jobs", "events", "import_s", "views_s", "peak_rss_mib")
    return {**{k: adopted[k] for k in keys}, "build_s": time.perf_counter() - started}


# -- one mode -------------------------------------------------------------------------------------


class Mode:
    """One worker mode's copy of the seed: its folder, store, git server and what it measured."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.here = args.workdir / mode
        self.database: str | None = None
        self.out: dict[str, Any] = {"mode": mode, "replays": {}}
        if self.here.exists():
            shutil.rmtree(self.here)
        print(f"{mode}: copying the seed ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if args.store == "sqlite":
            shutil.copytree(args.seed / "seeded", self.here)
            self.store = f"sqlite:///{self.here / 'ledger.db'}"
        else:
            shutil.copytree(args.seed / "seeded", self.here, ignore=shutil.ignore_patterns("ledger.db*"))
            self.database = f"ledger_latency_{mode}"
            create_from_template(self.database)
            self.store = pg_url(self.database)
        self.out["copy_s"] = time.perf_counter() - start
        self.clone = self.here / "clone.git"
        self.server = GitRemote(self.here / "srv")

    def close(self, keep: bool) -> None:
        self.server.stop()
        if keep:
            return
        shutil.rmtree(self.here, ignore_errors=True)
        if self.database is not None:
            drop_database(self.database)


def create_from_template(name: str) -> None:
    """A new database copied from the template (which nothing may be connected to meanwhile)."""
    from psycopg.sql import SQL, Identifier

    drop_database(name)
    with pg_admin() as conn:
        conn.execute(SQL("CREATE DATABASE {} TEMPLATE {}").format(Identifier(name), Identifier(PG_TEMPLATE)))


def start_worker(mode: Mode, args: argparse.Namespace, log: IO[bytes]) -> subprocess.Popen[str]:
    """The following worker (``--child-worker``) on the mode's store; ready once it has warmed up."""
    ready = mode.here / "worker.ready"
    argv = [
        sys.executable,
        __file__,
        "--child-worker",
        "--store-url",
        mode.store,
        "--remote",
        mode.server.url,
    ]
    argv += ["--clone", str(mode.clone), "--poll", str(args.poll), "--ready", str(ready)]
    argv += ["--wake"] if mode.mode == "wake" else ["--no-wake"]
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    start = time.perf_counter()
    while not ready.exists():
        if worker.poll() is not None:
            raise SystemExit(
                f"{mode.mode}: the worker exited with {worker.returncode} (see {mode.here / 'worker.log'})"
            )
        time.sleep(0.1)
    mode.out["worker_warm_up_s"] = time.perf_counter() - start
    return worker


def stop_worker(worker: subprocess.Popen[str], out: dict[str, Any]) -> None:
    """SIGTERM; the worker's own figures (its last line) into ``out["worker"]``."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        stdout, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        return
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if lines:
        out["worker"] = json.loads(lines[-1])


def run_mode(
    name: str,
    args: argparse.Namespace,
    stretches: dict[int, list[tuple[float, TraceEvent]]],
    pool: list[str],
    bodies: dict[tuple[str, str], bytes],
) -> dict[str, Any]:
    from ledger.bootstrap import open_ledger

    mode = Mode(name, args)
    with contextlib.ExitStack() as stack:
        stack.callback(mode.close, args.keep)
        log = stack.enter_context((mode.here / "worker.log").open("wb"))
        worker = start_worker(mode, args, log)
        stack.callback(stop_worker, worker, mode.out)
        ledger = stack.enter_context(open_ledger(_settings(mode.store, mode.server.url, mode.clone)))
        publisher = stack.enter_context(publish_path(args, ledger, mode, stretches, pool, bodies))
        time.sleep(args.poll * 2)  # let the worker settle into following
        for speed, label in RATES:
            print(
                f"{name}: replaying {len(stretches[speed])} publishes at {label} ...",
                file=sys.stderr,
                flush=True,
            )
            result = replay(ledger, publisher, stretches[speed], speed, worker.pid)
            mode.out["replays"][label] = result
            shown = {k: v for k, v in result.items() if k != "latencies_ms"}
            print(f"{name} {label}: {json.dumps(shown)}", file=sys.stderr, flush=True)
            time.sleep(args.poll * 2)
        mode.out["refused"] = dict(publisher.refused)
    return mode.out


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


def _template(t: dict[str, Any]) -> str:
    how = "reused, built" if t["reused"] else "built"
    return (
        f"Template database {PG_TEMPLATE} ({how} at {t['built_at'][:19]} from the seed of head "
        f"{t['seed_head'][:12]}): `import_index` {t['import_s']:.1f} s + views {t['views_s']:.1f} s "
        f"({t['build_s']:.1f} s in all; {t['accepted']:,} versions, {t['events']:,} events)."
    )


NO_LATENCY = dict.fromkeys(("p50", "p90", "p99", "max"), float("nan"))
"""What a replay with no job confirmed reports (``summary`` of nothing gives only ``n``)."""


def report(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for mode, m in results["modes"].items():
        for label, r in m["replays"].items():
            lat = {**NO_LATENCY, **r["latency_ms"]}
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
        f"Machine: {results['machine']}; {STORE_TITLES[results['store']]}; {PATH_TITLES[results['path']]}; "
        f"poll {results['poll_s']:g} s, max_batch 100; arrivals: {results['arrivals']}.",
        "",
        f"```\n{results['command']}\n```",
        "",
        markdown_table(headers, rows),
    ]
    if "pg_template" in results:
        parts[1:1] = ["", _template(results["pg_template"])]
    modes = results["modes"]
    if "wake" in modes and "poll" in modes:
        ratio_rows = []
        for label in modes["wake"]["replays"]:
            w = {**NO_LATENCY, **modes["wake"]["replays"][label]["latency_ms"]}
            p = modes["poll"]["replays"].get(label, {}).get("latency_ms")
            if p is None:
                continue
            p = {**NO_LATENCY, **p}
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
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="each mode's store: a copy of the seed's SQLite file (the default), or a PostgreSQL "
        f"database copied from the template {PG_TEMPLATE} (built from the seed when missing or stale)",
    )
    parser.add_argument(
        "--path",
        choices=["serve", "library"],
        default="serve",
        help="publishes as cargo publish requests to `ledger serve` (the default) or through "
        "ledger.publish in this process",
    )
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
    parser.add_argument(
        "--keep", action="store_true", help="keep each mode's copy of the seed (and its PostgreSQL database)"
    )
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

    if not (args.seed / "seeded" / "ledger.db").exists() or not (args.seed / "seed.json").exists():
        raise SystemExit(f"no seed in {args.seed}: run scripts/bench_sync.py --save-seed {args.seed} first")
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else SIZES
    print("reading the baseline and the seed's adopted versions ...", file=sys.stderr, flush=True)
    pool, foreign = pool_and_foreign(args.seed / "seeded" / "ledger.db")
    stretches = choose_stretches(arrivals(list(trace()), args.arrivals, foreign), sizes[args.arrivals])
    bodies: dict[tuple[str, str], bytes] = {}
    if args.path == "serve":
        print("building the publish requests ...", file=sys.stderr, flush=True)
        bodies = build_bodies(stretches, pool)
    results: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "store": args.store,
        "path": args.path,
        "poll_s": args.poll,
        "arrivals": args.arrivals,
        "sizes": {str(k): v for k, v in sizes[args.arrivals].items()},
        "max_gap_s": MAX_GAP_S,
        "modes": {},
    }
    if args.store == "postgresql":
        results["pg_template"] = ensure_template(args)
    for mode in args.modes:
        results["modes"][mode] = run_mode(mode, args, stretches, pool, bodies)
    text = report(results)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "report": text}, indent=1))
    counts = Counter(r["unconfirmed"] for m in results["modes"].values() for r in m["replays"].values())
    return 0 if set(counts) <= {0} else 1


if __name__ == "__main__":
    sys.exit(main())
