"""Benchmark of ``ledger serve`` (cargo's publish API) on the real crates.io publication record.

For each store (a SQLite file, a PostgreSQL schema), in a child process of its own, the registry
is started with its index sync worker (``ledger.entrypoints.serve.server.start(..., worker=True)``)
in a process of its own, over an index served by ``git daemon`` on 127.0.0.1
(``python -m ledger.testing.remote serve --protocol git``, also a process of its own so that its
splicing front does not share the registry's interpreter). The index starts empty: the baseline
is not needed to measure publishes (a crate file holds only the versions the run published, and a
push carries the few files it changed whatever the size of the tree).

Publishes are cargo's ``PUT /api/v1/crates/new`` bodies (u32 LE length, JSON metadata, u32 LE
length, the ``.crate``), built by client processes (``--clients``, each with its own keep-alive
``http.client`` connection) from the trace's real names and versions: the metadata comes from
``ledger.adapters.realdata.index_line`` (0-3 dependencies on crates seen earlier in the trace,
with their ``req``, ``kind``, ``target``, ``optional``, ``default_features`` and ``features``),
plus a deterministic ``features`` table (``default``/``std`` for half the versions, a
``dep:`` feature per optional dependency). The ``.crate`` is a gzip (level 9, as cargo writes
it) of a tar holding ``Cargo.toml``, ``README.md`` and ``src/*.rs`` files of random words; its
compressed size aims at a value drawn per version from a log-normal distribution with a median
of 28 KiB and sigma 1.0, clipped to 1 KiB-2 MiB (the 2,000 bodies of the default throughput phase
come out at p50 29.5 KiB, p90 108 KiB, p99 313 KiB, max 744 KiB, mean 48 KiB; each run prints
its own).

Phases, on one registry, in this order:

1. **throughput**: the first ``--requests`` publishes of the trace, sent as fast as the server
   answers (each client waits for an answer before its next request): requests/s held and the
   request latency (client side, from sending the request until the whole answer is read).
2. **real rate**: the ``--window`` publishes (default 100) of the busiest stretch of the trace
   (the consecutive publishes spanning the least time) at their real arrival times. The trace
   gives the end of the ~15-minute window in which each change was seen: each event gets a time
   drawn uniformly (seeded) within its window, and gaps longer than 5 s are shortened to 5 s
   (nothing else is compressed). With the defaults: 100 publishes in 259 s (0.39/s), the start
   of a release of about 280 google-* API crates on 2024-06-27.
3. **100x**: the ``--window-fast`` publishes (default 200) of the busiest stretch left (disjoint
   from the others), with every inter-arrival time divided by 100 (then gaps over 5 s shortened
   to 5 s). With the defaults: the rest of the same release, 200 publishes in 10 s (20/s).

Yanks are left out (a yank does not wait for the index). For every accepted publish,
publish-to-visible is the time from sending the request until a separate poller process, which
fetches the index on a fresh connection every ``--poll-ms`` (``GitIndex.fetch`` into a scratch
bare clone, then the changed crate files read at the new head), first sees the version: what
cargo's wait after a publish sees, at a finer interval than cargo's (about 1 s). After each
phase the run waits until every accepted version is visible. The ledger's own
publish-to-confirmed time (enqueue to completion in ``view_jobs``) and the pushes per phase are
read from the views at the end. Peak memory is reported for the server process, the clients and
the poller; warnings the server logged (waitress and the ledger, at WARNING) are counted.

To tell where the time goes, the server process times a few calls of its own (``INSTRUMENTED``:
the whole WSGI call, authentication, parsing, storing the ``.crate``, recording the publish, the
views' catch-up, and the worker's passes, fetch, commit, push and read-back), per phase; SIGUSR1
makes it write every thread's Python stack to its log.

Goals: publish request p99 <= 20 ms; publish-to-visible p99 <= 1 s at the real rate and
<= 5 s at 100x; peak memory < 1 GiB.

Usage: .venv/bin/python scripts/bench_serve.py [--store sqlite|postgresql|both|URL]...
       [--requests N] [--clients N] [--threads N] [--window N] [--window-fast N]
       [--poll-ms MS] [--quick] [--json PATH] [--keep-logs DIR]

``--quick`` (200 requests, windows of 12 and 100 publishes) takes about 1.5 minutes for both
stores; the defaults about 11 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gzip
import hashlib
import http.client
import io
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GitRemote,
    command_line,
    drop_pg_schema,
    machine,
    markdown_table,
    peak_rss_mib,
    percentile,
    process_cpu_s,
    run_child,
    stores_from_args,
    workdir,
)

REQUEST_P99_GOAL_MS = 20.0
VISIBLE_P99_GOAL_S = {"real": 1.0, "fast": 5.0}
MEMORY_GOAL_MIB = 1024.0

PUBLISH_PATH = "/api/v1/crates/new"
USER = "bench"
MAX_GAP_S = 5.0
FAST_FACTOR = 100.0
SEED = 20240429

CRATE_MEDIAN_BYTES = 28 * 1024
CRATE_SIGMA = 1.0
CRATE_MIN_BYTES = 1024
CRATE_MAX_BYTES = 2 * 1024 * 1024
GZIP_LEVEL = 9
TEXT_POOL_BYTES = 8 * 1024 * 1024
SOURCE_FILE_BYTES = 96 * 1024

VISIBLE_TIMEOUT_S = 120.0
STALL_S = 30.0
"""After the last answer, the wait for every version to be visible ends when none became
visible for this long (the worker is stuck), or after ``VISIBLE_TIMEOUT_S``."""
READY_TIMEOUT_S = 300.0
PHASES = ("throughput", "real", "fast")
PHASE_TITLES = {"throughput": "throughput", "real": "real rate", "fast": "100x rate"}


# -- the plan: which publishes, at which times (parent) -------------------------------------------


def spread_times(events: Sequence[Any], seed: int) -> list[float]:
    """A time for each trace event, drawn uniformly within the window that ends at its ``unix_ts``.

    A window starts at the previous distinct ``unix_ts`` (the first one is taken as 900 s long).
    """
    rng = random.Random(seed)
    times: list[float] = []
    previous: int | None = None
    current: int | None = None
    for event in events:
        if event.unix_ts != current:
            previous, current = current, event.unix_ts
        start = previous if previous is not None else event.unix_ts - 900
        times.append(start + (event.unix_ts - start) * rng.random())
    return times


def densest(times: Sequence[float], width: int, taken: Sequence[tuple[int, int]]) -> int:
    """The start of the ``width`` consecutive items spanning the least time, outside ``taken``."""
    best: tuple[float, int] | None = None
    for start in range(len(times) - width + 1):
        end = start + width
        if any(start < stop and begin < end for begin, stop in taken):
            continue
        span = times[end - 1] - times[start]
        if best is None or span < best[0]:
            best = (span, start)
    if best is None:
        raise SystemExit(f"the trace has no stretch of {width} publishes left for this window")
    return best[1]


def schedule(times: Sequence[float], factor: float) -> list[float]:
    """Offsets from the first time: inter-arrival times divided by ``factor``, at most 5 s each."""
    offsets = [0.0]
    for before, after in itertools.pairwise(times):
        offsets.append(offsets[-1] + min((after - before) / factor, MAX_GAP_S))
    return offsets


def build_plan(requests: int, window: int, window_fast: int) -> dict[str, Any]:
    """The three phases' publishes: index lines with their offsets, from the real trace."""
    from ledger.adapters.realdata import ReadStats, index_line, trace
    from ledger.domain.names import collision_key
    from ledger.domain.versions import parse_version

    stats = ReadStats()
    events = list(trace(stats=stats))
    times = spread_times(events, SEED)
    order = sorted(range(len(events)), key=lambda i: times[i])
    pool: list[str] = []
    known: set[str] = set()
    spelling: dict[str, str] = {}
    seen: set[tuple[str, Any]] = set()
    publishes: list[tuple[float, str, str, int]] = []  # time, crate, version, pool length
    dropped: Counter[str] = Counter()
    for i in order:
        event = events[i]
        if event.event != "publish":
            dropped[event.event] += 1
            continue
        key = collision_key(event.crate)
        if spelling.setdefault(key, event.crate) != event.crate:
            dropped["publish of another spelling of a crate"] += 1
            continue
        version_key = (key, parse_version(event.version).key)
        if version_key in seen:
            dropped["publish of a version already published"] += 1
            continue
        seen.add(version_key)
        publishes.append((times[i], event.crate, event.version, len(pool)))
        if event.crate not in known:
            known.add(event.crate)
            pool.append(event.crate)
    publish_times = [p[0] for p in publishes]
    if requests > len(publishes):
        raise SystemExit(f"the trace has {len(publishes)} publishes, fewer than --requests {requests}")
    taken = [(0, requests)]
    real_start = densest(publish_times, window, taken)
    taken.append((real_start, real_start + window))
    fast_start = densest(publish_times, window_fast, taken)

    def items(start: int, count: int, factor: float | None) -> list[tuple[float, dict[str, Any]]]:
        chosen = publishes[start : start + count]
        offsets = [0.0] * count if factor is None else schedule([p[0] for p in chosen], factor)
        return [
            (offset, index_line(crate, version, deps_pool=pool[:pool_length]))
            for offset, (_, crate, version, pool_length) in zip(offsets, chosen, strict=True)
        ]

    phases = {
        "throughput": items(0, requests, None),
        "real": items(real_start, window, 1.0),
        "fast": items(fast_start, window_fast, FAST_FACTOR),
    }
    windows = {
        "throughput": {"first_publish": 0, "trace_start_unix": publish_times[0]},
        "real": {"first_publish": real_start, "trace_start_unix": publish_times[real_start]},
        "fast": {"first_publish": fast_start, "trace_start_unix": publish_times[fast_start]},
    }
    for name, (begin, count) in {"real": (real_start, window), "fast": (fast_start, window_fast)}.items():
        span = publish_times[begin + count - 1] - publish_times[begin]
        windows[name]["trace_span_s"] = span
        windows[name]["scheduled_s"] = phases[name][-1][0]
    return {
        "phases": phases,
        "windows": windows,
        "trace": {**stats.to_dict(), "publishes_usable": len(publishes), "left_out": dict(dropped)},
    }


