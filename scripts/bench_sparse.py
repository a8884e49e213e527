"""Sparse index benchmark on the real crates.io data: a folder and an S3 bucket as origins, a CDN
front as the public URL, and the ledger syncing the trace to a git remote and a sparse index at once.

1. folder   The whole baseline (138,913 crate files, ``realdata.baseline_files``, plus
            ``config.json``) built as one commit (``SparseIndex.build_commit``) in a shadow whose
            origin is an empty folder, then ``push`` (timed alone; goal <= 60 s), then
            ``read_back`` of a random sample of files (and ``config.json``) through a CDN front
            (``python -m ledger.testing.cdn``, a process of its own) over that folder.
2. s3       The same onto an empty bucket of moto's S3 server, in a process of its own (moto is
            CPU-bound Python: in this process it would share one interpreter with the uploader's
            32 threads). The push is timed; requests/s and the CPU of the server and of this
            process during the push say what bounds it. ``--s3-files`` pushes the first N crate
            files instead and extrapolates to the whole index (the report says so).
3. per-job  On the folder holding the baseline, behind the front: for each of the first
            ``--jobs`` publishes of the trace, the crate's whole file changed (the new line
            appended) committed on the head, ``push``, ``read_back``; push + read-back timed
            (goal p50 <= 20 ms), with where the time goes.
4. scans    ``survey`` from a fresh shadow over that folder (the first scan lists and reads
            every file), then again after ``--changed`` files were rewritten at the origin behind
            the ledger's back (the incremental scan must read only those), then once more with
            nothing changed.
5. both     The whole trace (``--trace-limit``: a prefix) through the ledger with two targets:
            a git remote (``python -m ledger.testing.remote serve --protocol git``, git daemon)
            and a sparse folder behind a CDN front, a SQLite store. The index starts EMPTY (the
            baseline is not imported). Every event is recorded first (runs of publishes through
            ``publish_many``, yanks and unyanks one by one; yanks of baseline versions are
            refused, the index holding none), then each target is synced by a process of its
            own, both started at once (as ``ledger worker --on git`` and ``--on sparse`` run),
            passes of ``--max-batch`` jobs a commit until it has no job open. Timed from their
            start to the last one's end (goal >= 1,000 confirmed versions/s through both). The
            folder is read back through nginx when it is installed (a static web server in front
            of the folder), else through the CDN front. Then both audits, and every file of the
            sparse origin compared with the git remote's file of the same path.

Each phase runs in a process of its own and reports its own peak memory (goal < 1 GiB each);
the CDN fronts, the S3 server and the git server run in processes of their own too.

Usage: .venv/bin/python scripts/bench_sparse.py [--quick] [--phase folder|s3|per-job|scans|both]...
       [--crates N] [--s3-files N] [--jobs N] [--sample N] [--changed N] [--trace-limit N]
       [--max-batch N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GitRemote,
    TimedIterator,
    command_line,
    machine,
    markdown_table,
    peak_rss_mib,
    percentile,
    process_cpu_s,
    run_phase,
    stop_process,
    summary_ms,
    workdir,
)

if TYPE_CHECKING:
    from ledger.adapters.realdata import TraceEvent
    from ledger.adapters.sparse.index import SparseIndex
    from ledger.services.ledger import Ledger

ACTOR = "bench"
CONFIG = {"dl": "https://static.crates.io/crates", "api": "https://crates.io"}
BUCKET = "sparse-index"
PREFIX = "index"
PHASES = ("folder", "s3", "per-job", "scans", "both")
RUN_ORDER = ("folder", "per-job", "scans", "s3", "both")
"""The folder's phases first, one after the other on the same folder, behind the same front."""
FOLDER_PHASES = ("folder", "per-job", "scans")
SEED = 20240429

PUSH_GOAL_S = 60.0
PER_JOB_GOAL_MS = 20.0
THROUGHPUT_GOAL = 1000.0
MEMORY_GOAL_MIB = 1024.0

FULL = {"jobs": 500, "sample": 1000, "changed": 100, "trace_limit": None, "crates": None}
QUICK = {"jobs": 50, "sample": 200, "changed": 100, "trace_limit": 5000, "crates": 5000, "s3_files": 2000}
S3_FILES_FULL = 20000
"""Crate files pushed to the bucket in a full run (None: the whole index). moto takes about 5 ms
of CPU per PUT in one interpreter, so the whole index (139k files) would take 15-20 minutes: a
full run pushes this many and extrapolates."""

PASSES_AT_MOST = 50
"""Passes per target in phase 5 before it gives up on jobs that do not confirm."""


# -- helpers --------------------------------------------------------------------------------------


class Stages:
    """Adds up the time spent in chosen methods of chosen objects, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Time ``owner.attr`` under ``label`` (nothing when the object has no such method)."""
        method = getattr(owner, attr, None)
        if method is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, attr, timed)

    def wrap_iter(self, owner: Any, attr: str, label: str) -> None:
        """Like :meth:`wrap` for a method returning an iterator: the time of taking its items."""
        method = getattr(owner, attr, None)
        if method is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            source = iter(method(*args, **kwargs))
            self.calls[label] += 1
            while True:
                start = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    return
                finally:
                    self.seconds[label] += time.perf_counter() - start
                yield item

        setattr(owner, attr, timed)

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before.get(k, 0.0) for k, v in self.seconds.items()}


def instrument_push(index: SparseIndex, stages: Stages) -> None:
    """Time the parts of ``SparseIndex.push`` and ``read_back`` that reach outside or write state."""
    backend = index._backend
    stages.wrap(backend, "get_marker", "marker read")
    stages.wrap_iter(backend, "listing", "listing")
    stages.wrap(backend, "put_many", "files written")
    stages.wrap(backend, "delete_many", "files deleted")
    stages.wrap(backend, "flush", "flush")
    stages.wrap(backend, "put_marker", "marker written")
    stages.wrap(index, "changed_paths", "changed paths (tree diff)")
    stages.wrap(index, "read_blob", "blobs read from the shadow (within files written)")
    stages.wrap_iter(index, "files_unordered", "blobs read from the shadow (within files written)")
    stages.wrap(index, "_after_push", "survey state carried over")
    stages.wrap(index._public, "post_json", "invalidation")


def instrument_survey(index: SparseIndex, stages: Stages) -> None:
    """Time the parts of ``SparseIndex.survey``."""
    stages.wrap(index._backend, "get_marker", "marker read")
    stages.wrap_iter(index._backend, "listing", "listing")
    stages.wrap_iter(index._backend, "get_many", "files read")
    stages.wrap(index._state, "survey", "survey state read")
    stages.wrap(index._state, "save_survey", "survey state written")
    stages.wrap(index, "build_commit", "commit written")
    stages.wrap(index, "commit", "commit written")


