"""Repair benchmark on the real crates.io data: import, repair of lost lines, recovery from nothing.

For each store, against git:// remotes served by ``RemoteServer(protocol="git")`` on 127.0.0.1
(``python -m ledger.testing.remote serve``, each in a process of its own, as a remote would be),
and with every step below in a process of its own (so each reports its own peak memory):

1. **import**: the baseline (138,913 crate files rendered by ``ledger.adapters.realdata.baseline_files``,
   plus ``config.json``, built once with ``GitIndex.build_commit``) is served by remote A and
   adopted with ``import_index`` over git:// into an empty store: lines/s, peak memory.
2. **repair**: a first ``repair --remove-phantoms`` brings the ledger's empty clone up to date and
   removes the lines that repeat a version once build metadata is ignored (the ledger keeps the
   first line of each; a plain repair keeps the others);
   then ``--lost`` random lines (1,000 by default) are dropped from remote A with one force-push
   (``ledger.testing.tamper.force_push``), and ``repair --dry-run``, ``repair`` and a second
   ``repair`` (which must change nothing) are timed. The repaired tree must equal the tree
   before the lines were dropped.
3. **recovery**: ``repair`` against remote B, a new empty repository, from a new empty clone:
   the whole index written as one commit, pushed, read back and recorded. The tree must equal
   remote A's. With ``--libgit2-recovery`` it is measured a second time (remote C) with the
   push forced through libgit2, as before large pushes went through ``git push``.

Usage: .venv/bin/python scripts/bench_repair.py [--store sqlite|postgres|both|URL]...
       [--limit CRATES] [--lost N] [--seed N] [--libgit2-recovery] [--index-cache DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    run_child,
    stores_from_args,
    workdir,
)
from bench_views import BRANCH, RETRY_WAIT_S, baseline_index, copy_repo, retrying

GOALS = {
    "import_lines_per_s": 20_000.0,
    "import_peak_mib": 1024.0,
    "repair_s": 5.0,
    "recovery_s": 60.0,
}
TIMEOUT_MS = 15_000
STORE_ATTEMPTS = 3
"""Each store is measured from the start again when a step fails (another job on this machine
restarts PostgreSQL in its tests); a measurement is never stitched from two attempts."""


# -- the remotes ----------------------------------------------------------------------------------


@contextmanager
def serving(base: Path, seed_repo: Path | None = None) -> Iterator[GitRemote]:
    """A git:// server on ``base``, holding a copy of ``seed_repo`` (else an empty repository)."""
    if seed_repo is not None:
        copy_repo(seed_repo, base / "index.git")
    server = GitRemote(base)
    try:
        yield server
    finally:
        server.stop()


