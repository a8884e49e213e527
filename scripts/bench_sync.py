"""Sync benchmark on the real crates.io data: the worker against a git:// remote holding the real index.

1. Seed: the whole baseline (138,913 crate files, rendered by
   ``ledger.adapters.realdata.baseline_files``) plus ``config.json`` is built with
   ``GitIndex.build_commit`` straight into the bare repository of a ``RemoteServer(protocol="git")``
   on 127.0.0.1, then adopted with ``import_index`` (each crate's
   job confirmed against the remote head in the transaction that records it).
2. Replay the 102-day trace (publish, yank and unyank, in order) through the ledger's publish path and
   the sync worker (``SyncWorker.run_once``) against the git:// remote:

   per-job  ``max_batch=1``: after each recorded event one pass (fetch, regenerate, commit, push,
            read back, record), over the first ``--sample`` events of the trace;
   batch    the whole trace recorded as fast as the publish path takes it, in order, while a worker
            in a process of its own follows the log with passes back to back, up to ``--max-batch``
            jobs a commit: jobs pile up while a push is in flight and the next commit carries them.
            Latency and throughput come from the queue view (each job's enqueue and completion
            times as the ledger recorded them).

   A refused event (a yank of an unknown version, an unyank of a version that is not yanked, a
   version already published, a colliding name) is counted and the replay goes on.
3. Verify: ``ledger.audit()`` is consistent, and every crate file the replay touched (plus a random
   sample of the others) in the server's bare repository equals ``crate_file(live_versions(...))``.

Every phase runs in a process of its own, so each reports its own peak memory; the git server runs
in a process of its own too (``python -m ledger.testing.remote serve``), as a remote would.

Usage: .venv/bin/python scripts/bench_sync.py [--store sqlite|postgres]
       [--mode per-job|batch|both|catch-up|all]... [--limit-trace N] [--limit-baseline N]
       [--sample N] [--max-batch N] [--publish-path single|batched] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PG_BASE,
    GitRemote,
    Store,
    command_line,
    connectivity_check_ms,
    drop_pg_schema,
    machine,
    markdown_table,
    peak_rss_mib,
    percentile,
    run_phase,
    summary_ms,
    workdir,
)

if TYPE_CHECKING:
    from ledger.adapters.git.index import GitIndex
    from ledger.adapters.realdata import TraceEvent
    from ledger.services.ledger import Ledger

ACTOR = "bench"
BRANCH = "master"
CONFIG = {"dl": "https://static.crates.io/crates", "api": "https://crates.io"}
PER_JOB_GOAL_MS = 100.0
THROUGHPUT_GOAL = 1000.0
WALL_GOAL_S = 180.0
MEMORY_GOAL_MIB = 1024.0
VERIFY_RANDOM = 2000
PROGRESS_EVERY_S = 30.0
LOAD_SAMPLE_S = 10.0


# -- seeding (children) ---------------------------------------------------------------------------


def seed_git(repo_dir: Path, limit: int | None) -> dict[str, Any]:
    """Build the baseline index as one commit in a new bare repository at ``repo_dir``."""
    import pygit2

    from ledger.adapters.git.index import GitIndex
    from ledger.adapters.realdata import ReadStats, baseline_files

    started = time.perf_counter()
    stats = ReadStats()
    rendered = 0.0
    count = 0

    def files() -> Iterator[tuple[str, bytes]]:
        nonlocal rendered, count
        source = baseline_files(limit, stats=stats)
        while True:
            start = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                break
            finally:
                rendered += time.perf_counter() - start
            count += 1
            yield item
        yield "config.json", (json.dumps(CONFIG, indent=2) + "\n").encode()

    pygit2.init_repository(str(repo_dir), bare=True, initial_head=BRANCH)
    with GitIndex.open(repo_dir, "git://127.0.0.1/unused", branch=BRANCH) as index:
        commit = index.build_commit(files(), "Baseline: crates.io index on 2024-04-29")
    repo = pygit2.Repository(str(repo_dir))
    repo.references.create(f"refs/heads/{BRANCH}", commit, force=True)
    pack_bytes = sum(p.stat().st_size for p in (repo_dir / "objects" / "pack").iterdir())
    wall = time.perf_counter() - started
    return {
        "crate_files": count,
        "versions": stats.yielded,
        "skipped_rows": stats.skipped,
        "commit": commit,
        "pack_mib": pack_bytes / 2**20,
        "render_s": rendered,
        "build_s": wall - rendered,
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
    }


def adopt(store: str, remote: str, clone: Path) -> dict[str, Any]:
    """``import_index`` of the served baseline into a new ledger, then the views caught up."""
    from ledger.bootstrap import open_ledger
    from ledger.services.importing import import_index

    with open_ledger(_settings(store, remote, clone)) as ledger:
        start = time.perf_counter()
        result = import_index(ledger, remote, clone_dir=clone)
        imported = time.perf_counter() - start
        position = ledger.views.catch_up()
        views = time.perf_counter() - start - imported
    return {
        "head": result.head,
        "files": result.files,
        "lines": result.lines,
        "accepted": result.accepted,
        "refused": len(result.refused),
        "confirmed_jobs": result.confirmed_jobs,
        "events": result.events,
        "position": position,
        "import_s": imported,
        "views_s": views,
        "peak_rss_mib": peak_rss_mib(),
    }


def _settings(store: str, remote: str, clone: Path) -> Any:
    from ledger.settings import Settings

    return Settings(
        store=store, remote=remote, branch=BRANCH, index_dir=clone, connect_timeout_ms=5000, timeout_ms=60000
    )


# -- replay helpers -------------------------------------------------------------------------------


class GitTimer:
    """Adds up the time the worker spends in each network or object-writing call of the index."""

    STAGES = ("fetch", "commit", "push", "read_back")

    def __init__(self, index: GitIndex) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        for stage in self.STAGES:
            setattr(index, stage, self._wrap(stage, getattr(index, stage)))

    def _wrap(self, stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start

        return timed

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: self.seconds[k] - before[k] for k in self.STAGES}


class Recorder:
    """Records trace events through the ledger's publish path; counts what it refuses."""

    def __init__(self, ledger: Ledger, pool: Sequence[str]) -> None:
        self.ledger = ledger
        self.pool = pool
        self.refused: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()

    def line(self, event: TraceEvent) -> dict[str, Any]:
        from ledger.adapters.realdata import index_line

        return index_line(event.crate, event.version, deps_pool=self.pool)

    def single(self, event: TraceEvent) -> Any:
        """One event through ``publish``/``yank``/``unyank``; the receipt, None when refused."""
        from ledger.domain.errors import LedgerError

        try:
            if event.event == "publish":
                receipt = self.ledger.publish(self.line(event), ACTOR)
            elif event.event == "yank":
                receipt = self.ledger.yank(event.crate, event.version, ACTOR)
            else:
                receipt = self.ledger.unyank(event.crate, event.version, ACTOR)
        except LedgerError as exc:
            self.refused[f"{event.event}: {type(exc).__name__}"] += 1
            return None
        self.accepted[event.event] += 1
        return receipt

    def window(self, events: Sequence[TraceEvent], path: str, pending: dict[str, list[float]]) -> None:
        """Record one window in order; ``pending`` gets each new job's receipt time per version.

        With the batched path, each run of consecutive publishes is one ``publish_many`` call
        (its receipt time is when that call returned); yanks and unyanks go one by one.
        """
        run: list[TraceEvent] = []
        for event in [*events, None]:
            if event is not None and event.event == "publish" and path == "batched":
                run.append(event)
                continue
            if run:
                jobs = self.many(run)
                now = time.perf_counter()
                for job, versions in jobs:
                    pending.setdefault(job, []).extend([now] * versions)
                run = []
            if event is None:
                return
            receipt = self.single(event)
            if receipt is not None:
                pending.setdefault(str(receipt.job), []).append(time.perf_counter())

    def many(self, events: Sequence[TraceEvent]) -> list[tuple[str, int]]:
        """Publishes through ``publish_many`` (one save); the new jobs with their version counts."""
        jobs: list[tuple[str, int]] = []

        def on_job(job: Any, lines: Sequence[Any]) -> None:
            jobs.append((str(job.id), len(lines)))

        bulk = self.ledger.publish_many(
            ((n, self.line(e)) for n, e in enumerate(events)), ACTOR, on_job=on_job
        )
        self.accepted["publish"] += bulk.accepted
        if bulk.present:
            self.refused["publish: AlreadyPublished"] += bulk.present
        for _, error in bulk.refused:
            self.refused[f"publish: {error.split(':')[0][:60]}"] += 1
        return jobs


