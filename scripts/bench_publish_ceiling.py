"""What validating the lines costs the batched publish, on the real crates.io data (SQLite).

The first ``--limit`` baseline versions through ``publish_many`` twice, each on a fresh SQLite
store: once as JSON objects (every line validated by ``parse_line`` inside the call, as
``scripts/bench_publish.py`` measures it) and once as ``CheckedLine`` values parsed before the
clock starts (the call does not parse them again). The second figure is what the rest of the
batched path (the events, the hash chain, the inserts) allows on this machine.

Usage: .venv/bin/python scripts/bench_publish_ceiling.py [--limit N] [--runs N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, machine, markdown_table
from bench_publish import baseline_lines


def measure(lines: list[tuple[int, Any]]) -> dict[str, float]:
    from ledger.bootstrap import open_ledger
    from ledger.settings import Settings

    with (
        tempfile.TemporaryDirectory() as folder,
        open_ledger(Settings(store=f"sqlite:///{folder}/l.db")) as ledger,
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        result = ledger.publish_many(lines, "bench")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"versions": result.accepted, "events": result.events, "wall_s": wall, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200_000, help="baseline versions (default 200,000)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each way (default 2)")
    args = parser.parse_args()

    from ledger.domain.index_format import parse_line
    from ledger.services.publishing_terms import CheckedLine

    objects = list(baseline_lines(args.limit, []))
    checked = [(number, CheckedLine.of(parse_line(line))) for number, line in objects]
    rows = []
    for run in range(1, args.runs + 1):
        for way, lines in (("JSON objects, validated in the call", objects), ("checked beforehand", checked)):
            m = measure(lines)
            print(f"run {run}, {way}: {m}", file=sys.stderr, flush=True)
            rows.append(
                [
                    str(run),
                    way,
                    f"{m['versions']:,}",
                    f"{m['events']:,}",
                    f"{m['wall_s']:.2f}",
                    f"{m['events'] / m['wall_s']:,.0f}",
                    f"{m['events'] / m['cpu_s']:,.0f}",
                ]
            )
    print(f"Command: `{command_line()}`")
    print(f"Machine: {machine()}")
    print()
    header = ["run", "lines", "versions", "events", "wall s", "events/s", "events per CPU s"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