def instrument_target(index: Any, stages: Stages, *, sparse: bool) -> list[str]:
    """Time an index target's calls from the worker (and, for a sparse one, parts of its push,
    with the files it uploads and reads back counted in ``stages.calls``); the messages of its
    pushes whose invalidation failed are collected in the list returned."""
    failed: list[str] = []
    for name in ("fetch", "commit", "push", "read_back"):
        stages.wrap(index, name, name)
    if sparse:
        push, read_back, put_many = index.push, index.read_back, index._backend.put_many

        def noted(commit: str) -> Any:
            report = push(commit)
            if "invalidation failed" in (report.message or ""):
                failed.append(report.message)
            return report

        def read_counted(commit: str, expected: Any) -> Any:
            stages.calls["files read back"] += len(expected) + ("config.json" not in expected)
            return read_back(commit, expected)

        def put_counted(items: Any) -> dict[str, str]:
            written: dict[str, str] = put_many(items)
            stages.calls["files uploaded"] += len(written)
            return written

        index.push, index.read_back, index._backend.put_many = noted, read_counted, put_counted
        stages.wrap(index._backend, "put_many", "files written (within push)")
        stages.wrap(index, "changed_paths", "changed paths (within push)")
        stages.wrap(index, "_after_push", "survey state carried over (within push)")
        stages.wrap(index._public, "post_json", "invalidation (within push)")
    return failed