def baseline_pool() -> list[str]:
    """The baseline's crate names in order: the dependency pool of the trace's index lines."""
    from ledger.adapters.realdata import baseline

    names: list[str] = []
    for crate, _ in baseline():
        if not names or names[-1] != crate:
            names.append(crate)
    return names


def windows(events: Sequence[TraceEvent]) -> Iterator[list[TraceEvent]]:
    """The trace cut into its 15-minute windows (events sharing ``unix_ts``), in order."""
    current: list[TraceEvent] = []
    for event in events:
        if current and event.unix_ts != current[0].unix_ts:
            yield current
            current = []
        current.append(event)
    if current:
        yield current


def open_job_ids(ledger: Ledger) -> set[str]:
    return {row[0] for row in ledger.db.query("SELECT job FROM view_jobs WHERE state = 'open'")}


def _without_repeats(data: bytes) -> bytes:
    """A baseline file without the lines that repeat an earlier version (build metadata ignored).

    The baseline holds 726 such lines in 266 crates; ``import_index`` keeps the first line of a
    version and refuses the others, so the database view regenerates those files without them.
    """
    from ledger.domain.versions import parse_version

    kept: list[bytes] = []
    seen: set[str] = set()
    for line in data.splitlines():
        key = parse_version(json.loads(line)["vers"]).key
        if key not in seen:
            seen.add(key)
            kept.append(line + b"\n")
    return b"".join(kept)