# -- request bodies (clients) ---------------------------------------------------------------------


def metadata(line: dict[str, Any]) -> dict[str, Any]:
    """cargo's publish metadata for an index line (what ``cargo publish`` would send for it)."""
    name, vers = line["name"], line["vers"]
    digest = hashlib.sha256(f"{name}@{vers}/features".encode()).digest()
    features: dict[str, list[str]] = {}
    if digest[0] % 2 == 0:
        features = {"default": ["std"], "std": []}
    deps = []
    for dep in line["deps"]:
        deps.append(
            {
                "name": dep["name"],
                "version_req": dep["req"],
                "features": dep["features"],
                "optional": dep["optional"],
                "default_features": dep["default_features"],
                "target": dep["target"],
                "kind": dep["kind"],
                "registry": None,
                "explicit_name_in_toml": None,
            }
        )
        if dep["optional"]:
            features[f"with-{dep['name']}"] = [f"dep:{dep['name']}"]
    return {
        "name": name,
        "vers": vers,
        "deps": deps,
        "features": features,
        "authors": [f"{USER} <{USER}@localhost>"],
        "description": f"{name}: a crate of the benchmark",
        "documentation": None,
        "homepage": None,
        "readme": "README.md",
        "readme_file": "README.md",
        "keywords": [],
        "categories": [],
        "license": "MIT OR Apache-2.0",
        "license_file": None,
        "repository": f"https://example.invalid/{name}",
        "badges": {},
        "links": None,
        "rust_version": None,
    }


def crate_size(name: str, vers: str) -> int:
    """The compressed size this version's ``.crate`` aims at (log-normal, seeded by the version)."""
    rng = random.Random(hashlib.sha256(f"{name}@{vers}/size".encode()).digest())
    size = rng.lognormvariate(math.log(CRATE_MEDIAN_BYTES), CRATE_SIGMA)
    return int(min(max(size, CRATE_MIN_BYTES), CRATE_MAX_BYTES))