class CountedReads:
    """Counts the keys a backend's ``get_many`` is asked for (the files a survey reads)."""

    def __init__(self, index: SparseIndex) -> None:
        self.keys = 0
        backend = index._backend
        method = backend.get_many

        def counted(keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
            wanted = list(keys)
            self.keys += len(wanted)
            return method(wanted)

        backend.get_many = counted  # type: ignore[method-assign]


def config_file() -> bytes:
    return (json.dumps(CONFIG, indent=2) + "\n").encode()


def open_sparse(shadow: Path, public_url: str, origin: str, **options: Any) -> SparseIndex:
    from ledger.adapters.sparse.index import SparseIndex

    return SparseIndex.open(shadow, public_url, origin, timeout_ms=60000, **options)


def peak_rss_of(pid: int) -> float:
    """The peak resident memory of another process (Linux ``VmHWM``), MiB; NaN when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Cdn:
    """``python -m ledger.testing.cdn --origin DIR`` in a process of its own."""

    def __init__(self, origin: str, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger.testing.cdn", "--origin", origin, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("{"):
            self.stop()
            raise SystemExit(f"the CDN front did not start (see {log})")
        started = json.loads(line)
        self.url: str = started["url"]
        self.invalidate_url: str = started["invalidate_url"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class Nginx:
    """nginx serving the origin folder under ``/index/`` (a static web server in front of the
    folder, as an edge that holds the files itself serves them; no invalidation to send)."""

    def __init__(self, origin: Path, folder: Path) -> None:
        from ledger.testing.s3 import free_port

        port = free_port()
        conf = folder / "nginx.conf"
        conf.write_text(
            "daemon off; master_process off; worker_processes 1;\n"
            f"error_log {folder / 'nginx-error.log'}; pid {folder / 'nginx.pid'};\n"
            "events { worker_connections 512; }\n"
            "http { access_log off; sendfile on; keepalive_requests 1000000; default_type text/plain;\n"
            f"  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};\n"
            f"  uwsgi_temp_path {folder}; scgi_temp_path {folder};\n"
            f"  server {{ listen 127.0.0.1:{port}; location /index/ {{ alias {origin}/; }} }} }}\n"
        )
        self.process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(folder)])
        self.url = f"http://127.0.0.1:{port}/index/"
        self.invalidate_url: str | None = None
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise SystemExit("nginx did not start") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)


class Moto:
    """moto's S3 server (``ThreadedMotoServer``, as in ``ledger.testing.s3``) in a process of its own."""

    def __init__(self, port: int, log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", "moto", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().decode().strip() != "ready":
            self.stop()
            raise SystemExit(f"the S3 server did not start (see {log})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def serve_moto(port: int) -> int:
    """The child that serves S3 until SIGTERM."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


def baseline_with_config(crates: int | None, counted: dict[str, int]) -> Iterator[tuple[str, bytes]]:
    """The baseline's crate files (the first ``crates`` of them), then ``config.json``."""
    from ledger.adapters.realdata import ReadStats, baseline_files

    stats = ReadStats()
    for path, data in baseline_files(crates, stats=stats):
        counted["files"] += 1
        counted["bytes"] += len(data)
        yield path, data
    counted["versions"] = stats.yielded
    yield "config.json", config_file()


def build_baseline(index: SparseIndex, crates: int | None) -> tuple[str, dict[str, Any]]:
    """The baseline as one commit of the shadow: its id, and what it took."""
    counted: dict[str, int] = defaultdict(int)
    source = TimedIterator(baseline_with_config(crates, counted))
    start, cpu = time.perf_counter(), time.process_time()
    commit = index.build_commit(source, "Baseline: crates.io index on 2024-04-29")
    wall = time.perf_counter() - start
    return commit, {
        "crate_files": counted["files"],
        "versions": counted["versions"],
        "mib": counted["bytes"] / 2**20,
        "render_s": source.seconds,
        "build_s": wall - source.seconds,
        "build_cpu_s": time.process_time() - cpu - source.cpu_seconds,
    }


def read_back_sample(index: SparseIndex, commit: str, sample: int) -> dict[str, Any]:
    """``read_back`` of ``sample`` random files of ``commit`` (and its ``config.json``)."""
    paths = [p for p in index.changed_paths(None, commit) if p != "config.json"]
    chosen = random.Random(SEED).sample(paths, min(sample, len(paths)))
    expected: dict[str, bytes | None] = {p: index.read_blob(commit, p) for p in chosen}
    start = time.perf_counter()
    readback = index.read_back(commit, expected)
    wall = time.perf_counter() - start
    return {
        "files": len(expected) + 1,
        "s": wall,
        "files_per_s": (len(expected) + 1) / wall if wall else 0.0,
        "confirmed": readback.confirmed,
        "contains_commit": readback.contains_commit,
        "mismatched": len(readback.mismatched),
        "problems": list(readback.problems[:5]),
    }


# -- phases (children) ----------------------------------------------------------------------------


def phase_folder(folder: Path, url: str, invalidate: str, crates: int | None, sample: int) -> dict[str, Any]:
    """Phase 1: the whole baseline onto the empty folder ``folder/origin``, then a sampled read-back."""
    origin = folder / "origin"
    with open_sparse(folder / "shadow.git", url, str(origin), invalidate_url=invalidate) as index:
        commit, built = build_baseline(index, crates)
        stages = Stages()
        instrument_push(index, stages)
        start, cpu = time.perf_counter(), time.process_time()
        report = index.push(commit)
        push_s = time.perf_counter() - start
        push_cpu = time.process_time() - cpu
        files = built["crate_files"] + 1
        out: dict[str, Any] = {
            **built,
            "whole_index": crates is None,
            "commit": commit,
            "push_status": report.status,
            "push_message": report.message,
            "push_s": push_s,
            "push_cpu_s": push_cpu,
            "push_files_per_s": files / push_s if push_s else 0.0,
            "push_stages_s": stages.snapshot(),
            "read_back": read_back_sample(index, commit, sample),
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def phase_s3(
    folder: Path, endpoint: str, public: str, moto_pid: int, crates: int | None, sample: int
) -> dict[str, Any]:
    """Phase 2: the baseline (or its first ``crates`` files) onto an empty bucket."""
    from ledger.testing import s3

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": s3.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3.SECRET_KEY,
            "AWS_REGION": s3.REGION,
            "AWS_DEFAULT_REGION": s3.REGION,
        }
    )
    from ledger.adapters.sparse import s3 as s3_backend

    origin = f"s3://{BUCKET}/{PREFIX}"
    with open_sparse(folder / "s3-shadow.git", public, origin, endpoint_url=endpoint) as index:
        commit, built = build_baseline(index, crates)
        stages = Stages()
        instrument_push(index, stages)
        server_cpu = process_cpu_s(moto_pid)
        start, cpu = time.perf_counter(), time.process_time()
        report = index.push(commit)
        push_s = time.perf_counter() - start
        push_cpu = time.process_time() - cpu
        server_cpu = process_cpu_s(moto_pid) - server_cpu
        files = built["crate_files"] + 1
        out: dict[str, Any] = {
            **built,
            "whole_index": crates is None,
            "push_status": report.status,
            "push_message": report.message,
            "push_s": push_s,
            "push_cpu_s": push_cpu,
            "server_cpu_s": server_cpu,
            "requests": files + 1,
            "requests_per_s": (files + 1) / push_s if push_s else 0.0,
            "client_threads": s3_backend.WORKERS,
            "push_stages_s": stages.snapshot(),
            "read_back": read_back_sample(index, commit, sample),
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def trace_publishes(count: int) -> list[TraceEvent]:
    """The first ``count`` publishes of the trace."""
    from ledger.adapters.realdata import trace

    found: list[TraceEvent] = []
    for event in trace():
        if event.event == "publish":
            found.append(event)
            if len(found) >= count:
                break
    return found


def phase_per_job(folder: Path, url: str, invalidate: str, jobs: int) -> dict[str, Any]:
    """Phase 3: one commit, push and read-back per trace publish, on the folder holding the baseline."""
    from ledger.adapters.realdata import index_line, render_line
    from ledger.domain.names import index_path

    events = trace_publishes(jobs)
    origin = folder / "origin"
    with open_sparse(folder / "shadow.git", url, str(origin), invalidate_url=invalidate) as index:
        head = index.fetch()
        if head is None:
            raise SystemExit("the folder holds no index: run the folder phase first")
        stages = Stages()
        instrument_push(index, stages)
        commit_s: list[float] = []
        push_s: list[float] = []
        read_s: list[float] = []
        total_s: list[float] = []
        per_stage: dict[str, list[float]] = defaultdict(list)
        unconfirmed: list[str] = []
        skipped = new_files = 0
        cpu = time.process_time()
        for event in events:
            path = index_path(event.crate)
            old = index.read_blob(head, path) or b""
            if f'"vers":"{event.version}"'.encode() in old:
                skipped += 1
                continue
            new_files += not old
            data = old + render_line(index_line(event.crate, event.version)) + b"\n"
            t0 = time.perf_counter()
            commit = index.commit(head, {path: data}, f"Publish {event.crate} {event.version}")
            assert commit is not None
            t1 = time.perf_counter()
            before = stages.snapshot()
            report = index.push(commit)
            t2 = time.perf_counter()
            readback = index.read_back(commit, {path: data})
            t3 = time.perf_counter()
            if report.status != "ok" or not readback.confirmed:
                unconfirmed.append(f"{path}: {report.status} {report.message}; {readback.problems[:1]}")
            for stage, seconds in stages.since(before).items():
                per_stage[stage].append(seconds)
            commit_s.append(t1 - t0)
            push_s.append(t2 - t1)
            read_s.append(t3 - t2)
            total_s.append(t3 - t1)
            head = commit
        cpu = time.process_time() - cpu
        survey_entries = len(index._state.survey().files)
        state_files = {p.name: p.stat().st_size for p in sorted((folder / "shadow.git").glob("sparse-*"))}
    out: dict[str, Any] = {
        "events": len(events),
        "jobs": len(total_s),
        "new_files": new_files,
        "skipped_already_present": skipped,
        "unconfirmed": len(unconfirmed),
        "unconfirmed_examples": unconfirmed[:5],
        "push_and_read_back": summary_ms(total_s),
        "push": summary_ms(push_s),
        "read_back": summary_ms(read_s),
        "commit": summary_ms(commit_s),
        "cpu_per_job_ms": cpu / len(total_s) * 1000 if total_s else 0.0,
        "push_stages_p50_ms": {k: percentile(sorted(v), 0.5) * 1000 for k, v in per_stage.items()},
        "survey_state_entries": survey_entries,
        "state_files_bytes": state_files,
        "peak_rss_mib": peak_rss_mib(),
    }
    return out


def timed_survey(
    index: SparseIndex, reads: CountedReads, stages: Stages
) -> tuple[str | None, dict[str, Any]]:
    """One ``survey``: its commit, and its time, CPU, files read and stages."""
    reads.keys = 0
    before = stages.snapshot()
    start, cpu = time.perf_counter(), time.process_time()
    head = index.survey()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return head, {"s": wall, "cpu_s": cpu, "files_read": reads.keys, "stages_s": stages.since(before)}


def phase_scans(folder: Path, url: str, changed: int) -> dict[str, Any]:
    """Phase 4: surveys of the folder from a fresh shadow: all, after out-of-band edits, nothing new."""
    from ledger.adapters.realdata import index_line, render_line

    origin = folder / "origin"
    shadow = folder / "scan-shadow.git"
    shutil.rmtree(shadow, ignore_errors=True)
    with open_sparse(shadow, url, str(origin)) as index:
        reads = CountedReads(index)
        stages = Stages()
        instrument_survey(index, stages)
        first, first_figures = timed_survey(index, reads, stages)
        assert first is not None
        files = index.changed_paths(None, first)
        peak_first = peak_rss_mib()

        candidates = [p for p in files if p != "config.json"]
        chosen = random.Random(SEED).sample(candidates, min(changed, len(candidates)))
        edited: dict[str, bytes] = {}
        for path in chosen:  # behind the ledger's back, as a hand edit or a sync tool would
            target = origin.joinpath(*path.split("/"))
            data = target.read_bytes()
            crate = json.loads(data.split(b"\n", 1)[0])["name"]
            edited[path] = data + render_line(index_line(crate, "999.0.0")) + b"\n"
            target.write_bytes(edited[path])

        second, second_figures = timed_survey(index, reads, stages)
        assert second is not None
        wrong = [p for p, data in edited.items() if index.read_blob(second, p) != data]
        second_figures["commit_differs_in"] = len(index.changed_paths(first, second))
        second_figures["files_not_as_edited"] = len(wrong)

        third, third_figures = timed_survey(index, reads, stages)
        third_figures["same_commit"] = third == second
    return {
        "files": len(files),
        "first": first_figures,
        "changed_out_of_band": len(edited),
        "incremental": second_figures,
        "unchanged": third_figures,
        "peak_rss_first_survey_mib": peak_first,
        "peak_rss_mib": peak_rss_mib(),
    }


def baseline_pool() -> list[str]:
    """The baseline's crate names in order: the dependency pool of the trace's index lines."""
    from ledger.adapters.realdata import baseline

    names: list[str] = []
    for crate, _ in baseline():
        if not names or names[-1] != crate:
            names.append(crate)
    return names


def record_trace(ledger: Ledger, events: Sequence[TraceEvent], pool: Sequence[str]) -> dict[str, Any]:
    """Every event in order: each run of publishes through one ``publish_many``, the rest one by one."""
    from ledger.adapters.realdata import index_line
    from ledger.domain.errors import LedgerError

    accepted: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    run: list[TraceEvent] = []

    def flush() -> None:
        if not run:
            return
        lines = ((n, index_line(e.crate, e.version, deps_pool=pool)) for n, e in enumerate(run))
        bulk = ledger.publish_many(lines, ACTOR)
        accepted["publish"] += bulk.accepted
        if bulk.present:
            refused["publish: already published"] += bulk.present
        for _, error in bulk.refused:
            kind = "name collision" if "collides" in error else error.split(":")[0][:40]
            refused[f"publish: {kind}"] += 1
        run.clear()

    for event in events:
        if event.event == "publish":
            run.append(event)
            continue
        flush()
        change = ledger.yank if event.event == "yank" else ledger.unyank
        try:
            change(event.crate, event.version, ACTOR)
        except LedgerError as exc:
            refused[f"{event.event}: {type(exc).__name__}"] += 1
        else:
            accepted[event.event] += 1
    flush()
    return {"accepted": dict(accepted), "refused": dict(refused)}


def phase_both(folder: Path, limit: int | None, max_batch: int) -> dict[str, Any]:
    """Phase 5: the trace recorded, then synced to a git remote and a sparse folder until all confirm."""
    from ledger.adapters.realdata import ReadStats, trace
    from ledger.bootstrap import open_ledger

    folder.mkdir(parents=True, exist_ok=True)
    origin = folder / "origin"
    origin.mkdir()
    git = GitRemote(folder / "srv")
    cdn: Cdn | Nginx = (
        Nginx(origin, folder) if shutil.which("nginx") else Cdn(str(origin), folder / "cdn.log")
    )
    try:
        settings = both_settings(folder, git.url, cdn.url, cdn.invalidate_url)
        stats = ReadStats()
        events = list(trace(limit, stats=stats))
        pool = baseline_pool()
        with open_ledger(settings) as ledger:
            start = time.perf_counter()
            recorded = record_trace(ledger, events, pool)
            record_s = time.perf_counter() - start
        synced = sync_side_by_side(folder, git.url, cdn.url, cdn.invalidate_url, max_batch)
        with open_ledger(settings) as ledger:
            checked = verify_both(ledger, folder / "srv" / "index.git", origin)
        cdn_cpu = process_cpu_s(cdn.pid)
        cdn_peak = peak_rss_of(cdn.pid)
    finally:
        cdn.stop()
        git.stop()
    return {
        "events": len(events),
        "whole_trace": limit is None,
        "trace_rows_skipped": stats.skipped,
        **recorded,
        "record_s": record_s,
        **synced,
        "verify": checked,
        "cdn_cpu_s": cdn_cpu,
        "front": "nginx" if isinstance(cdn, Nginx) else "the CDN front",
        "cdn_peak_rss_mib": cdn_peak,
        "peak_rss_mib": peak_rss_mib(),
    }


def both_settings(folder: Path, git_url: str, cdn_url: str, invalidate: str | None) -> Any:
    from ledger.settings import Settings, TargetSpec

    origin = folder / "origin"
    extra = f"&invalidate={invalidate}" if invalidate else ""
    spec = TargetSpec.parse(f"sparse=sparse+{cdn_url}?origin={origin}{extra}")
    return Settings(
        store=f"sqlite:///{folder / 'ledger.db'}",
        remote=git_url,
        targets=(spec,),
        index_dir=folder / "clone.git",
        timeout_ms=60000,
    )


def sync_side_by_side(
    folder: Path, git_url: str, cdn_url: str, invalidate: str | None, max_batch: int
) -> dict[str, Any]:
    """Each target synced by a process of its own (``ledger worker --on NAME`` each, as a
    deployment runs them: one interpreter per target), both started at once; the wall time runs
    from their start to the last one's end."""
    base = [sys.executable, __file__, "--child", "sync-target", "--dir", str(folder), "--git-url", git_url]
    base += ["--url", cdn_url, "--max-batch", str(max_batch)]
    base += ["--invalidate", invalidate] if invalidate else []
    started = time.perf_counter()
    running = {
        name: subprocess.Popen([*base, "--target", name], stdout=subprocess.PIPE, text=True)
        for name in ("git", "sparse")
    }
    results: dict[str, Any] = {}
    for name, process in running.items():
        printed, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"syncing {name} failed with exit code {process.returncode}")
        results[name] = json.loads([ln for ln in printed.splitlines() if ln.strip()][-1])
    wall = time.perf_counter() - started
    out: dict[str, Any] = {"sync_s": wall, "max_batch": max_batch, "side_by_side": True, "targets": {}}
    for name, found in results.items():
        out["targets"][name] = found["targets"][name]
        out["targets"][name]["process_wall_s"] = found["sync_s"]
    both = min(t["confirmed_versions"] for t in out["targets"].values())
    out["confirmed_versions_both"] = both
    out["versions_per_s"] = both / wall if wall else 0.0
    return out


def sync_target(
    folder: Path, git_url: str, cdn_url: str, invalidate: str | None, max_batch: int, name: str
) -> dict[str, Any]:
    """One target's passes, in this process, until it has no job open."""
    from ledger.bootstrap import open_ledger
    from ledger.services.sync import WorkerOptions

    with open_ledger(both_settings(folder, git_url, cdn_url, invalidate)) as ledger:
        return sync_both(ledger, WorkerOptions(max_batch=max_batch, index_config=CONFIG), names=(name,))


def sync_both(ledger: Ledger, options: Any, names: Sequence[str] = ("git", "sparse")) -> dict[str, Any]:
    """Passes on each target in turn until neither has a job open (or they stop moving)."""
    cores = {name: ledger.on(name) for name in names}
    spent = dict.fromkeys(cores, 0.0)
    cpu = dict.fromkeys(cores, 0.0)
    views = dict.fromkeys(cores, 0.0)
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in cores}
    done = dict.fromkeys(cores, False)
    stages = {name: Stages() for name in cores}
    unvalidated = {
        name: instrument_target(core.index(), stages[name], sparse=name == "sparse")
        for name, core in cores.items()
    }
    started = time.perf_counter()
    for name, core in cores.items():  # each target's views follow the log the recording wrote
        t0, c0 = time.perf_counter(), time.process_time()
        core.views.catch_up()
        views[name] = time.perf_counter() - t0
        spent[name] += views[name]
        cpu[name] += time.process_time() - c0
    finished: dict[str, float] = {}
    while not all(done.values()):
        for name, core in cores.items():
            if done[name]:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            result = core.sync(options)
            wall = time.perf_counter() - t0
            spent[name] += wall
            cpu[name] += time.process_time() - c0
            passes[name].append(
                {
                    "s": wall,
                    "jobs": result.jobs,
                    "confirmed": result.confirmed,
                    "failed": result.failed,
                    "held": result.held,
                    "open": result.open_left,
                    "commits": len(result.commits),
                }
            )
            print(f"  {name} pass: {json.dumps(passes[name][-1])}", file=sys.stderr, flush=True)
            if result.open_left <= result.held or len(passes[name]) >= PASSES_AT_MOST:
                done[name] = True
                finished[name] = time.perf_counter() - started
    wall = time.perf_counter() - started
    out: dict[str, Any] = {"sync_s": wall, "max_batch": options.max_batch, "targets": {}}
    for name, core in cores.items():
        core.views.catch_up()
        rows = core.db.query("SELECT versions, state FROM view_jobs")
        states = Counter(row[1] for row in rows)
        versions = sum(len(json.loads(row[0])) for row in rows if row[1] == "completed")
        out["targets"][name] = {
            "jobs": len(rows),
            "states": dict(states),
            "confirmed_versions": versions,
            "busy_s": spent[name],
            "cpu_s": cpu[name],
            "views_catch_up_s": views[name],
            "finished_after_s": finished.get(name, wall),
            "versions_per_busy_s": versions / spent[name] if spent[name] else 0.0,
            "passes": passes[name],
            "commits": sum(p["commits"] for p in passes[name]),
            "stages_s": dict(stages[name].seconds),
            "files_uploaded": stages[name].calls["files uploaded"],
            "files_read_back": stages[name].calls["files read back"],
            "invalidations_failed": len(unvalidated[name]),
            "invalidation_failures": unvalidated[name][:3],
        }
    both = min(t["confirmed_versions"] for t in out["targets"].values())
    out["confirmed_versions_both"] = both
    out["versions_per_s"] = both / wall if wall else 0.0
    return out


def verify_both(ledger: Ledger, bare: Path, origin: Path) -> dict[str, Any]:
    """Both audits, and every file of the sparse origin against the git remote's head."""
    import pygit2

    from ledger.adapters.git.reading import walk
    from ledger.adapters.sparse.backends import FolderBackend

    start = time.perf_counter()
    git_report = ledger.audit()
    sparse_report = ledger.on("sparse").audit()
    repo = pygit2.Repository(str(bare))
    head = repo.head.target
    tree = repo[head].peel(pygit2.Commit).tree
    git_files = {path: blob.data for path, blob in walk(tree, "")}
    sparse_paths = {key for key, _ in FolderBackend(origin).listing()}
    differ = [p for p in sorted(git_files) if p in sparse_paths and (origin / p).read_bytes() != git_files[p]]
    only_git = sorted(set(git_files) - sparse_paths)
    only_sparse = sorted(sparse_paths - set(git_files))

    def counts(report: Any) -> dict[str, int]:
        return {k: n for k, n in report.counts.items() if n}

    return {
        "git_audit_consistent": git_report.consistent,
        "git_audit_counts": counts(git_report),
        "sparse_audit_consistent": sparse_report.consistent,
        "sparse_audit_counts": counts(sparse_report),
        "git_files": len(git_files),
        "sparse_files": len(sparse_paths),
        "files_compared": len(set(git_files) & sparse_paths),
        "files_differ": len(differ),
        "only_in_git": len(only_git),
        "only_in_sparse": len(only_sparse),
        "examples": (differ + only_git + only_sparse)[:5],
        "verify_s": time.perf_counter() - start,
    }


# -- orchestration --------------------------------------------------------------------------------


def child(args: list[str], label: str) -> dict[str, Any]:
    """Run one phase in a fresh process (its stderr passes through); its JSON result."""
    result = run_phase(__file__, args, label)
    shown = {k: v for k, v in result.items() if k not in ("passes", "targets")}
    print(f"{label}: {result['phase_wall_s']:,.1f} s {json.dumps(shown)[:2000]}", file=sys.stderr, flush=True)
    return result


def run_s3(args: argparse.Namespace, folder: Path, base: list[str]) -> dict[str, Any]:
    """Phase 2 with moto's server in a process of its own and an empty public bucket on it."""
    from ledger.testing.s3 import S3Server

    s3 = S3Server()  # its port, bucket helper and URLs; the server itself runs in a child
    moto = Moto(s3.port, folder / "moto.log")
    try:
        s3.create_bucket(BUCKET)
        argv = [*base, "--endpoint", s3.endpoint_url, "--public", s3.public_url(BUCKET, PREFIX)]
        argv += ["--moto-pid", str(moto.pid), "--sample", str(args.sample)]
        argv += [] if args.s3_files is None else ["--crates", str(args.s3_files)]
        result = child(argv, "s3")
        result["server_peak_rss_mib"] = peak_rss_of(moto.pid)
    finally:
        moto.stop()
    shutil.rmtree(folder / "s3-shadow.git", ignore_errors=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "quick": args.quick,
        "phases": {},
    }
    phases = set(args.phase or PHASES)
    if phases & {"per-job", "scans"}:
        phases.add("folder")  # they work on the folder it fills
    ordered = [p for p in RUN_ORDER if p in phases]
    on_folder = [p for p in ordered if p in FOLDER_PHASES]
    with workdir("bench-sparse-") as folder:
        origin = folder / "origin"
        origin.mkdir()
        cdn: Cdn | None = None
        try:
            for phase in ordered:
                base = ["--child", phase, "--dir", str(folder)]
                if phase in FOLDER_PHASES:
                    if cdn is None:
                        cdn = Cdn(str(origin), folder / "cdn.log")
                    base += ["--url", cdn.url, "--invalidate", cdn.invalidate_url]
                    if phase == "folder":
                        base += ["--sample", str(args.sample)]
                        base += [] if args.crates is None else ["--crates", str(args.crates)]
                    elif phase == "per-job":
                        base += ["--jobs", str(args.jobs)]
                    else:
                        base += ["--changed", str(args.changed)]
                    results["phases"][phase] = child(base, phase)
                    if phase == on_folder[-1]:
                        results["cdn_folder"] = {
                            "cpu_s": process_cpu_s(cdn.pid),
                            "peak_rss_mib": peak_rss_of(cdn.pid),
                        }
                        cdn.stop()
                        cdn = None
                        for name in ("origin", "shadow.git", "scan-shadow.git"):
                            shutil.rmtree(folder / name, ignore_errors=True)
                elif phase == "s3":
                    results["phases"]["s3"] = run_s3(args, folder, base)
                else:
                    base[base.index("--dir") + 1] = str(folder / "both")
                    base += ["--max-batch", str(args.max_batch)]
                    base += [] if args.trace_limit is None else ["--trace-limit", str(args.trace_limit)]
                    results["phases"]["both"] = child(base, "both")
        finally:
            if cdn is not None:
                cdn.stop()
    return results


# -- the report -----------------------------------------------------------------------------------


WHOLE_INDEX_FILES = 138913 + 1
"""The baseline's crate files and ``config.json``: what a whole push writes."""


def s3_bound(r: dict[str, Any]) -> tuple[str, str]:
    """What bounds the bucket push, from the CPU each side spent per request: the ceiling each
    side alone would put on the rate (each is one interpreter, one CPU at most), and the two
    together on the machine's CPUs; the lowest names the bound."""
    cpus = os.cpu_count() or 1
    n = r["requests"]
    server_ms = r["server_cpu_s"] / n * 1000
    client_ms = r["push_cpu_s"] / n * 1000
    ceilings = {
        "the S3 server's CPU (moto: one interpreter, one CPU at most)": 1000 / server_ms,
        "this process's CPU (one interpreter)": 1000 / client_ms,
        f"the machine's {cpus} CPUs, server and uploader together": cpus * 1000 / (server_ms + client_ms),
    }
    bound = min(ceilings, key=lambda k: ceilings[k])
    detail = (
        f"CPU per PUT: {server_ms:.1f} ms in the server, {client_ms:.1f} ms in this process; "
        + ", ".join(f"{k.split(' (')[0]} alone {v:,.0f}/s" for k, v in ceilings.items())
        + f"; measured {r['requests_per_s']:,.0f}/s"
        + f" ({r['requests_per_s'] / ceilings[bound]:.0%} of the lowest)"
    )
    return bound, detail


def _load(r: dict[str, Any]) -> str:
    load = r.get("load_avg_1min")
    return f"{load['mean']:.1f} (max {load['max']:.1f})" if load else "n/a (phase under 10 s)"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _stages(stages: dict[str, float], *, ms: bool = False) -> str:
    """Stages by time spent, longest first (``ms``: the values are milliseconds already)."""
    seconds = {k: v / 1000 if ms else v for k, v in stages.items()}
    ordered = sorted(seconds.items(), key=lambda item: -item[1])
    return ", ".join(f"{k} {_duration(v)}" for k, v in ordered if v >= 0.0001) or "none measurable"


def _outer(stages: dict[str, float]) -> float:
    """The time of the stages that are not inside another one."""
    return sum(v for k, v in stages.items() if "(within" not in k)


def _read_back(rb: dict[str, Any]) -> str:
    verdict = "confirmed" if rb["confirmed"] else f"NOT confirmed ({rb['mismatched']} mismatched)"
    return f"{rb['files']:,} files in {rb['s']:.2f} s ({rb['files_per_s']:,.0f}/s): {verdict}"


def folder_rows(r: dict[str, Any]) -> list[list[str]]:
    files = r["crate_files"] + 1
    scope = "the whole index" if r["whole_index"] else f"{r['crate_files']:,} crate files only"
    share = r["push_cpu_s"] / r["push_s"]
    return [
        [
            "baseline rendered / `build_commit`",
            f"{r['render_s']:.1f} s / {r['build_s']:.1f} s: {r['crate_files']:,} crate files + config.json, "
            f"{r['versions']:,} versions, {r['mib']:,.0f} MiB",
        ],
        [
            f"`push` onto the empty folder ({scope})",
            f"{r['push_s']:.1f} s, {r['push_files_per_s']:,.0f} files/s "
            f"({r['push_status']}: {r['push_message']})",
        ],
        [
            "push: where the time goes",
            _stages(r["push_stages_s"]) + f"; other {r['push_s'] - _outer(r['push_stages_s']):.1f} s",
        ],
        [
            "push: bound by",
            f"this process's CPU: {r['push_cpu_s']:.1f} s of CPU in {r['push_s']:.1f} s ({share:.0%}), "
            f"{r['push_cpu_s'] / files * 1000:.2f} ms per file (temporary file, write, chmod, rename, stat)",
        ],
        ["`read_back` of a random sample through the CDN front", _read_back(r["read_back"])],
        ["peak memory", f"{r['peak_rss_mib']:,.0f} MiB"],
        ["load average (1 min)", _load(r)],
    ]


def s3_estimate(r: dict[str, Any]) -> float:
    return float(r["push_s"] * WHOLE_INDEX_FILES / (r["crate_files"] + 1))


def s3_rows(r: dict[str, Any]) -> list[list[str]]:
    files = r["crate_files"] + 1
    bound, detail = s3_bound(r)
    what = "the whole index" if r["whole_index"] else "the baseline's first crate files and config.json"
    rows = [
        ["files pushed", f"{files:,} ({what}), {r['mib']:,.0f} MiB"],
        [
            "`push` onto the empty bucket",
            f"{r['push_s']:.1f} s: {r['requests_per_s']:,.0f} PUT/s, {r['client_threads']} uploading threads "
            f"({r['push_status']})",
        ],
    ]
    if not r["whole_index"]:
        rows.append(
            [
                "the whole index (138,914 files): EXTRAPOLATED",
                f"{s3_estimate(r):,.0f} s ({r['push_s']:.1f} s measured on {files:,} files, scaled linearly)",
            ]
        )
    rows += [
        [
            "CPU during the push",
            f"S3 server {r['server_cpu_s']:.1f} s ({r['server_cpu_s'] / r['push_s']:.0%} of the wall time), "
            f"this process {r['push_cpu_s']:.1f} s ({r['push_cpu_s'] / r['push_s']:.0%})",
        ],
        ["bound by", f"{bound}: {detail}"],
        ["`read_back` of a random sample through the bucket's public URL", _read_back(r["read_back"])],
        [
            "peak memory (this process / S3 server)",
            f"{r['peak_rss_mib']:,.0f} / {r['server_peak_rss_mib']:,.0f} MiB",
        ],
        ["load average (1 min)", _load(r)],
    ]
    return rows


def per_job_rows(r: dict[str, Any]) -> list[list[str]]:
    t, p, rb, c = r["push_and_read_back"], r["push"], r["read_back"], r["commit"]
    return [
        [
            "push + read_back p50 / p90 / p99 / max",
            f"{t['p50_ms']:.1f} / {t['p90_ms']:.1f} / {t['p99_ms']:.1f} / {t['max_ms']:.1f} ms",
        ],
        ["push p50 / p99", f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} ms"],
        [
            "read_back p50 / p99 (the file and config.json, on a new connection)",
            f"{rb['p50_ms']:.1f} / {rb['p99_ms']:.1f} ms",
        ],
        ["commit p50 (before the push, not in the figures above)", f"{c['p50_ms']:.1f} ms"],
        ["push stages p50", _stages(r["push_stages_p50_ms"], ms=True)],
        [
            "survey state at the end",
            f"{r['survey_state_entries']:,} files' signatures; the shadow's state files: "
            + ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in r["state_files_bytes"].items()),
        ],
        ["CPU of this process per job", f"{r['cpu_per_job_ms']:.1f} ms (commit included)"],
        ["jobs not confirmed", str(r["unconfirmed"])],
        ["peak memory", f"{r['peak_rss_mib']:,.0f} MiB"],
        ["load average (1 min)", _load(r)],
    ]