def verify(ledger: Ledger, bare: Path, touched: set[str], sample: int) -> dict[str, Any]:
    """The audit, and crate files in the server's repository against the database view."""
    import pygit2

    from ledger.domain.crate_files import crate_file
    from ledger.domain.names import index_path
    from projections.queries import crate_spelling, live_versions

    start = time.perf_counter()
    report = ledger.audit()
    audit_s = time.perf_counter() - start
    keys = sorted(touched)
    others = [row[0] for row in ledger.db.query("SELECT crate_key FROM view_index_files ORDER BY crate_key")]
    others = [k for k in others if k not in touched]
    keys += random.Random(20240429).sample(others, min(sample, len(others)))
    spelling = crate_spelling(ledger.db, keys)
    repo = pygit2.Repository(str(bare))
    head = repo.references[f"refs/heads/{BRANCH}"].target
    tree = repo[head].peel(pygit2.Commit).tree
    mismatched: list[str] = []
    checked = baseline_repeats = held_files = 0
    held = {
        row[0]
        for row in ledger.db.query(
            "SELECT crate_key FROM view_jobs WHERE state = 'open' AND last_error LIKE ?", ("foreign_lines:%",)
        )
    }
    for key in keys:
        name = spelling.get(key)
        if name is None:
            continue  # every event of this crate was refused: nothing of it belongs in the index
        path = index_path(name)
        try:
            entry = tree[path]
        except KeyError:
            entry = None
        actual = entry.data if isinstance(entry, pygit2.Blob) else None
        checked += 1
        expected = crate_file(live_versions(ledger.db, key))
        if actual == expected:
            continue
        if key not in touched and actual is not None and _without_repeats(actual) == expected:
            baseline_repeats += 1  # an untouched baseline file still holding the lines import refused
        elif key in held:
            held_files += 1  # not written: it holds lines the ledger has no record of
        else:
            mismatched.append(path)
    index_head = ledger.index().remote_head()
    probe = connectivity_check_ms(bare, BRANCH)
    return {
        "audit_consistent": report.consistent,
        "audit_counts": report.counts,
        "audit_s": audit_s,
        "files_checked": checked,
        "files_touched": len(touched),
        "files_equal_but_baseline_repeats": baseline_repeats,
        "files_held": held_files,
        "jobs_held": len(held),
        "files_mismatched": len(mismatched),
        "mismatched_examples": mismatched[:10],
        "remote_head": str(head),
        "remote_head_seen_by_worker": index_head,
        "verify_s": time.perf_counter() - start,
        "server_connectivity_check_ms": probe,
    }


# -- replays (children) ---------------------------------------------------------------------------