class TextPool:
    """A long text of random words; slices of it at random places compress like fresh text
    (deflate looks back 32 KiB only), so a ``.crate`` of any size is built by slicing."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(16384)]
        marks = [" ", " ", " ", " ", "_", "(", ") ", ", ", ".", ";\n    ", " = ", "::", "\n"]
        parts: list[str] = []
        size = 0
        while size < TEXT_POOL_BYTES:
            chunk = [
                w + m for w, m in zip(rng.choices(words, k=4096), rng.choices(marks, k=4096), strict=True)
            ]
            text = "".join(chunk)
            parts.append(text)
            size += len(text)
        self.text = "".join(parts).encode()
        self.rng = rng
        sample = self.text[: 512 * 1024]
        self.ratio = len(sample) / len(gzip.compress(sample, compresslevel=GZIP_LEVEL))

    def take(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.text) - size) if size < len(self.text) else 0
        return self.text[start : start + size]


def crate_file(line: dict[str, Any], meta: dict[str, Any], pool: TextPool) -> bytes:
    """A ``.crate``: gzip of a tar of ``name-version/`` with Cargo.toml, README.md, src/*.rs."""
    name, vers = line["name"], line["vers"]
    text_bytes = int(crate_size(name, vers) * pool.ratio)
    toml = [f'[package]\nname = "{name}"\nversion = "{vers}"\nedition = "2021"\n']
    toml.append(f'license = "{meta["license"]}"\ndescription = "{meta["description"]}"\n')
    toml.append("\n[dependencies]\n")
    toml += [f'{dep["name"]} = "{dep["version_req"]}"\n' for dep in meta["deps"]]
    files: list[tuple[str, bytes]] = [("Cargo.toml", "".join(toml).encode())]
    files.append(("README.md", f"# {name}\n\n".encode() + pool.take(max(64, text_bytes // 20))))
    left = text_bytes - text_bytes // 20
    number = 0
    while left > 0:
        part = min(left, SOURCE_FILE_BYTES)
        files.append(("src/lib.rs" if number == 0 else f"src/part_{number}.rs", pool.take(part)))
        left -= part
        number += 1
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, data in files:
            info = tarfile.TarInfo(f"{name}-{vers}/{path}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1714397709
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), compresslevel=GZIP_LEVEL, mtime=0)


def publish_body(meta: dict[str, Any], crate: bytes) -> bytes:
    """cargo's publish body: u32 LE length, the JSON metadata, u32 LE length, the ``.crate``."""
    raw = json.dumps(meta).encode()
    return struct.pack("<I", len(raw)) + raw + struct.pack("<I", len(crate)) + crate


# -- processes: clients, poller, server -----------------------------------------------------------


def client_main(
    number: int,
    url: str,
    token: str,
    items: list[tuple[float, dict[str, Any]]],
    paced: bool,
    ready: Any,
    go: Any,
    start_at: Any,
    results: Any,
) -> None:
    """Build the bodies, then send them in order (paced: each at its offset); one result dict."""
    started = time.perf_counter()
    pool = TextPool(SEED + number)
    bodies: list[bytes] = []
    crate_sizes: list[int] = []
    for _, line in items:
        meta = metadata(line)
        crate = crate_file(line, meta, pool)
        crate_sizes.append(len(crate))
        bodies.append(publish_body(meta, crate))
    build_s = time.perf_counter() - started
    host, port = url.removeprefix("http://").split(":")
    ready.put(number)
    go.wait()
    t0 = start_at.value
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Authorization": token, "Content-Type": "application/octet-stream"}
    records: list[list[Any]] = []
    reconnects = 0
    for (offset, line), body in zip(items, bodies, strict=True):
        due = t0 + offset
        if paced:
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
        sent = time.time()
        clock = time.perf_counter()
        detail = ""
        try:
            conn.request("PUT", PUBLISH_PATH, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            status = answer.status
            if status != 200:
                detail = data[:300].decode(errors="replace")
            if answer.will_close:
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                reconnects += 1
        except (OSError, http.client.HTTPException) as exc:
            status, detail = -1, repr(exc)
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            reconnects += 1
        latency = time.perf_counter() - clock
        records.append([line["name"], line["vers"], due, sent, latency, status, detail])
    conn.close()
    results.put(
        {
            "client": number,
            "records": records,
            "crate_bytes": crate_sizes,
            "body_bytes": sum(len(b) for b in bodies),
            "build_s": build_s,
            "reconnects": reconnects,
            "peak_rss_mib": peak_rss_mib(),
        }
    )


def poller_main(remote: str, scratch: str, poll_s: float, ready: Any, stop: Any, found: Any) -> None:
    """Fetch the index on a fresh connection every ``poll_s``; report each version's first sight."""
    from ledger.adapters.git.index import GitIndex
    from ledger.domain.errors import LedgerError

    fetch_ms: list[float] = []
    errors: Counter[str] = Counter()
    heads = 0
    with GitIndex.open(Path(scratch), remote) as index:
        last: str | None = None
        while not stop.is_set():
            start = time.time()
            try:
                head = index.fetch()
            except LedgerError as exc:
                errors[type(exc).__name__] += 1
                stop.wait(poll_s)
                continue
            seen_at = time.time()
            fetch_ms.append((seen_at - start) * 1000)
            if head is not None and head != last:
                heads += 1
                new: list[tuple[str, float]] = []
                for path in index.changed_paths(last, head):
                    if path == "config.json":
                        continue
                    for raw in (index.read_blob(head, path) or b"").splitlines():
                        line = json.loads(raw)
                        new.append((f"{line['name']}@{line['vers']}", seen_at))
                if new:
                    found.put(new)
                last = head
            if not ready.is_set():
                ready.set()
            stop.wait(poll_s)
    fetch_ms.sort()
    found.put(
        {
            "fetches": len(fetch_ms),
            "heads_seen": heads,
            "fetch_p50_ms": percentile(fetch_ms, 0.50),
            "fetch_p99_ms": percentile(fetch_ms, 0.99),
            "errors": dict(errors),
            "peak_rss_mib": peak_rss_mib(),
        }
    )


INSTRUMENTED = [
    # (module, class or None for a module function, attribute, label)
    ("ledger.entrypoints.serve.app", "RegistryApp", "__call__", "request: whole WSGI call"),
    ("ledger.services.registry", None, "parse_publish_body", "request: parse body"),
    ("ledger.services.registry", None, "index_line", "request: derive line"),
    ("ledger.services.publishing_access", "RegistryAccess", "authenticate", "request: authenticate"),
    ("ledger.services.publishing", "PublicationLedger", "find_crate", "find_crate"),
    ("ledger.adapters.crate_files", "FolderCrateFiles", "put", "request: store .crate"),
    ("ledger.services.publishing", "PublicationLedger", "publish", "request: record publish"),
    ("projections.runner", "ViewRunner", "catch_up", "views catch_up"),
    ("ledger.services.sync", "SyncWorker", "_pass", "worker: pass"),
    ("ledger.adapters.git.index", "GitIndex", "fetch", "worker: fetch"),
    ("ledger.adapters.git.index", "GitIndex", "commit", "worker: commit"),
    ("ledger.adapters.git.index", "GitIndex", "push", "worker: push"),
    ("ledger.adapters.git.index", "GitIndex", "read_back", "worker: read back"),
]
"""What the server process times (wall time per call, by the calling thread), to tell where a
request's and a pass's time goes; a perf_counter pair per call, nothing else changes."""
SAMPLES_PER_SECOND = 50
"""Values kept per label and second for the percentiles (count, total and max are exact)."""


class Timings:
    """The server's timed calls, per label and wall-clock second: exact count, total and max, and
    up to ``SAMPLES_PER_SECOND`` values, so that memory stays bounded however often a call runs."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, int], list[Any]] = {}

    def add(self, label: str, value: float) -> None:
        key = (label, int(time.time()))
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [0, 0.0, 0.0, []]
            bucket[0] += 1
            bucket[1] += value
            bucket[2] = max(bucket[2], value)
            if len(bucket[3]) < SAMPLES_PER_SECOND:
                bucket[3].append(value)

    def rows(self) -> list[tuple[str, int, int, float, float, list[float]]]:
        with self._lock:
            return [(label, second, *bucket) for (label, second), bucket in self._buckets.items()]


def instrument(timings: Timings) -> list[str]:
    """Wrap ``INSTRUMENTED`` so that each call adds its wall time (ms) under its label; the labels
    whose target is missing (renamed) are returned, and skipped."""
    import importlib

    missing: list[str] = []
    for module_name, owner_name, attr, label in INSTRUMENTED:
        module = importlib.import_module(module_name)
        owner: Any = module if owner_name is None else getattr(module, owner_name, None)
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None:
            missing.append(label)
            continue
        setattr(owner, attr, _timed(original, label, timings))
    return missing


def _timed(original: Any, label: str, timings: Timings) -> Any:
    import functools
    import threading

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = None
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            name = label
            if label == "worker: pass":
                jobs = getattr(result, "jobs", 0)
                if jobs:
                    timings.add("worker: jobs per pass (count)", float(jobs))
                else:
                    name = "worker: idle pass"
            elif label in ("views catch_up", "find_crate"):
                who = "worker" if threading.current_thread().name == "ledger-worker" else "request"
                name = f"{who}: {label}"
            timings.add(name, elapsed_ms)

    return timed


def server_main(settings: Any, threads: int, log_path: str, ready: Any, stop: Any, out: Any) -> None:
    """``ledger serve`` with its worker in this process, until ``stop``; logs at WARNING to a file."""
    from ledger.bootstrap import open_ledger
    from ledger.entrypoints.serve.server import start

    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(name)s\t%(levelname)s\t%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ledger").setLevel(logging.WARNING)
    # SIGUSR1 writes every thread's Python stack to the log: to see where a stalled server waits.
    faulthandler.register(signal.SIGUSR1, file=handler.stream, all_threads=True)
    timings = Timings()
    missing = instrument(timings)

    @contextlib.contextmanager
    def opened() -> Iterator[Any]:
        start_open = time.perf_counter()
        with open_ledger(settings) as ledger:
            timings.add("open ledger", (time.perf_counter() - start_open) * 1000)
            yield ledger

    served = start(
        opened,
        host="127.0.0.1",
        port=0,
        max_crate_bytes=settings.max_crate_bytes,
        worker=True,
        threads=threads,
    )
    ready.put(served.url)
    stop.wait()
    served.stop()
    usage = os.times()
    out.put(
        {
            "peak_rss_mib": peak_rss_mib(),
            "cpu_s": usage.user + usage.system,
            "timings": timings.rows(),
            "not_instrumented": missing,
        }
    )


# -- one store (child process) --------------------------------------------------------------------


def split_by_crate(
    items: Sequence[tuple[float, dict[str, Any]]], clients: int
) -> list[list[tuple[float, dict[str, Any]]]]:
    """The items dealt to ``clients`` lists, every version of a crate to the same client (as one
    owner publishes), the crates with most versions first to the least loaded client."""
    by_crate: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for item in items:
        by_crate.setdefault(item[1]["name"].lower().replace("-", "_"), []).append(item)
    lists: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(clients)]
    for group in sorted(by_crate.values(), key=len, reverse=True):
        min(lists, key=len).extend(group)
    return [sorted(part, key=lambda item: item[0]) for part in lists if part]


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


class StoreRun:
    """The registry, the index, the poller and the clients of one store."""

    def __init__(self, store_url: str, folder: Path, args: argparse.Namespace) -> None:
        from ledger.bootstrap import open_ledger
        from ledger.settings import Settings

        self.ctx = mp.get_context("spawn")
        self.args = args
        self.folder = folder
        self.remote = GitRemote(folder / "remote")
        self.settings = Settings(
            store=store_url,
            remote=self.remote.url,
            index_dir=folder / "clone.git",
            crate_dir=folder / "crates",
        )
        with open_ledger(self.settings) as ledger:
            self.token = ledger.app.create_token(USER, "operator")[1]
        self.log_path = folder / "server.log"
        self.server_ready = self.ctx.Queue()
        self.server_stop = self.ctx.Event()
        self.server_out = self.ctx.Queue()
        self.server = self.ctx.Process(
            target=server_main,
            args=(
                self.settings,
                args.threads,
                str(self.log_path),
                self.server_ready,
                self.server_stop,
                self.server_out,
            ),
            name="ledger-serve",
        )
        self.server.start()
        self.url: str = self.server_ready.get(timeout=READY_TIMEOUT_S)
        self.poller_ready = self.ctx.Event()
        self.poller_stop = self.ctx.Event()
        self.found = self.ctx.Queue()
        self.poller = self.ctx.Process(
            target=poller_main,
            args=(
                self.remote.url,
                str(folder / "poller.git"),
                args.poll_ms / 1000,
                self.poller_ready,
                self.poller_stop,
                self.found,
            ),
            name="index-poller",
        )
        self.poller.start()
        if not self.poller_ready.wait(READY_TIMEOUT_S):
            raise SystemExit("the index poller did not start")
        self.visible: dict[str, float] = {}
        self.poller_stats: dict[str, Any] = {}
        self.keys: dict[str, dict[str, float]] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    def drain_found(self, timeout: float = 0.0) -> None:
        """Take what the poller has reported so far (waiting up to ``timeout`` for the first)."""
        while True:
            try:
                item = self.found.get(timeout=timeout) if timeout > 0 else self.found.get_nowait()
            except queue.Empty:
                return
            timeout = 0.0
            if isinstance(item, dict):
                self.poller_stats = item
                continue
            for key, seen in item:
                self.visible.setdefault(key, seen)

    def phase(self, name: str, items: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
        paced = name != "throughput"
        parts = split_by_crate(items, self.args.clients)
        ready, results = self.ctx.Queue(), self.ctx.Queue()
        go, start_at = self.ctx.Event(), self.ctx.Value("d", 0.0)
        clients = [
            self.ctx.Process(
                target=client_main,
                args=(n, self.url, self.token, part, paced, ready, go, start_at, results),
                name=f"client-{n}",
            )
            for n, part in enumerate(parts)
        ]
        for client in clients:
            client.start()
        for _ in clients:
            ready.get(timeout=READY_TIMEOUT_S)
        self.drain_found()
        load_before = os.getloadavg()
        cpu_before = process_cpu_s(self.server.pid or 0)
        start_at.value = time.time() + 0.3
        go.set()
        answers: list[dict[str, Any]] = []
        while len(answers) < len(clients):
            try:
                answers.append(results.get(timeout=0.2))
            except queue.Empty:
                if not any(c.is_alive() for c in clients) and results.empty():
                    raise SystemExit(f"a client of phase {name} stopped without its result") from None
            self.drain_found()
        for client in clients:
            client.join()
        cpu_requests = process_cpu_s(self.server.pid or 0) - cpu_before
        load_after_requests = os.getloadavg()
        records = sorted((r for a in answers for r in a["records"]), key=lambda r: r[3])
        accepted = [r for r in records if r[5] == 200]
        last_answer = max(r[3] + r[4] for r in records)
        deadline = time.time() + VISIBLE_TIMEOUT_S
        missing = [f"{r[0]}@{r[1]}" for r in accepted]
        progress_at, left = time.time(), len(missing)
        while True:
            missing = [key for key in missing if key not in self.visible]
            now = time.time()
            if len(missing) < left:
                progress_at, left = now, len(missing)
            if not missing or now > deadline or now - progress_at > STALL_S:
                break
            self.drain_found(timeout=0.2)
        seen = [self.visible[f"{r[0]}@{r[1]}"] for r in accepted if f"{r[0]}@{r[1]}" in self.visible]
        all_visible_s = max(seen, default=last_answer)
        cpu_total = process_cpu_s(self.server.pid or 0) - cpu_before
        first_send = records[0][3]
        send_span = records[-1][3] - first_send
        statuses = Counter(str(r[5]) for r in records)
        errors = Counter(f"{r[5]}: {re.sub(r'[0-9]+', 'N', r[6])[:160]}" for r in records if r[5] != 200)
        scheduled = [r[2] for r in records]
        out: dict[str, Any] = {
            "phase": name,
            "clients": len(clients),
            "sent": len(records),
            "accepted": len(accepted),
            "statuses": dict(statuses),
            "errors": dict(errors.most_common(10)),
            "server_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "connection_errors": statuses.get("-1", 0),
            "reconnects": sum(a["reconnects"] for a in answers),
            "wall_s": last_answer - first_send,
            "requests_per_s": len(records) / (last_answer - first_send),
            "scheduled_span_s": max(scheduled) - min(scheduled),
            "send_span_s": send_span,
            "late_ms": summary([r[3] - r[2] for r in records], 1000) if paced else None,
            "request_ms": summary([r[4] for r in records if r[5] == 200], 1000),
            "request_all_ms": summary([r[4] for r in records], 1000),
            "visible_s": summary(
                [self.visible[f"{r[0]}@{r[1]}"] - r[3] for r in accepted if f"{r[0]}@{r[1]}" in self.visible]
            ),
            "not_visible": len(missing),
            "not_visible_examples": missing[:10],
            "all_visible_after_last_answer_s": all_visible_s - last_answer,
            "server_cpu_s_requests": cpu_requests,
            "server_cpu_s_total": cpu_total,
            "load_before": list(load_before),
            "load_after_requests": list(load_after_requests),
            "load_after": list(os.getloadavg()),
            "crate_bytes": summary([s for a in answers for s in a["crate_bytes"]]),
            "body_bytes": sum(a["body_bytes"] for a in answers),
            "build_s_max": max(a["build_s"] for a in answers),
            "client_peak_rss_mib": max(a["peak_rss_mib"] for a in answers),
            "raw": {
                "request_ms": [round(r[4] * 1000, 3) for r in records],
                "status": [r[5] for r in records],
                "visible_s": [
                    round(self.visible[f"{r[0]}@{r[1]}"] - r[3], 4)
                    if f"{r[0]}@{r[1]}" in self.visible
                    else None
                    for r in records
                ],
            },
        }
        if paced:
            out["scheduled_per_s"] = (
                (len(records) - 1) / out["scheduled_span_s"] if out["scheduled_span_s"] else None
            )
            out["held_per_s"] = (len(records) - 1) / send_span if send_span else None
        self.keys[name] = {f"{r[0]}@{r[1]}": r[3] for r in accepted}
        self.spans[name] = (start_at.value, time.time())
        return out

    def ledger_side(self) -> dict[str, Any]:
        """From the views, per phase: publish-to-confirmed, pushes and versions per push, and how
        long after the worker's confirmation the poller saw each version."""
        from ledger.bootstrap import open_ledger

        with open_ledger(self.settings) as ledger:
            ledger.views.catch_up()
            rows = ledger.db.query(
                "SELECT v.crate, v.version, v.published_at, j.state, j.updated_at, j.commit_id, j.attempts, "
                "j.failures, j.last_error FROM view_versions v JOIN view_jobs j ON v.job = j.job"
            )
            (open_jobs,) = ledger.db.query("SELECT COUNT(*) FROM view_jobs WHERE state = 'open'")[0]
        by_key = {f"{r[0]}@{r[1]}": r for r in rows}
        out: dict[str, Any] = {"open_jobs_at_end": int(open_jobs), "never_seen": []}
        for sent in self.keys.values():
            for key in sent:
                if key not in self.visible and len(out["never_seen"]) < 20:
                    row = by_key.get(key)
                    out["never_seen"].append(
                        {"version": key, "in_remote": self.in_remote(key), "job": list(row) if row else None}
                    )
        for name, sent in self.keys.items():
            found = [by_key[k] for k in sent if k in by_key]
            done = [r for r in found if r[3] == "completed"]
            commits = {r[5] for r in done if r[5]}
            out[name] = {
                "versions": len(found),
                "completed": len(done),
                "pushes": len(commits),
                "versions_per_push": len(done) / len(commits) if commits else None,
                "failures": sum(int(r[7]) for r in found),
                "publish_to_confirmed_s": summary([float(r[4]) - float(r[2]) for r in done]),
                "send_to_recorded_s": summary([float(r[2]) - sent[f"{r[0]}@{r[1]}"] for r in found]),
                "confirmed_to_visible_s": summary(
                    [
                        self.visible[f"{r[0]}@{r[1]}"] - float(r[4])
                        for r in done
                        if f"{r[0]}@{r[1]}" in self.visible
                    ]
                ),
            }
        return out

    def in_remote(self, key: str) -> bool | None:
        """Whether the remote's bare repository holds the version at its head (read directly)."""
        import pygit2

        from ledger.domain.names import index_path

        crate, _, version = key.rpartition("@")
        repo = pygit2.Repository(str(self.folder / "remote" / "index.git"))
        try:
            tree = repo.revparse_single("refs/heads/master").peel(pygit2.Tree)
            blob = tree[index_path(crate)]
        except (KeyError, pygit2.GitError):
            return None
        return any(json.loads(raw)["vers"] == version for raw in blob.data.splitlines())

    def stop(self) -> dict[str, Any]:
        self.poller_stop.set()
        self.poller.join(timeout=60)
        self.drain_found(timeout=1.0)
        self.server_stop.set()
        server = self.server_out.get(timeout=120)
        self.server.join(timeout=60)
        self.remote.stop()
        return server


def split_timings(
    rows: Sequence[Sequence[Any]], spans: dict[str, tuple[float, float]]
) -> dict[str, dict[str, dict[str, float]]]:
    """The server's timed calls per phase (by the second each ended) and label: exact count,
    total and max, p50/p99 of the values kept (all of them unless ``sampled``); ms, or a count
    for labels ending in ``(count)``. Calls outside every phase (start-up, drains) go under ``start``."""
    grouped: dict[str, dict[str, list[Any]]] = {}
    for label, second, count, total, largest, values in rows:
        middle = second + 0.5
        phase = next((name for name, (a, b) in spans.items() if a <= middle <= b), "start")
        entry = grouped.setdefault(phase, {}).setdefault(label, [0, 0.0, 0.0, [], False])
        entry[0] += count
        entry[1] += total
        entry[2] = max(entry[2], largest)
        entry[3].extend(values)
        entry[4] = entry[4] or count > len(values)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for phase, labels in grouped.items():
        out[phase] = {}
        for label, (count, total, largest, values, sampled) in sorted(labels.items()):
            values.sort()
            out[phase][label] = {
                "n": count,
                "total": total,
                "max": largest,
                "p50": percentile(values, 0.50),
                "p99": percentile(values, 0.99),
                "sampled": sampled,
            }
    return out


def log_summary(path: Path) -> dict[str, Any]:
    """What the server logged (WARNING and above), counted by logger and step or message."""
    counts: Counter[str] = Counter()
    examples: list[str] = []
    if path.exists():
        for raw in path.read_text(errors="replace").splitlines():
            parts = raw.split("\t", 2)
            if len(parts) != 3:
                continue
            name, level, message = parts
            try:
                step = json.loads(message).get("step", "?")
            except (ValueError, AttributeError):
                step = re.sub(r"[0-9]+", "N", message)[:80]
            counts[f"{name} {level} {step}"] += 1
            if len(examples) < 8:
                examples.append(raw[:400])
    return {"counts": dict(counts.most_common(20)), "examples": examples}


def measure(store_url: str, plan_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every phase on one store (run in a child process)."""
    plan = json.loads(plan_path.read_text())
    out: dict[str, Any] = {"url": store_url.split("?", maxsplit=1)[0], "phases": {}}
    with workdir("bench-serve-") as folder:
        run = StoreRun(store_url, folder, args)
        try:
            for name in PHASES:
                print(
                    f"  phase {name} ({len(plan['phases'][name])} publishes) ...", file=sys.stderr, flush=True
                )
                items = [(float(offset), line) for offset, line in plan["phases"][name]]
                out["phases"][name] = run.phase(name, items)
        finally:
            out["server"] = run.stop()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                label = "sqlite" if store_url.startswith("sqlite") else "postgresql"
                for log in ("server.log", "remote.log"):
                    with contextlib.suppress(OSError):
                        (args.keep_logs / f"{label}-{log}").write_bytes((folder / log).read_bytes())
        timings = out["server"].pop("timings")
        out["server_timings"] = split_timings(timings, run.spans)
        out["ledger"] = run.ledger_side()
        out["poller"] = run.poller_stats
        out["server_log"] = log_summary(run.log_path)
    out["coordinator_peak_rss_mib"] = peak_rss_mib()
    return out


# -- report (parent) ------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _load(values: Sequence[float]) -> str:
    return f"{values[0]:.2f}"


def report(label: str, result: dict[str, Any]) -> str:
    rows = []
    ledger = result["ledger"]
    for name in PHASES:
        p = result["phases"][name]
        request, visible = p["request_ms"], p["visible_s"]
        side = ledger.get(name, {})
        if name == "throughput":
            scheduled, held = "as fast as answered", f"{p['requests_per_s']:.1f}"
        else:
            scheduled = f"{p['scheduled_per_s']:.2f}"
            held = f"{p['held_per_s']:.2f} (late p99 {p['late_ms']['p99']:.0f} ms)"
        errors = p["sent"] - p["accepted"]
        rows.append(
            [
                PHASE_TITLES[name],
                f"{p['sent']:,}",
                f"{errors}" + (f" ({p['server_5xx']} 5xx)" if p["server_5xx"] else ""),
                scheduled,
                held,
                f"{request.get('p50', float('nan')):.1f}",
                f"{request.get('p99', float('nan')):.1f}",
                f"{visible.get('p50', float('nan')):.2f}",
                f"{visible.get('p99', float('nan')):.2f}",
                f"{visible.get('max', float('nan')):.2f}",
                f"{p['not_visible']}",
                f"{side.get('pushes', 0)} ({side.get('versions_per_push') or 0:.1f})",
                f"{side.get('publish_to_confirmed_s', {}).get('p50', float('nan')):.2f}",
                f"{p['server_cpu_s_total']:.1f}",
                f"{_load(p['load_before'])} → {_load(p['load_after'])}",
            ]
        )
    headers = [
        "phase",
        "publishes",
        "refused",
        "scheduled /s",
        "held /s",
        "request p50 ms",
        "request p99 ms",
        "visible p50 s",
        "visible p99 s",
        "visible max s",
        "never visible",
        "pushes (versions/push)",
        "confirmed p50 s",
        "server CPU s",
        "load avg",
    ]
    return markdown_table(headers, rows)


def goals(results: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []

    def cell(ok: bool, text: str) -> str:
        return f"{_verdict(ok)}: {text}"

    line: list[str] = ["publish request p99 <= 20 ms (throughput phase)"]
    for _, r in results:
        p99 = r["phases"]["throughput"]["request_ms"].get("p99", float("inf"))
        line.append(cell(p99 <= REQUEST_P99_GOAL_MS, f"{p99:.1f} ms"))
    rows.append(line)
    line = ["publish request p99 <= 20 ms (real rate / 100x)"]
    for _, r in results:
        a = r["phases"]["real"]["request_ms"].get("p99", float("inf"))
        b = r["phases"]["fast"]["request_ms"].get("p99", float("inf"))
        line.append(cell(max(a, b) <= REQUEST_P99_GOAL_MS, f"{a:.1f} / {b:.1f} ms"))
    rows.append(line)
    for name, title in (("real", "real rate"), ("fast", "100x")):
        goal = VISIBLE_P99_GOAL_S[name]
        line = [f"publish-to-visible p99 <= {goal:g} s at {title}"]
        for _, r in results:
            p = r["phases"][name]
            p99 = p["visible_s"].get("p99", float("inf"))
            ok = p99 <= goal and p["not_visible"] == 0
            line.append(
                cell(ok, f"{p99:.2f} s" + (f", {p['not_visible']} never visible" if p["not_visible"] else ""))
            )
        rows.append(line)
    line = ["peak memory < 1 GiB (server / clients / poller)"]
    for _, r in results:
        server = r["server"]["peak_rss_mib"]
        clients = max(p["client_peak_rss_mib"] for p in r["phases"].values())
        poller = r["poller"].get("peak_rss_mib", float("nan"))
        ok = max(server, clients, poller) < MEMORY_GOAL_MIB
        line.append(cell(ok, f"{server:.0f} / {clients:.0f} / {poller:.0f} MiB"))
    rows.append(line)
    return markdown_table(["goal", *[label for label, _ in results]], rows)


def timing_text(timed: dict[str, dict[str, float]]) -> str:
    parts = []
    for name, stats in timed.items():
        label = name + ("*" if stats.get("sampled") else "")
        if name.endswith("(count)"):
            parts.append(f"{label} {stats['p50']:.0f} (p99 {stats['p99']:.0f}, max {stats['max']:.0f})")
        else:
            parts.append(
                f"{label} {stats['n']:.0f}, {stats['p50']:.1f}, {stats['p99']:.1f}, {stats['max']:.0f}"
            )
    return "; ".join(parts)


def details(label: str, r: dict[str, Any]) -> str:
    sizes = {k: v / 1024 for k, v in r["phases"]["throughput"]["crate_bytes"].items()}
    poller = {"peak_rss_mib": math.nan, "fetch_p50_ms": math.nan, "fetch_p99_ms": math.nan, **r["poller"]}
    clients_peak = max(p["client_peak_rss_mib"] for p in r["phases"].values())
    lines = [
        f"{label}: server peak {r['server']['peak_rss_mib']:.0f} MiB, CPU {r['server']['cpu_s']:.1f} s; "
        f"clients peak {clients_peak:.0f} MiB; poller peak {poller['peak_rss_mib']:.0f} MiB, "
        f"{poller.get('fetches', 0):,} fetches (p50 {poller['fetch_p50_ms']:.0f} ms, "
        f"p99 {poller['fetch_p99_ms']:.0f} ms, errors {poller.get('errors', {})}); "
        f"open jobs at the end: {r['ledger']['open_jobs_at_end']}",
        f"  .crate KiB (throughput phase): p50 {sizes['p50']:.1f}, p90 {sizes['p90']:.1f}, "
        f"p99 {sizes['p99']:.1f}, max {sizes['max']:.1f}, mean {sizes['mean']:.1f}",
    ]
    for name in PHASES:
        p, side = r["phases"][name], r["ledger"].get(name, {})
        recorded = side.get("send_to_recorded_s", {})
        confirmed = side.get("publish_to_confirmed_s", {})
        after = side.get("confirmed_to_visible_s", {})
        lines.append(
            f"  {PHASE_TITLES[name]}: statuses {p['statuses']}, connection errors {p['connection_errors']}; "
            f"all visible {p['all_visible_after_last_answer_s']:.2f} s after the last answer; "
            f"send-to-recorded p50 {recorded.get('p50', float('nan')) * 1000:.1f} ms; "
            f"recorded-to-confirmed p50/p99 {confirmed.get('p50', float('nan')):.2f}/"
            f"{confirmed.get('p99', float('nan')):.2f} s; confirmed-to-seen p50 "
            f"{after.get('p50', float('nan')) * 1000:.0f} ms; server CPU {p['server_cpu_s_requests']:.1f} s "
            f"while sending; load {_load(p['load_before'])} → {_load(p['load_after_requests'])} → "
            f"{_load(p['load_after'])}"
        )
        for error, count in p["errors"].items():
            lines.append(f"    {count} x {error}")
        timed = r.get("server_timings", {}).get(name, {})
        if timed:
            lines.append(
                "    server side, ms (n, p50, p99, max; *: percentiles of a sample): " + timing_text(timed)
            )
    start = r.get("server_timings", {}).get("start", {})
    if start:
        lines.append(
            "  outside the phases (start-up, drains), ms (n, p50, p99, max; *: sampled): "
            + timing_text(start)
        )
    for missing in r["ledger"].get("never_seen", []):
        lines.append(f"  never seen by the poller: {missing}")
    if r["server_log"]["counts"]:
        lines.append(f"  server log (WARNING+): {r['server_log']['counts']}")
    return "\n".join(lines)


def source_revision() -> str:
    """The commit of the ``ledger`` package measured, and whether its tree has uncommitted changes."""
    import ledger

    root = Path(ledger.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "ledger", "projections"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{root} (not a git checkout)"
    return f"{head}" + (" with uncommitted changes to ledger/ or projections/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", help="sqlite, postgresql, both (default) or a store URL; repeatable"
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="throughput phase publishes (default 2000)"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--threads", type=int, default=8, help="waitress threads (default 8, as ledger serve)"
    )
    parser.add_argument(
        "--window", type=int, default=None, help="publishes at the real rate (default 100: 259 s)"
    )
    parser.add_argument("--window-fast", type=int, default=None, help="publishes at 100x (default 200: 10 s)")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="the poller's pause between fetches")
    parser.add_argument("--quick", action="store_true", help="200 requests, windows of 12 and 100")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--keep-logs", type=Path, help="copy the server's and the remote's logs here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (200, 12, 100) if args.quick else (2000, 100, 200)
    args.requests = args.requests or defaults[0]
    args.window = args.window or defaults[1]
    args.window_fast = args.window_fast or defaults[2]

    if args.child:
        result = measure(args.store[0], args.plan, args)
        print(json.dumps(result))
        return 0

    before_load = os.getloadavg()
    revision = source_revision()
    results: list[tuple[str, dict[str, Any]]] = []
    with workdir("bench-serve-plan-") as folder:
        print("building the plan from the trace ...", file=sys.stderr, flush=True)
        plan = build_plan(args.requests, args.window, args.window_fast)
        plan_path = folder / "plan.json"
        plan_path.write_text(json.dumps(plan))
        for store in stores_from_args(args.store, folder):
            child = [__file__, "--child", "--store", store.url, "--plan", str(plan_path)]
            child += ["--requests", str(args.requests), "--clients", str(args.clients)]
            child += ["--threads", str(args.threads), "--window", str(args.window)]
            child += ["--window-fast", str(args.window_fast), "--poll-ms", str(args.poll_ms)]
            if args.keep_logs is not None:
                child += ["--keep-logs", str(args.keep_logs)]
            print(f"measuring {store.label} ...", file=sys.stderr, flush=True)
            try:
                result = run_child(child)
            finally:
                drop_pg_schema(store)
            results.append((store.label, result))
    print(f"Command: `{command_line()}`")
    print(
        f"Machine: {machine()}; load average before: {before_load[0]:.2f} {before_load[1]:.2f} "
        f"{before_load[2]:.2f}, after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(f"Code measured: {revision}")
    real, fast = plan["windows"]["real"], plan["windows"]["fast"]
    print(
        f"Trace windows: real rate from publish #{real['first_publish']:,} "
        f"({real['trace_span_s']:.0f} s of trace played in {real['scheduled_s']:.0f} s); "
        f"100x from publish #{fast['first_publish']:,} ({fast['trace_span_s']:.0f} s "
        f"of trace played in {fast['scheduled_s']:.0f} s); {args.clients} clients, "
        f"{args.threads} server threads, poller every {args.poll_ms:g} ms"
    )
    for label, result in results:
        print()
        print(f"### {label}")
        print()
        print(report(label, result))
        print()
        print(details(label, result))
    print()
    print(goals(results))
    if args.json is not None:
        document = {
            "command": command_line(),
            "machine": machine(),
            "revision": revision,
            "load_before": list(before_load),
            "load_after": list(os.getloadavg()),
            "windows": plan["windows"],
            "trace": plan["trace"],
            "results": dict(results),
        }
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