def scan_rows(r: dict[str, Any]) -> list[list[str]]:
    f, i, u = r["first"], r["incremental"], r["unchanged"]
    return [
        [
            "first survey (fresh shadow: lists and reads everything)",
            f"{f['s']:.1f} s (CPU {f['cpu_s']:.1f} s): {f['files_read']:,} of {r['files']:,} files read",
        ],
        [
            f"after {r['changed_out_of_band']} files rewritten at the origin",
            f"{i['s']:.2f} s (CPU {i['cpu_s']:.2f} s): {i['files_read']:,} files read; the new commit "
            f"differs in {i['commit_differs_in']} files, {i['files_not_as_edited']} not as edited",
        ],
        [
            "nothing changed",
            f"{u['s']:.2f} s: {u['files_read']} files read, same commit: {u['same_commit']}",
        ],
        ["first survey: where the time goes", _stages(f["stages_s"])],
        ["incremental survey: where the time goes", _stages(i["stages_s"])],
        [
            "peak memory (after the first survey / at the end)",
            f"{r['peak_rss_first_survey_mib']:,.0f} / {r['peak_rss_mib']:,.0f} MiB",
        ],
        ["load average (1 min)", _load(r)],
    ]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items(), key=lambda i: -i[1]))


def both_rows(r: dict[str, Any]) -> list[list[str]]:
    v = r["verify"]
    refused = sum(r["refused"].values())
    rows = [
        [
            "recorded (before syncing)",
            f"{r['events']:,} events in {r['record_s']:.1f} s: {_counts(r['accepted'])}; "
            f"{refused:,} refused ({_counts(r['refused'])})",
        ],
        [
            "first pass to last confirmation, both targets",
            f"{r['sync_s']:.1f} s: {r['confirmed_versions_both']:,} versions confirmed on both, "
            f"{r['versions_per_s']:,.0f} versions/s",
        ],
    ]
    for name, t in r["targets"].items():
        chunks = [p["s"] for p in t["passes"]]
        spent = t["stages_s"]
        ledger_s = t["busy_s"] - t["views_catch_up_s"] - _outer(spent)
        rows.append(
            [
                f"{name}: its passes",
                f"{t['busy_s']:.1f} s (views catch-up {t['views_catch_up_s']:.1f} s; "
                f"CPU {t['cpu_s']:.1f} s): "
                f"{t['versions_per_busy_s']:,.0f} versions/s; {len(chunks)} passes "
                f"({', '.join(f'{s:.1f}' for s in chunks)} s), {t['commits']} commits; "
                f"{t['jobs']:,} jobs ({_counts(t['states'])})",
            ]
        )
        rows.append(
            [
                f"{name}: where its time goes",
                _stages(spent) + f"; the ledger's own work (views, reading versions, generating files, "
                f"recording events) {ledger_s:.1f} s; views catch-up {t['views_catch_up_s']:.1f} s",
            ]
        )
        if name == "sparse":
            up, down = t["files_uploaded"], t["files_read_back"]
            rows.append(
                [
                    f"sparse: files uploaded / read back through {r.get('front', 'the CDN front')}",
                    f"{up:,} in {spent.get('files written (within push)', 0):.1f} s / {down:,} in "
                    f"{spent.get('read_back', 0):.1f} s "
                    f"({down / spent['read_back'] if spent.get('read_back') else 0:,.0f} files/s, "
                    "up to 8 connections at once)",
                ]
            )
        if t["invalidations_failed"]:
            rows.append([f"{name}: pushes whose invalidation failed", str(t["invalidations_failed"])])
    busiest = max(r["targets"], key=lambda n: r["targets"][n]["busy_s"])
    rows.append(
        [
            "bound",
            f"each target synced by a process of its own, both at once on the 2 CPUs (with the git "
            f"server and {r.get('front', 'the CDN front')} beside them): the slower one, {busiest} "
            f"({r['targets'][busiest]['process_wall_s']:.1f} s in its process), sets the time",
        ]
    )
    rows += [
        [
            "audits",
            f"git consistent: {v['git_audit_consistent']} "
            f"({_counts(v['git_audit_counts']) or 'nothing out of sync'}); "
            f"sparse consistent: {v['sparse_audit_consistent']} "
            f"({_counts(v['sparse_audit_counts']) or 'nothing out of sync'})",
        ],
        [
            "every sparse file against the git file of the same path",
            f"{v['files_compared']:,} compared ({v['git_files']:,} files in git, "
            f"{v['sparse_files']:,} in the folder): {v['files_differ']} differ, "
            f"{v['only_in_git']} only in git, {v['only_in_sparse']} only in the folder",
        ],
        [
            f"peak memory (this process / {r.get('front', 'the CDN front')}); its CPU",
            f"{r['peak_rss_mib']:,.0f} / {r['cdn_peak_rss_mib']:,.0f} MiB; {r['cdn_cpu_s']:.1f} s",
        ],
        ["load average (1 min)", _load(r)],
    ]
    return rows


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def goal_rows(results: dict[str, Any]) -> list[list[str]]:
    phases = results["phases"]
    rows: list[list[str]] = []
    if "folder" in phases:
        r = phases["folder"]
        scope = "" if r["whole_index"] else f" ({r['crate_files']:,} crate files only)"
        rows.append(
            [
                f"whole index pushed onto an empty folder{scope}",
                "<= 60 s",
                f"{r['push_s']:.1f} s",
                met(r["push_s"] <= PUSH_GOAL_S),
            ]
        )
        rb = r["read_back"]
        rows.append(
            [
                f"read-back of {rb['files']:,} files of it through the CDN front",
                "confirms",
                "confirmed" if rb["confirmed"] else f"{rb['mismatched']} mismatched",
                met(rb["confirmed"]),
            ]
        )
    if "s3" in phases:
        r = phases["s3"]
        if r["whole_index"]:
            figure = f"{r['push_s']:.1f} s"
        else:
            figure = (
                f"~{s3_estimate(r):,.0f} s, EXTRAPOLATED from {r['crate_files'] + 1:,} files "
                f"in {r['push_s']:.1f} s"
            )
        bound, _ = s3_bound(r)
        rows.append(
            [
                "whole index pushed onto an empty bucket (moto)",
                "none: what bounds it",
                figure,
                f"bound by {bound}",
            ]
        )
    if "per-job" in phases:
        r = phases["per-job"]
        p50 = r["push_and_read_back"]["p50_ms"]
        rows.append(
            [
                f"per-job push + read_back p50 ({r['jobs']} jobs)",
                "<= 20 ms",
                f"{p50:.1f} ms",
                met(p50 <= PER_JOB_GOAL_MS),
            ]
        )
        rows.append(
            [
                "per-job read-backs confirm",
                "all",
                f"{r['jobs'] - r['unconfirmed']} of {r['jobs']}",
                met(r["unconfirmed"] == 0),
            ]
        )
    if "scans" in phases:
        r = phases["scans"]
        i, n = r["incremental"], r["changed_out_of_band"]
        ok = i["files_read"] == n and i["files_not_as_edited"] == 0 and i["commit_differs_in"] == n
        rows.append(
            [
                f"incremental survey reads only the {n} files changed",
                f"reads {n}",
                f"{i['files_read']:,} read",
                met(ok),
            ]
        )
    if "both" in phases:
        r = phases["both"]
        rate = r["versions_per_s"]
        scope = "" if r["whole_trace"] else f" ({r['events']:,} events only)"
        rows.append(
            [
                f"confirmed versions/s through both targets{scope}",
                ">= 1,000",
                f"{rate:,.0f}",
                met(rate >= THROUGHPUT_GOAL),
            ]
        )
        v = r["verify"]
        ok = v["git_audit_consistent"] and v["sparse_audit_consistent"]
        ok = ok and not (v["files_differ"] or v["only_in_git"] or v["only_in_sparse"])
        rows.append(
            ["audits consistent, sparse files equal git files", "yes", "yes" if ok else "no", met(ok)]
        )
    peaks = {name: r["peak_rss_mib"] for name, r in phases.items()}
    if peaks:
        worst = max(peaks, key=lambda n: peaks[n])
        rows.append(
            [
                "peak memory of a benchmark process",
                "< 1 GiB",
                f"{peaks[worst]:,.0f} MiB ({worst} phase)",
                met(peaks[worst] < MEMORY_GOAL_MIB),
            ]
        )
    return rows


