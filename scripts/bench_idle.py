"""Idle CPU of a following worker: ``ledger worker`` with nothing to do, for a while.

For each store (a SQLite file, a PostgreSQL schema) and each way of waiting (woken by the store,
``--wakeup``; polling only, ``--no-wakeup``), a ``ledger worker`` process follows an empty log
against a git remote in a local folder for ``--seconds`` seconds; its CPU time (user + system,
from /proc) over that time is the figure. Goal: < 2 % of one core.

Usage: .venv/bin/python scripts/bench_idle.py [--store sqlite|postgresql|both] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, drop_pg_schema, machine, markdown_table, process_cpu_s, stores_from_args

GOAL_PERCENT = 2.0


def measure(store: str, remote: Path, clone: Path, seconds: float, extra: list[str]) -> dict[str, float]:
    argv = [
        sys.executable,
        "-m",
        "ledger",
        "--store",
        store,
        "--remote",
        str(remote),
        "--quiet",
        "worker",
        *extra,
    ]
    env = {**os.environ, "LEDGER_INDEX_DIR": str(clone)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(3.0)  # start-up (imports, first pass) is not idling
        start_cpu, start = process_cpu_s(proc.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = process_cpu_s(proc.pid) - start_cpu, time.monotonic() - start
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    if proc.returncode not in (0, -15):
        raise SystemExit(f"the worker failed ({proc.returncode}): {err.decode()[-500:]}")
    return {"cpu_s": used, "seconds": elapsed, "percent": 100.0 * used / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", help="sqlite, postgresql, both (default) or a URL")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        work = Path(tmp)
        remote = work / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        for store in stores_from_args(args.store, work):
            subprocess.run(
                [sys.executable, "-m", "ledger", "--store", store.url, "--quiet", "init"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            for label, extra in (
                ("woken by the store, --poll 1.0", ["--poll", "1.0"]),
                ("--no-wakeup --poll 1.0", ["--no-wakeup", "--poll", "1.0"]),
                ("--no-wakeup --poll 0.2", ["--no-wakeup", "--poll", "0.2"]),
            ):
                found = measure(store.url, remote, work / f"clone-{store.label}.git", args.seconds, extra)
                verdict = "met" if found["percent"] < GOAL_PERCENT else "missed"
                rows.append(
                    [
                        store.label,
                        label,
                        f"{found['cpu_s']:.2f}",
                        f"{found['seconds']:.1f}",
                        f"{found['percent']:.2f} % ({verdict}: < {GOAL_PERCENT:g} %)",
                    ]
                )
            drop_pg_schema(store)
    print(f"Command: `{command_line()}`")
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print()
    print(markdown_table(["store", "waiting", "CPU s", "over s", "of one core"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