def head_tree(bare: Path) -> str | None:
    """The tree id of the branch's head in a bare repository."""
    found = subprocess.run(
        ["git", f"--git-dir={bare}", "rev-parse", "--verify", "--quiet", f"refs/heads/{BRANCH}^{{tree}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or None


# -- children -------------------------------------------------------------------------------------


def settings_for(url: str, remote: str, clone: Path) -> Any:
    from ledger.settings import Settings

    return Settings(store=url, remote=remote, branch=BRANCH, index_dir=clone, timeout_ms=TIMEOUT_MS)


def run_import(url: str, remote: str, clone: Path) -> dict[str, Any]:
    """``import_index`` of the served baseline into an empty store."""
    from ledger.bootstrap import open_ledger

    with open_ledger(settings_for(url, remote, clone)) as ledger:
        started, cpu = time.perf_counter(), time.process_time()
        result = ledger.import_index(remote)
        seconds = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
    return {
        "files": result.files,
        "lines": result.lines,
        "accepted": result.accepted,
        "refused": len(result.refused),
        "confirmed_jobs": result.confirmed_jobs,
        "events": result.events,
        "seconds": seconds,
        "cpu_seconds": cpu_s,
        "lines_per_s": result.lines / seconds,
        "lines_per_cpu_s": result.lines / cpu_s,
        "peak_rss_mib": peak_rss_mib(),
        "readers_peak_rss_mib": children_peak_rss_mib(),
    }


def children_peak_rss_mib() -> float:
    """The largest peak resident memory of this process's finished children (the import's readers)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_repairs(url: str, remote: str, bare: Path, clone: Path, lost: int, seed: int) -> dict[str, Any]:
    """First repair, then ``lost`` random lines dropped by a force-push, then dry run and repairs."""
    from ledger.bootstrap import open_ledger
    from ledger.testing.tamper import force_push

    out: dict[str, Any] = {}
    with open_ledger(settings_for(url, remote, clone)) as ledger:
        # The index's build-metadata twins (a second line for a version) are foreign: removed
        # only when asked, as an operator adopting this index would ask once.
        first, seconds = timed(lambda: ledger.repair(remove_phantoms=True))
        out["first_repair"] = {"seconds": seconds, "changed": first.changed, "confirmed": first.confirmed}
        tree = head_tree(bare)

        dropped = choose_lost_lines(bare, lost, seed)
        started = time.perf_counter()
        force_push(
            bare, BRANCH, {path: drop_lines(numbers) for path, numbers in dropped.items()}, "Lose lines"
        )
        out["force_push"] = {
            "lines": sum(len(n) for n in dropped.values()),
            "files": len(dropped),
            "seconds": time.perf_counter() - started,
        }

        dry, seconds = timed(lambda: ledger.repair(dry_run=True))
        out["dry_run"] = {"seconds": seconds, "changed": dry.changed}
        repaired, seconds = timed(ledger.repair)
        restored = sum(len(c.added) for c in repaired.changes)
        out["repair"] = {
            "seconds": seconds,
            "changed": repaired.changed,
            "versions_restored": restored,
            "confirmed": repaired.confirmed,
            "reported": repaired.reported,
            "tree_restored": head_tree(bare) == tree,
        }
        again, seconds = timed(ledger.repair)
        out["second_repair"] = {"seconds": seconds, "changed": again.changed}
        report, seconds = timed(ledger.audit)
        out["audit"] = {"seconds": seconds, "consistent": report.consistent, "counts": nonzero(report.counts)}
    out["tree"] = tree
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_recovery(url: str, remote: str, bare: Path, clone: Path, libgit2: bool) -> dict[str, Any]:
    """``repair`` onto an empty remote from an empty clone, with the time of each stage."""
    import ledger.adapters.git.index as git_index
    import ledger.services.repair as repair_module
    from ledger.bootstrap import open_ledger
    from projections.runner import ViewRunner

    stages: dict[str, float] = defaultdict(float)
    stage(git_index.GitIndex, "fetch", stages)
    stage(git_index.GitIndex, "build_commit", stages)
    stage(git_index.GitIndex, "push", stages)
    stage(git_index.GitIndex, "read_back", stages)
    stage(repair_module._Planner, "plan", stages)
    stage(ViewRunner, "catch_up", stages, "views")
    repair_module.save_remote_events = timed_function(repair_module.save_remote_events, stages, "record")

    out: dict[str, Any] = {"push": "libgit2" if libgit2 else "auto"}
    settings = settings_for(url, remote, clone)
    if libgit2:
        settings = dataclasses.replace(settings, push_with="libgit2")
    with open_ledger(settings) as ledger:
        ledger.views.catch_up()
        stages.clear()
        result, seconds = timed(ledger.repair)
        spent = dict(stages)
        out.update(
            seconds=seconds,
            changed=result.changed,
            confirmed=result.confirmed,
            reported=result.reported,
            stages_s={**spent, "other": seconds - sum(spent.values())},
            tree=head_tree(bare),
            peak_rss_repair_mib=peak_rss_mib(),
        )
        report, seconds = timed(ledger.audit)
        out["audit"] = {"seconds": seconds, "consistent": report.consistent, "counts": nonzero(report.counts)}
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def choose_lost_lines(bare: Path, count: int, seed: int) -> dict[str, list[int]]:
    """``count`` distinct random lines of the crate files at head: path -> line numbers (from 1)."""
    import pygit2

    repo = pygit2.Repository(str(bare))
    tree = repo.revparse_single(f"refs/heads/{BRANCH}").peel(pygit2.Commit).tree
    sizes: list[tuple[str, int]] = []

    def walk(node: Any, prefix: str) -> None:
        for entry in node:
            path = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                walk(entry, f"{path}/")
            elif path != "config.json":
                sizes.append((path, entry.data.count(b"\n")))

    walk(tree, "")
    total = sum(n for _, n in sizes)
    chosen = sorted(random.Random(seed).sample(range(total), count))
    found: dict[str, list[int]] = defaultdict(list)
    start, picks = 0, iter(chosen)
    pick = next(picks, None)
    for path, lines in sizes:
        while pick is not None and pick < start + lines:
            found[path].append(pick - start + 1)
            pick = next(picks, None)
        start += lines
    return dict(found)


def drop_lines(numbers: list[int]) -> Callable[[bytes | None], bytes | None]:
    def edit(data: bytes | None) -> bytes | None:
        assert data is not None
        lines = data.split(b"\n")[:-1]
        kept = [line for n, line in enumerate(lines, start=1) if n not in numbers]
        return b"".join(line + b"\n" for line in kept) if kept else None

    return edit


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def timed_function(fn: Callable[..., Any], stages: dict[str, float], name: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] += time.perf_counter() - started

    return wrapper


def stage(cls: type, method: str, stages: dict[str, float], name: str | None = None) -> None:
    """Add the time spent in ``cls.method`` to ``stages``."""
    setattr(cls, method, timed_function(getattr(cls, method), stages, name or method))


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# -- the parent ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def report(results: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for label, r in results:
        imported, repairs, recovery = r["import"], r["repairs"], r["recovery"]
        repaired = repairs["repair"]
        rows.append(
            [
                label,
                f"{imported['lines']:,} in {imported['seconds']:.1f} s",
                f"{imported['lines_per_s']:,.0f} "
                f"({verdict(imported['lines_per_s'] >= GOALS['import_lines_per_s'])})",
                f"{imported['peak_rss_mib']:,.0f} "
                f"({verdict(imported['peak_rss_mib'] < GOALS['import_peak_mib'])})",
                f"{repaired['seconds']:.2f} ({verdict(repaired['seconds'] <= GOALS['repair_s'])})",
                f"{repairs['dry_run']['seconds']:.2f}",
                f"{repairs['second_repair']['seconds']:.2f}",
                f"{recovery['seconds']:.1f} ({verdict(recovery['seconds'] <= GOALS['recovery_s'])})",
                f"{recovery['peak_rss_mib']:,.0f}",
            ]
        )
    headers = [
        "store",
        "import lines",
        "import lines/s",
        "import peak MiB",
        "repair s",
        "dry run s",
        "no-op repair s",
        "recovery s",
        "recovery peak MiB",
    ]
    table = markdown_table(headers, rows)
    stages = ["views", "fetch", "plan", "build_commit", "push", "read_back", "record", "other"]
    stage_rows = [
        [label, f"{r['recovery']['seconds']:.1f}"]
        + [f"{r['recovery']['stages_s'].get(s, 0.0):.1f}" for s in stages]
        for label, r in results
    ]
    recovery = markdown_table(["store", "recovery s", *(f"{s} s" for s in stages)], stage_rows)
    return f"{table}\n\nWhere the recovery's time went:\n\n{recovery}"


def child_main(args: argparse.Namespace) -> int:
    url, clone = args.store[0], Path(args.clone)
    if args.child == "import":
        result = run_import(url, args.remote, clone)
    elif args.child == "repairs":
        result = run_repairs(url, args.remote, Path(args.bare), clone, args.lost, args.seed)
    else:
        result = run_recovery(url, args.remote, Path(args.bare), clone, args.child == "recovery-libgit2")
    print(json.dumps(result))
    return 0


def measure_store(
    args: argparse.Namespace, url: str, folder: Path, base: Path, script: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with serving(folder / "remote-a", base) as a:
        common = [
            "--store",
            url,
            "--remote",
            a.url,
            "--bare",
            str(a.bare),
            "--clone",
            str(folder / "clone.git"),
        ]
        out["import"] = child(script, "import", common)
        out["repairs"] = child(
            script, "repairs", [*common, "--lost", str(args.lost), "--seed", str(args.seed)]
        )
    runs = [("recovery", "remote-b")] + ([("recovery-libgit2", "remote-c")] if args.libgit2_recovery else [])
    for name, remote in runs:
        with serving(folder / remote) as server:
            clone = folder / f"clone-{remote}.git"
            common = [
                "--store",
                url,
                "--remote",
                server.url,
                "--bare",
                str(server.bare),
                "--clone",
                str(clone),
            ]
            result = child(script, name, common)
            result["tree_equal"] = result["tree"] == out["repairs"]["tree"]
            out[name.replace("-", "_")] = result
    return out


def child(script: str, name: str, argv: list[str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    print(f"  {name} (load {load:.2f}) ...", file=sys.stderr, flush=True)
    result = run_child([script, "--child", name, *argv])
    result["load_before"] = load
    print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", action="append", help="sqlite, postgres, both (default) or a store URL; repeatable"
    )
    parser.add_argument("--limit", type=int, default=None, help="baseline crates (default all)")
    parser.add_argument("--lost", type=int, default=1000, help="lines dropped from the remote (default 1000)")
    parser.add_argument("--seed", type=int, default=20200220, help="random seed for the lines dropped")
    parser.add_argument(
        "--libgit2-recovery", action="store_true", help="also time the recovery with libgit2's push"
    )
    parser.add_argument("--index-cache", type=Path, help="keep the built baseline index here for reuse")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument(
        "--child",
        choices=["import", "repairs", "recovery", "recovery-libgit2"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    parser.add_argument("--clone", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    before_load = os.getloadavg()
    results: list[tuple[str, dict[str, Any]]] = []
    script = str(Path(__file__).resolve())
    with workdir("bench-repair-") as folder:
        base, built = baseline_index(folder, args.index_cache, args.limit)
        print(f"baseline index: {json.dumps(built)}", file=sys.stderr, flush=True)
        for store in stores_from_args(args.store, folder):
            print(f"measuring {store.label} ...", file=sys.stderr, flush=True)
            for attempt in range(1, STORE_ATTEMPTS + 1):
                store_folder = folder / f"{store.label.lower()}-{attempt}"
                store_folder.mkdir()
                try:
                    results.append((store.label, measure_store(args, store.url, store_folder, base, script)))
                    break
                except SystemExit as exc:  # a child failed: PostgreSQL restarted by another job?
                    if attempt == STORE_ATTEMPTS:
                        raise
                    print(f"{exc}; measuring {store.label} again from the start", file=sys.stderr, flush=True)
                finally:
                    retrying("drop schema", lambda: drop_pg_schema(store))  # noqa: B023
                    shutil.rmtree(store_folder, ignore_errors=True)
                    if store.url.startswith("sqlite:///"):
                        for suffix in ("", "-wal", "-shm"):
                            Path(store.url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
                time.sleep(RETRY_WAIT_S)
    after_load = os.getloadavg()
    print(f"Command: `{command_line()}`")
    print(
        f"Machine: {machine()}; load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in before_load)}, after: {', '.join(f'{x:.2f}' for x in after_load)}"
    )
    print()
    print(report(results))
    if args.json is not None:
        document = {"command": command_line(), "baseline_index": built, "results": dict(results)}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