def report(results: dict[str, Any]) -> str:
    phases = results["phases"]
    out = [
        "## Sparse index: a folder, an S3 bucket, per job, scans, and both targets at once",
        "",
        "```",
        results["command"],
        "```",
        "",
        f"Machine: {results['machine']}" + (" (--quick: small sizes)" if results["quick"] else ""),
        "",
        markdown_table(["goal", "wanted", "measured", "status"], goal_rows(results)),
    ]
    if "folder" in phases:
        out += ["", "Whole index onto an empty folder, then read back through the CDN front:", ""]
        out.append(markdown_table(["figure", "value"], folder_rows(phases["folder"])))
    if "s3" in phases:
        out += ["", "Onto an empty bucket of moto's S3 server (a process of its own, on 127.0.0.1):", ""]
        out.append(markdown_table(["figure", "value"], s3_rows(phases["s3"])))
    if "per-job" in phases:
        r = phases["per-job"]
        out += [
            "",
            f"Per job, on the folder holding the baseline, behind the CDN front: the first {r['jobs']} "
            "publishes of the trace, each crate's whole file rewritten; one commit, push and read-back each:",
            "",
            markdown_table(["figure", "value"], per_job_rows(r)),
        ]
    if "scans" in phases:
        out += ["", "Surveys of that folder from a fresh shadow:", ""]
        out.append(markdown_table(["figure", "value"], scan_rows(phases["scans"])))
    if "both" in phases:
        r = phases["both"]
        scope = "the whole trace" if r["whole_trace"] else f"the first {r['events']:,} events of the trace"
        out += [
            "",
            f"Both targets through the ledger (SQLite store; the index starts EMPTY, the baseline is not "
            f"imported): {scope} recorded, then each target synced by a process of its own, both at "
            f"once (max_batch={r['max_batch']:,}), until neither has a job open; the folder read back "
            f"through {r.get('front', 'the CDN front')}:",
            "",
            markdown_table(["figure", "value"], both_rows(r)),
        ]
    if "cdn_folder" in results:
        c = results["cdn_folder"]
        out += [
            "",
            f"The CDN front over the folder (a process of its own) used {c['cpu_s']:.1f} s of CPU "
            f"over the folder's phases, peak {c['peak_rss_mib']:,.0f} MiB.",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    parser.add_argument("--phase", action="append", choices=PHASES, help="repeatable (default: all)")
    parser.add_argument(
        "--crates", type=int, help="baseline crate files in the folder phases (default all; --quick 5,000)"
    )
    parser.add_argument(
        "--s3-files",
        type=int,
        help="baseline crate files pushed to the bucket, the whole index extrapolated from them "
        "(default 20,000; --quick 2,000)",
    )
    parser.add_argument("--jobs", type=int, help="per-job: trace publishes (default 500; --quick 50)")
    parser.add_argument("--sample", type=int, help="files read back after a whole push (default 1000)")
    parser.add_argument("--changed", type=int, help="scans: files changed at the origin (default 100)")
    parser.add_argument("--trace-limit", type=int, help="both: trace events (default all; --quick 5,000)")
    parser.add_argument("--max-batch", type=int, default=20000, help="both: jobs a commit (default 20000)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--child", choices=[*PHASES, "moto", "sync-target"], help=argparse.SUPPRESS)
    parser.add_argument("--git-url", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--invalidate", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--public", help=argparse.SUPPRESS)
    parser.add_argument("--moto-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {**FULL, "s3_files": S3_FILES_FULL}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    if args.child is not None:
        if args.child == "moto":
            return serve_moto(args.port)
        if args.child == "folder":
            result = phase_folder(args.dir, args.url, args.invalidate, args.crates, args.sample)
        elif args.child == "s3":
            result = phase_s3(args.dir, args.endpoint, args.public, args.moto_pid, args.crates, args.sample)
        elif args.child == "per-job":
            result = phase_per_job(args.dir, args.url, args.invalidate, args.jobs)
        elif args.child == "scans":
            result = phase_scans(args.dir, args.url, args.changed)
        elif args.child == "sync-target":
            result = sync_target(
                args.dir, args.git_url, args.url, args.invalidate, args.max_batch, args.target
            )
        else:
            result = phase_both(args.dir, args.trace_limit, args.max_batch)
        print(json.dumps(result))
        return 0

    results = run(args)
    text = report(results)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
