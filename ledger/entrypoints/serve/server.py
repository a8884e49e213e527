"""``ledger serve``: the registry's web API on waitress, and the index sync worker beside it.

waitress is a production WSGI server in pure Python (no C extension, no separate process
manager), threaded, with request size and timeout limits; the ledger's calls are synchronous
(SQLite, psycopg), so a threaded WSGI server fits them with no event loop between. Each serving
thread has a ledger of its own; with ``worker`` the index sync worker follows the log in
another thread, with its own ledger, and writes the served URLs into a new index's
``config.json``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from waitress.server import create_server

from ledger.entrypoints.serve.app import FRAMING_BYTES, METADATA_BYTES, RegistryApp
from ledger.entrypoints.serve.files import IndexFiles
from ledger.logs import log_step, warn_step
from ledger.services.index_config import ensure_config, registry_config
from ledger.services.ledger import Ledger
from ledger.services.sync import SyncWorker, WorkerOptions

LOOP_S = 0.25
"""How long the serving loop waits on its sockets before it looks whether to stop."""
WORKER_POLL_S = 0.2
"""How often the serving worker looks for new jobs when idle."""


@dataclass
class Served:
    """A running registry: its URL, its WSGI app and (when asked) its worker; ``stop()`` ends both."""

    url: str
    app: RegistryApp
    _server: object
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> None:
        """Serve until :meth:`stop` (from a signal handler or another thread)."""
        self._stop.wait()

    def stop(self) -> None:
        """Stop accepting, finish the requests under way, stop the worker, close the ledgers."""
        self._stop.set()
        with contextlib.suppress(OSError):  # the loop may have closed its trigger already
            self._server.pull_trigger()  # type: ignore[attr-defined]  # wakes the serving loop
        for thread in self._threads:
            thread.join(timeout=30)
        self.app.close()


def start(
    open_ledger: Callable[[], AbstractContextManager[Ledger]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_crate_bytes: int,
    worker: bool = False,
    threads: int = 8,
    public_url: str | None = None,
    index_files: IndexFiles | None = None,
) -> Served:
    """Start serving (port 0: any free port) in background threads; returns once listening."""
    app = RegistryApp(open_ledger, max_crate_bytes=max_crate_bytes, index_files=index_files)
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        # Twice the largest publish: bigger requests are refused by waitress itself (in plain
        # text) before they are read; up to it the app answers 413 in cargo's shape.
        max_request_body_size=2 * (max_crate_bytes + METADATA_BYTES + FRAMING_BYTES),
        ident="ledger",
        clear_untrusted_proxy_headers=True,
    )
    bound = server.effective_port
    url = public_url or f"http://{host}:{bound}"
    served = Served(url, app, server)
    serving = threading.Thread(target=_serve, args=(server, served._stop), name="ledger-serve", daemon=True)
    serving.start()
    served._threads.append(serving)
    if worker:
        try:
            with open_ledger() as ledger:
                targets = list(ledger.target_names)
                for core in ledger.each_target():
                    ensure_config(core, registry_config(url))
        except BaseException:
            served.stop()
            raise
        for target in targets:  # a worker per index target, each with its own ledger and lease
            following = threading.Thread(
                target=_follow,
                args=(open_ledger, url, served._stop, target),
                name=f"ledger-worker-{target}",
                daemon=True,
            )
            following.start()
            served._threads.append(following)
    log_step("serving", url=url, worker=worker, threads=threads)
    return served


def _serve(server: Any, stop: threading.Event) -> None:
    """waitress's loop, a round at a time until ``stop``; then everything closed in this thread
    (closing the server from another thread would pull its sockets from under the loop)."""
    try:
        while not stop.is_set():
            server.asyncore.loop(timeout=LOOP_S, map=server._map, use_poll=True, count=1)
    finally:
        server.task_dispatcher.shutdown()  # the requests under way finish first
        server.asyncore.close_all(server._map, ignore_all=True)


def _follow(
    open_ledger: Callable[[], AbstractContextManager[Ledger]], url: str, stop: threading.Event, target: str
) -> None:
    """The index sync worker of the server for one index target, until ``stop``."""
    try:
        with open_ledger() as opened:
            ledger = opened.on(target)
            options = WorkerOptions(index_config=registry_config(url))
            SyncWorker(ledger, ledger.index(), options=options).follow(poll=WORKER_POLL_S, stop=stop)
    except Exception as exc:
        warn_step("serve_worker_stopped", error=repr(exc))
        raise