def replay_per_job(store: str, remote: str, clone: Path, bare: Path, sample: int) -> dict[str, Any]:
    """One pass per recorded event (max_batch=1) over the first ``sample`` events of the trace."""
    from ledger.adapters.realdata import trace
    from ledger.bootstrap import open_ledger
    from ledger.domain.names import collision_key
    from ledger.services.sync import SyncWorker, WorkerOptions

    pool = baseline_pool()
    events = list(trace(limit=sample))
    with open_ledger(_settings(store, remote, clone)) as ledger:
        ledger.views.catch_up()
        index = ledger.index()
        timer = GitTimer(index)
        worker = SyncWorker(ledger, index, options=WorkerOptions(max_batch=1, index_config=CONFIG))
        recorder = Recorder(ledger, pool)
        worker.run_once()  # warm up: opens the clone and the store's caches (no open jobs)
        record_s: list[float] = []
        pass_s: list[float] = []
        cpu_s: list[float] = []
        stages: dict[str, list[float]] = defaultdict(list)
        failed = 0
        touched: set[str] = set()
        started = time.perf_counter()
        for event in events:
            t0 = time.perf_counter()
            receipt = recorder.single(event)
            t1 = time.perf_counter()
            if receipt is None:
                continue
            touched.add(collision_key(event.crate))
            before = timer.snapshot()
            c1 = time.process_time()
            result = worker.run_once()
            t2 = time.perf_counter()
            cpu_s.append(time.process_time() - c1)
            failed += result.failed + (result.confirmed != 1)
            record_s.append(t1 - t0)
            pass_s.append(t2 - t1)
            spent = timer.since(before)
            for stage, seconds in spent.items():
                stages[stage].append(seconds)
            stages["ledger"].append((t2 - t1) - sum(spent.values()))
        wall = time.perf_counter() - started
        out: dict[str, Any] = {
            "events": len(events),
            "accepted": dict(recorder.accepted),
            "refused": dict(recorder.refused),
            "passes": len(pass_s),
            "passes_not_confirmed": failed,
            "wall_s": wall,
            "record": summary_ms(record_s),
            "pass": summary_ms(pass_s),
            "pass_cpu": summary_ms(cpu_s),
            "stages_p50_ms": {k: percentile(sorted(v), 0.5) * 1000 for k, v in stages.items()},
            "stages_mean_ms": {k: statistics.fmean(v) * 1000 for k, v in stages.items() if v},
        }
        out["verify"] = verify(ledger, bare, touched, VERIFY_RANDOM)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def follow(store: str, remote: str, clone: Path, max_batch: int, folder: Path) -> dict[str, Any]:
    """Batch mode's worker: passes back to back (``max_batch`` jobs a commit) until the publisher
    has finished and no job is left open, as ``ledger worker`` does with no pause between passes."""
    from ledger.bootstrap import open_ledger
    from ledger.services.sync import SyncWorker, WorkerOptions

    with open_ledger(_settings(store, remote, clone)) as ledger:
        index = ledger.index()
        timer = GitTimer(index)
        worker = SyncWorker(ledger, index, options=WorkerOptions(max_batch=max_batch, index_config=CONFIG))
        worker.run_once()  # warm up: opens the clone and the store's caches
        before = timer.snapshot()
        (folder / "worker.ready").touch()
        passes: list[tuple[float, float, int, int, int]] = []
        idle = 0
        started = time.perf_counter()
        while True:
            finished = (folder / "publisher.done").exists()
            t0, c0 = time.perf_counter(), time.process_time()
            result = worker.run_once()
            if result.jobs:
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                passes.append((wall, cpu, result.jobs, result.confirmed, len(result.commits)))
            else:
                idle += 1
                time.sleep(0.005)
            if finished and result.open_left == result.held:
                break  # done, but for jobs held on lines the ledger has no record of
        walls = [p[0] for p in passes]
        jobs = [float(p[2]) for p in passes]
        out: dict[str, Any] = {
            "passes": len(passes),
            "idle_passes": idle,
            "commits": sum(p[4] for p in passes),
            "worker_wall_s": time.perf_counter() - started,
            "busy_s": sum(walls),
            "cpu_s": sum(p[1] for p in passes),
            "pass": summary_ms(walls),
            "jobs_per_pass": {
                "p50": percentile(sorted(jobs), 0.5) if jobs else 0,
                "max": max(jobs, default=0),
                "mean": statistics.fmean(jobs) if jobs else 0,
            },
            "failed_passes": sum(1 for p in passes if p[3] < p[2]),
            "stages_s": timer.since(before),
            "peak_rss_mib": peak_rss_mib(),
        }
    return out


def replay_batch(
    store: str,
    remote: str,
    clone: Path,
    bare: Path,
    limit: int | None,
    max_batch: int,
    path: str,
    profile: Path | None = None,
) -> dict[str, Any]:
    """The trace recorded as fast as the publish path takes it, while a worker process follows.

    The worker (``follow``, a process of its own) takes whatever is open at each pass, up to
    ``max_batch`` jobs a commit, so jobs pile up while a push is in flight and the next commit
    carries them all. Latency and throughput come from the ledger's own record: each job's
    enqueue time and the time of its completion, as the queue view holds them.
    """
    from ledger.adapters.realdata import ReadStats, trace
    from ledger.bootstrap import open_ledger
    from ledger.domain.names import collision_key

    pool = baseline_pool()
    stats = ReadStats()
    events = list(trace(limit=limit, stats=stats))
    folder = clone.parent
    for flag in ("worker.ready", "publisher.done"):
        (folder / flag).unlink(missing_ok=True)
    with open_ledger(_settings(store, remote, clone)) as ledger:
        ledger.views.catch_up()
        start_position = ledger.views.head()
        argv = [sys.executable, __file__, "--child", "follow", "--store-url", store, "--remote", remote]
        argv += ["--clone", str(clone), "--max-batch", str(max_batch), "--dir", str(folder)]
        if profile is not None:
            argv += ["--profile", str(profile)]
        worker = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        while not (folder / "worker.ready").exists():
            if worker.poll() is not None:
                raise SystemExit("the following worker stopped before it was ready")
            time.sleep(0.05)
        recorder = Recorder(ledger, pool)
        pending: dict[str, list[float]] = {}
        started = time.perf_counter()
        # Replayed as fast as it is taken, the trace's windows do not matter: with the batched
        # path each run of publishes up to the next yank or unyank is one publish_many call.
        recorder.window(events, path, pending)
        recorded = time.perf_counter() - started
        (folder / "publisher.done").touch()
        output, _ = worker.communicate()
        if worker.returncode != 0:
            raise SystemExit(f"the following worker failed with exit code {worker.returncode}")
        wall = time.perf_counter() - started
        following: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        ledger.views.catch_up()
        rows = ledger.db.query(
            "SELECT versions, enqueued_at, updated_at, state FROM view_jobs WHERE enqueued_pos > ?",
            (start_position,),
        )
        done = [r for r in rows if r[3] == "completed"]
        versions = sum(len(json.loads(r[0])) for r in done)
        latencies = [float(r[2]) - float(r[1]) for r in done]
        first = min((float(r[1]) for r in rows), default=0.0)
        last = max((float(r[2]) for r in done), default=0.0)
        span = last - first
        out: dict[str, Any] = {
            "events": len(events),
            "whole_trace": limit is None,
            "publish_path": path,
            "max_batch": max_batch,
            "accepted": dict(recorder.accepted),
            "refused": dict(recorder.refused),
            "trace_rows_skipped": stats.skipped,
            "jobs": len(rows),
            "jobs_not_done": len(rows) - len(done),
            "confirmed_versions": versions,
            "record_s": recorded,
            "wall_s": wall,
            "first_enqueued_to_last_confirmed_s": span,
            "versions_per_s": versions / span if span > 0 else 0.0,
            "latency": summary_ms(latencies),
            "worker": following,
            "peak_rss_publisher_mib": peak_rss_mib(),
        }
        touched = {collision_key(e.crate) for e in events}
        out["verify"] = verify(ledger, bare, touched, VERIFY_RANDOM)
    out["peak_rss_mib"] = max(peak_rss_mib(), following["peak_rss_mib"])
    return out


