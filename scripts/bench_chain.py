"""What the hash chain costs: publish throughput with the chain recorded and with it switched off.

Both variants use the same recorder and the same single-publish path (one save per publish)
on fresh stores, in alternating rounds so that load on the machine affects both alike; the
figure is the ratio of their median throughputs.

    .venv/bin/python scripts/bench_chain.py --store both --publishes 1500 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Store,
    command_line,
    drop_pg_schema,
    machine,
    markdown_table,
    stores_from_args,
    workdir,
)

from ledger.adapters.realdata import index_line, trace
from ledger.adapters.stores.postgres import ChainedPostgresApplicationRecorder
from ledger.adapters.stores.sqlite import ChainedSQLiteApplicationRecorder
from ledger.bootstrap import connect, event_store_env
from ledger.services.publishing import PublicationLedger
from ledger.settings import StoreURL


class UnchainedSQLite(ChainedSQLiteApplicationRecorder):
    record_chain = False


class UnchainedPostgres(ChainedPostgresApplicationRecorder):
    record_chain = False


def throughput(store_url: str, lines: list[dict[str, object]], *, chained: bool) -> float:
    """Publishes per second through ``PublicationLedger.publish`` on a fresh store."""
    url = StoreURL.parse(store_url)
    connect(url).close()  # creates the PostgreSQL schema
    env = event_store_env(url)
    if not chained:  # the same recorder, with the chain switched off
        plain = UnchainedSQLite if url.kind == "sqlite" else UnchainedPostgres
        env["APPLICATION_RECORDER_TOPIC"] = f"__main__:{plain.__name__}"
    app = PublicationLedger(env=env)
    try:
        started = time.perf_counter()
        for line in lines:
            app.publish(line, "bench")
        return len(lines) / (time.perf_counter() - started)
    finally:
        app.close()


def fresh(store: Store, folder: Path) -> Store:
    """A new empty store of the same kind for one run, in ``folder`` when it is a SQLite file."""
    return stores_from_args(["sqlite" if store.label == "SQLite" else "postgresql"], folder)[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", action="append", help="sqlite, postgresql or both (default both)")
    parser.add_argument("--publishes", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seen: set[tuple[str, str]] = set()
    lines = []
    for event in trace():
        if event.event == "publish" and (event.crate, event.version) not in seen:
            seen.add((event.crate, event.version))
            lines.append(index_line(event.crate, event.version))
        if len(lines) >= args.publishes:
            break
    rows = []
    with workdir("ledger-bench-chain-") as folder:
        for store in stores_from_args(args.store, folder):
            results: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(args.rounds):
                for chained in (True, False) if round_ % 2 == 0 else (False, True):
                    target = folder / f"{store.label}-r{round_}-{int(chained)}"
                    target.mkdir()
                    run = fresh(store, target)
                    try:
                        results[chained].append(throughput(run.url, lines, chained=chained))
                    finally:
                        drop_pg_schema(run)
            with_chain = statistics.median(results[True])
            without = statistics.median(results[False])
            cost = (1 - with_chain / without) * 100
            rows.append(
                (
                    store.label,
                    f"{without:,.0f}",
                    f"{with_chain:,.0f}",
                    f"{cost:+.1f}%",
                    args.publishes,
                    args.rounds,
                )
            )
            drop_pg_schema(store)
    print(f"machine: {machine()}")
    print(f"command: {command_line()}")
    print(
        markdown_table(
            ["store", "plain publishes/s", "chained publishes/s", "chain cost", "publishes", "rounds"], rows
        )
    )


if __name__ == "__main__":
    main()
