"""Run a following worker until killed: python tests/follow_worker.py STORE REMOTE INDEX_DIR NAME."""

from __future__ import annotations

import sys
from pathlib import Path

from ledger.bootstrap import open_ledger
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings


def main() -> None:
    store, remote, index_dir, name = sys.argv[1:5]
    settings = Settings(store=store, remote=remote, index_dir=Path(index_dir))
    with open_ledger(settings) as ledger:
        worker = SyncWorker(ledger, ledger.index(), options=WorkerOptions(lease_ttl=3.0), name=name)
        worker.follow(poll=0.1)


if __name__ == "__main__":
    main()