def replay_catch_up(
    store: str, remote: str, clone: Path, bare: Path, limit: int | None, max_batch: int, path: str
) -> dict[str, Any]:
    """The whole trace recorded first (a backlog), then one pass working it off in chunks of max_batch."""
    from ledger.adapters.realdata import trace
    from ledger.bootstrap import open_ledger
    from ledger.domain.names import collision_key
    from ledger.services.sync import SyncWorker, WorkerOptions

    pool = baseline_pool()
    events = list(trace(limit=limit))
    with open_ledger(_settings(store, remote, clone)) as ledger:
        ledger.views.catch_up()
        index = ledger.index()
        timer = GitTimer(index)
        chunks: list[float] = []

        class TimedWorker(SyncWorker):
            def _sync_chunk(self, jobs: list[Any], result: Any) -> None:
                start = time.perf_counter()
                super()._sync_chunk(jobs, result)
                chunks.append(time.perf_counter() - start)

        worker = TimedWorker(ledger, index, options=WorkerOptions(max_batch=max_batch, index_config=CONFIG))
        recorder = Recorder(ledger, pool)
        worker.run_once()  # warm up: opens the clone and the store's caches (no open jobs)
        pending: dict[str, list[float]] = {}
        start = time.perf_counter()
        for window in windows(events):
            recorder.window(window, path, pending)
        recorded = time.perf_counter() - start
        versions = sum(len(t) for t in pending.values())
        before = timer.snapshot()
        start = time.perf_counter()
        cpu = time.process_time()
        result = worker.run_once()
        sync = time.perf_counter() - start
        cpu = time.process_time() - cpu
        spent = timer.since(before)
        out: dict[str, Any] = {
            "events": len(events),
            "publish_path": path,
            "max_batch": max_batch,
            "accepted": dict(recorder.accepted),
            "refused": dict(recorder.refused),
            "record_s": recorded,
            "jobs": result.jobs,
            "versions": versions,
            "confirmed_jobs": result.confirmed,
            "open_left": result.open_left,
            "chunks": summary_ms(chunks),
            "sync_s": sync,
            "sync_cpu_s": cpu,
            "versions_per_s_sync": versions / sync if sync else 0.0,
            "sync_stages_s": {**spent, "ledger": sync - sum(spent.values())},
            "peak_rss_replay_mib": peak_rss_mib(),
        }
        touched = {collision_key(e.crate) for e in events}
        out["verify"] = verify(ledger, bare, touched, VERIFY_RANDOM)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


# -- orchestration --------------------------------------------------------------------------------


def new_store(kind: str, folder: Path) -> Store:
    if kind == "sqlite":
        return Store("SQLite", f"sqlite:///{folder / 'ledger.db'}")
    schema = f"bench_sync_{uuid.uuid4().hex[:12]}"
    return Store("PostgreSQL", f"{PG_BASE}?schema={schema}", schema)


def child(args: list[str], label: str) -> dict[str, Any]:
    """Run one phase in a fresh process (its stderr passes through); its JSON result."""
    result = run_phase(__file__, args, label, load_every_s=LOAD_SAMPLE_S)
    shown = {k: v for k, v in result.items() if k != "pass_series_ms"}
    print(f"{label}: {result['phase_wall_s']:,.1f} s {json.dumps(shown)}", file=sys.stderr, flush=True)
    return result


