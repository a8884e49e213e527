"""Run one worker pass that kills its own process with SIGKILL at a chosen point.

Usage: python tests/crash_worker.py STORE REMOTE INDEX_DIR POINT, where POINT is
after_commit (commit written locally, nothing pushed), after_push (pushed, nothing recorded)
or after_readback (the remote was read back and holds the content; the confirmation and
completion, saved together in one transaction, were not).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ledger.adapters.git.index import GitIndex
from ledger.bootstrap import open_ledger
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings

METHODS = {"after_commit": "commit", "after_push": "push", "after_readback": "read_back"}


def kill_after(name: str) -> None:
    original = getattr(GitIndex, name)

    @functools.wraps(original)
    def wrapper(self: GitIndex, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if result is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(GitIndex, name, wrapper)


def main() -> None:
    store, remote, index_dir, point = sys.argv[1:5]
    kill_after(METHODS[point])
    settings = Settings(store=store, remote=remote, index_dir=Path(index_dir))
    with open_ledger(settings) as ledger:
        ledger.sync(WorkerOptions(lease_ttl=60.0))
    sys.exit("the worker was expected to die before finishing")


if __name__ == "__main__":
    main()