def run_mode(
    mode: str, args: argparse.Namespace, folder: Path, template: Path, prepared: Path | None, keep: bool
) -> tuple[dict[str, Any], Path | None]:
    """A server, store and clone for one mode, seeded (or copied from an earlier seed), then the replay.

    With SQLite and ``keep``, the seeded folder is copied before the replay, so later modes start
    from the same seed without importing again; PostgreSQL imports into a fresh schema per mode.
    """
    here = folder / mode
    start = time.perf_counter()
    if prepared is not None:
        shutil.copytree(prepared, here)
    else:
        (here / "srv").mkdir(parents=True)
        shutil.copytree(template, here / "srv" / "index.git")
    copy_s = time.perf_counter() - start
    store = new_store(args.store, here)
    server = GitRemote(here / "srv")
    clone = here / "clone.git"
    snapshot: Path | None = None
    try:
        common = ["--store-url", store.url, "--remote", server.url, "--clone", str(clone)]
        if prepared is None:
            adopted = child(["--child", "adopt", *common], f"{mode}: import_index")
            if keep:
                snapshot = folder / "seeded"
                shutil.copytree(here, snapshot)
        else:
            adopted = {"copied_from": "the first mode's seed", "copy_s": copy_s}
        common += ["--bare", str(here / "srv" / "index.git")]
        if args.profile is not None:
            common += ["--profile", str(args.profile)]
        if mode == "per-job":
            common += ["--sample", str(args.sample)]
        else:
            common += ["--max-batch", str(args.max_batch), "--publish-path", args.publish_path]
            if args.limit_trace is not None:
                common += ["--limit-trace", str(args.limit_trace)]
        replay = child(["--child", mode, *common], f"{mode}: replay")
    finally:
        server.stop()
        drop_pg_schema(store)
    return {"store": store.label, "import": adopted, "replay": replay}, snapshot


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def _verified(v: dict[str, Any]) -> str:
    return (
        f"audit consistent: {v['audit_consistent']} "
        f"({', '.join(f'{k} {n}' for k, n in v['audit_counts'].items() if n) or 'nothing out of sync'}); "
        f"{v.get('jobs_held', 0)} jobs held; {v['files_checked']:,} crate files checked "
        f"({v['files_touched']:,} touched by the replay), {v['files_mismatched']} differ, "
        f"{v['files_equal_but_baseline_repeats']} equal but for baseline lines import refused, "
        f"{v.get('files_held', 0)} not written (their crate's jobs held on lines the ledger has no record of)"
    )


def _probe(v: dict[str, Any]) -> list[str]:
    return [
        "server's connectivity check alone (`git rev-list --objects head --not head~1`)",
        f"{v['server_connectivity_check_ms']:.0f} ms",
    ]


def _load(r: dict[str, Any]) -> str:
    load = r.get("load_avg_1min")
    return f"{load['mean']:.1f} (max {load['max']:.1f})" if load else "n/a"


def _seed_rows(results: dict[str, Any]) -> list[list[str]]:
    seed = results["seed_git"]
    rows = [
        [
            "baseline files rendered (`realdata.baseline_files`)",
            f"{seed['render_s']:.1f} s: {seed['crate_files']:,} crate files, {seed['versions']:,} versions",
        ],
        [
            "`GitIndex.build_commit` into the server's bare repository",
            f"{seed['build_s']:.1f} s: one pack of {seed['pack_mib']:.0f} MiB; "
            f"peak {seed['peak_rss_mib']:,.0f} MiB",
        ],
    ]
    if "seed_reused_from" in results:
        imp = results["seed_git"]["import"]
        rows.append(
            [
                "`import_index` over git:// (then views caught up), in the run that saved the seed",
                f"{imp['import_s']:.1f} s (+ {imp['views_s']:.1f} s): {imp['accepted']:,} versions, "
                f"{imp['refused']} lines refused, {imp['confirmed_jobs']:,} jobs confirmed, "
                f"{imp['events']:,} events; peak {imp['peak_rss_mib']:,.0f} MiB",
            ]
        )
    for mode, r in results["modes"].items():
        imp = r["import"]
        if "import_s" not in imp:
            rows.append([f"{mode}: seed", f"copied from the saved seed in {imp['copy_s']:.1f} s"])
            continue
        rows.append(
            [
                f"{mode}: `import_index` over git:// (then views caught up)",
                f"{imp['import_s']:.1f} s (+ {imp['views_s']:.1f} s): {imp['accepted']:,} versions, "
                f"{imp['refused']} lines refused, {imp['confirmed_jobs']:,} jobs confirmed, "
                f"{imp['events']:,} events; peak {imp['peak_rss_mib']:,.0f} MiB",
            ]
        )
    return rows


def _per_job_rows(r: dict[str, Any]) -> list[list[str]]:
    p = r["pass"]
    return [
        [
            "pass p50 (recorded -> confirmed)",
            f"{p['p50_ms']:.1f} ms ({met(p['p50_ms'] <= PER_JOB_GOAL_MS)}: <= {PER_JOB_GOAL_MS:g} ms)",
        ],
        ["pass p90 / p99 / max", f"{p['p90_ms']:.1f} / {p['p99_ms']:.1f} / {p['max_ms']:.1f} ms"],
        [
            "CPU time of the worker process per pass p50 / mean",
            f"{r['pass_cpu']['p50_ms']:.1f} / {r['pass_cpu']['mean_ms']:.1f} ms",
        ],
        ["stages p50 (ms)", ", ".join(f"{k} {v:.1f}" for k, v in r["stages_p50_ms"].items())],
        ["stages mean (ms)", ", ".join(f"{k} {v:.1f}" for k, v in r["stages_mean_ms"].items())],
        ["record (single path) p50 / p99", f"{r['record']['p50_ms']:.2f} / {r['record']['p99_ms']:.2f} ms"],
        ["passes that did not confirm their job", str(r["passes_not_confirmed"])],
        _probe(r["verify"]),
        ["verify", _verified(r["verify"])],
        ["peak memory (replay process)", f"{r['peak_rss_mib']:,.0f} MiB"],
        ["load average during the replay (1 min)", _load(r)],
    ]


def _batch_rows(r: dict[str, Any]) -> list[list[str]]:
    lat = r["latency"]
    rate = r["versions_per_s"]
    w = r["worker"]
    span = r["first_enqueued_to_last_confirmed_s"]
    return [
        [
            "versions confirmed",
            f"{r['confirmed_versions']:,} in {r['jobs'] - r['jobs_not_done']:,} jobs "
            f"({r['jobs_not_done']} jobs not done; {sum(r['refused'].values()):,} events refused)",
        ],
        [
            "first enqueue to last confirmation",
            f"{span:,.1f} s ({met(span < WALL_GOAL_S)}: whole trace < 180 s)"
            if r["whole_trace"]
            else f"{span:,.1f} s (part of the trace: the 180 s goal is for the whole)",
        ],
        ["confirmed versions/s", f"{rate:,.0f} ({met(rate >= THROUGHPUT_GOAL)}: >= 1,000)"],
        ["publisher: whole trace recorded in", f"{r['record_s']:,.1f} s ({r['publish_path']} path)"],
        [
            "publish -> confirmed p50 / p90 / p99 / max",
            f"{lat['p50_ms']:,.0f} / {lat['p90_ms']:,.0f} / {lat['p99_ms']:,.0f} / {lat['max_ms']:,.0f} ms",
        ],
        [
            "worker passes (commits); jobs per pass p50 / max",
            f"{w['passes']:,} ({w['commits']:,}); {w['jobs_per_pass']['p50']:,.0f} / "
            f"{w['jobs_per_pass']['max']:,.0f}",
        ],
        [
            "pass p50 / p99; worker busy / CPU",
            f"{w['pass']['p50_ms']:,.0f} / {w['pass']['p99_ms']:,.0f} ms; "
            f"{w['busy_s']:,.1f} / {w['cpu_s']:,.1f} s",
        ],
        [
            "worker git time by stage (s)",
            ", ".join(f"{k} {v:.1f}" for k, v in w["stages_s"].items())
            + f"; ledger {w['busy_s'] - sum(w['stages_s'].values()):.1f}",
        ],
        ["passes that left jobs unconfirmed", str(w["failed_passes"])],
        _probe(r["verify"]),
        [
            "peak memory (publisher / worker)",
            f"{r['peak_rss_publisher_mib']:,.0f} / {w['peak_rss_mib']:,.0f} MiB "
            f"({met(r['peak_rss_mib'] < MEMORY_GOAL_MIB)}: < 1 GiB)",
        ],
        ["verify", _verified(r["verify"])],
        ["load average during the replay (1 min)", _load(r)],
    ]


def _catch_up_rows(r: dict[str, Any]) -> list[list[str]]:
    chunks = r["chunks"]
    return [
        ["record the whole trace", f"{r['record_s']:,.1f} s"],
        [
            "one pass over the backlog",
            f"{r['sync_s']:,.1f} s: {r['jobs']:,} jobs ({r['versions']:,} versions) in {chunks['n']} chunks, "
            f"{r['open_left']} left open",
        ],
        ["confirmed versions/s (sync time)", f"{r['versions_per_s_sync']:,.0f}"],
        ["CPU time of the worker process during the pass", f"{r['sync_cpu_s']:,.1f} s"],
        ["chunk p50 / max", f"{chunks['p50_ms']:.0f} / {chunks['max_ms']:.0f} ms"],
        ["sync time by stage (s)", ", ".join(f"{k} {v:.1f}" for k, v in r["sync_stages_s"].items())],
        ["peak memory (replay process)", f"{r['peak_rss_mib']:,.0f} MiB"],
        ["verify", _verified(r["verify"])],
        ["load average during the replay (1 min)", _load(r)],
    ]


def report(results: dict[str, Any]) -> str:
    out = [
        f"Command: `{results['command']}`",
        f"Machine: {results['machine']}",
        "",
        "Seed:",
        "",
        markdown_table(["step", "figures"], _seed_rows(results)),
    ]
    modes = results["modes"]
    if "per-job" in modes:
        r = modes["per-job"]["replay"]
        out += [
            "",
            f"Per-job (max_batch=1): the first {r['events']:,} trace events, one pass after each "
            f"({r['passes']:,} passes, {sum(r['refused'].values())} events refused):",
            "",
            markdown_table(["figure", "value"], _per_job_rows(r)),
        ]
    if "batch" in modes:
        r = modes["batch"]["replay"]
        out += [
            "",
            f"Batch (max_batch={r['max_batch']}): {r['events']:,} trace events recorded as fast as the "
            f"{r['publish_path']} publish path takes them (with the batched path, each run of publishes "
            "up to the next yank or unyank in one call), while a worker process follows:",
            "",
            markdown_table(["figure", "value"], _batch_rows(r)),
        ]
    if "catch-up" in modes:
        r = modes["catch-up"]["replay"]
        out += [
            "",
            f"Catch-up (max_batch={r['max_batch']}): {r['events']:,} trace events recorded first "
            f"({r['publish_path']} path), then one pass:",
            "",
            markdown_table(["figure", "value"], _catch_up_rows(r)),
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "postgresql"], default="sqlite")
    parser.add_argument(
        "--mode",
        action="append",
        choices=["per-job", "batch", "both", "catch-up", "all"],
        help="both (the default): per-job then batch; catch-up: the trace recorded first, then one "
        "pass over the backlog; all: the three; repeatable",
    )
    parser.add_argument("--limit-trace", type=int, default=None, help="trace events to replay (default all)")
    parser.add_argument(
        "--limit-baseline",
        type=int,
        default=None,
        help="baseline crates to seed (default all; for quick runs)",
    )
    parser.add_argument("--sample", type=int, default=1000, help="trace events timed in per-job mode")
    parser.add_argument("--max-batch", type=int, default=1000, help="jobs per chunk in batch mode")
    parser.add_argument(
        "--publish-path",
        choices=["single", "batched"],
        default="single",
        help="batch and catch-up: publishes one by one through publish (single, the default) or each "
        "run of a window's publishes through publish_many (batched)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--profile", type=Path, help="write a cProfile of each replay into this folder")
    parser.add_argument(
        "--save-seed", type=Path, help="SQLite: also keep the seeded server, clone and store in this folder"
    )
    parser.add_argument(
        "--reuse-seed", type=Path, help="SQLite: start every mode from a folder --save-seed wrote"
    )
    parser.add_argument(
        "--child",
        choices=["seed-git", "adopt", "per-job", "batch", "catch-up", "follow"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--clone", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.store == "postgresql":
        args.store = "postgres"

    if args.child is not None:
        profile = None
        if args.profile is not None and args.child not in ("seed-git", "adopt"):
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        if args.child == "seed-git":
            result = seed_git(args.dir, args.limit_baseline)
        elif args.child == "adopt":
            result = adopt(args.store_url, args.remote, args.clone)
        elif args.child == "follow":
            result = follow(args.store_url, args.remote, args.clone, args.max_batch, args.dir)
        elif args.child == "per-job":
            result = replay_per_job(args.store_url, args.remote, args.clone, args.bare, args.sample)
        else:
            common = (args.store_url, args.remote, args.clone, args.bare, args.limit_trace, args.max_batch)
            if args.child == "batch":
                result = replay_batch(*common, args.publish_path, args.profile)
            else:
                result = replay_catch_up(*common, args.publish_path)
        if profile is not None:
            profile.disable()
            args.profile.mkdir(parents=True, exist_ok=True)
            profile.dump_stats(str(args.profile / f"{args.child}.prof"))
        print(json.dumps(result))
        return 0

    groups = {"both": ["per-job", "batch"], "all": ["per-job", "batch", "catch-up"]}
    modes = list(dict.fromkeys(m for given in args.mode or ["both"] for m in groups.get(given, [given])))
    results: dict[str, Any] = {"command": command_line(), "machine": machine(), "modes": {}}
    if args.store != "sqlite" and (args.save_seed or args.reuse_seed):
        raise SystemExit("--save-seed and --reuse-seed work with the SQLite store only")
    with workdir("bench-sync-") as folder:
        template = folder / "template.git"
        prepared: Path | None = None
        if args.reuse_seed is not None:
            prepared = args.reuse_seed / "seeded"
            results["seed_git"] = json.loads((args.reuse_seed / "seed.json").read_text())
            results["seed_reused_from"] = str(args.reuse_seed)
        else:
            seed = ["--child", "seed-git", "--dir", str(template)]
            if args.limit_baseline is not None:
                seed += ["--limit-baseline", str(args.limit_baseline)]
            results["seed_git"] = child(seed, "seed: build the baseline index")
        for number, mode in enumerate(modes):
            keep = prepared is None and (args.save_seed is not None or number < len(modes) - 1)
            keep = keep and args.store == "sqlite"
            results["modes"][mode], seeded = run_mode(mode, args, folder, template, prepared, keep)
            if seeded is not None and args.save_seed is not None:
                args.save_seed.mkdir(parents=True, exist_ok=True)
                shutil.copytree(seeded, args.save_seed / "seeded")
                imported = results["modes"][mode]["import"]
                (args.save_seed / "seed.json").write_text(
                    json.dumps({**results["seed_git"], "import": imported})
                )
            prepared = prepared or seeded
            shutil.rmtree(folder / mode, ignore_errors=True)
    text = report(results)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
