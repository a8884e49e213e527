"""The server's lifecycle: start, the mode followed on the listening side, the connections held, stop."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from ledger.testing.remote.git_front import Listener, Pipe, start_daemon, stop_daemon
from ledger.testing.remote.git_tools import find_git, git_env
from ledger.testing.remote.http_front import HTTPFront
from ledger.testing.remote.loopback import HOST, free_port
from ledger.testing.remote.modes import (
    APPLIED_FILE,
    POLL_SECONDS,
    Mode,
    Protocol,
    check_supported,
    read_mode,
    read_text,
    write_atomically,
    write_mode,
)
from ledger.testing.remote.repository import prepare_repository

REPO_NAME = "index.git"
SERVER_FILE = "server.json"


class RemoteServer:
    """A bare repository served over http:// or git:// on 127.0.0.1, playing a fault mode.

    The mode lives in ``base_dir / "mode"``: the HTTP handler, the git front and the hooks
    read it on every request, connection and push, and a watcher thread polls it every 50 ms
    to close or reopen the listening port, so another process can change it
    (``python -m ledger.testing.remote mode``).
    """

    def __init__(self, base_dir: Path, *, protocol: Protocol, branch: str, port: int) -> None:
        self.base_dir = base_dir
        self.protocol: Protocol = protocol
        self.branch = branch
        self.port = port
        self.bare_path = base_dir / REPO_NAME
        # _lock serialises mode switches and stop(); _conns_lock guards the connection sets,
        # which the accept thread touches while a switch under _lock may be joining it.
        self._lock = threading.RLock()
        self._conns_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._applied: Mode | None = None
        self._watcher: threading.Thread | None = None
        # http
        self._http: HTTPFront | None = None
        self._http_thread: threading.Thread | None = None
        self._requests: set[socket.socket] = set()
        # git
        self._front: Listener | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._daemon_port = 0
        self._pipes: set[Pipe] = set()
        self._held: list[socket.socket] = []

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        protocol: Protocol = "http",
        branch: str = "master",
        mode: Mode = Mode.OK,
        port: int = 0,
    ) -> RemoteServer:
        """Create the bare repository if missing, and serve it until stop()."""
        mode = Mode(mode)
        check_supported(protocol, mode)
        base_dir = Path(base_dir).resolve()
        base_dir.mkdir(parents=True, exist_ok=True)
        if port == 0 and mode is Mode.REFUSE:
            port = free_port()
        server = cls(base_dir, protocol=protocol, branch=branch, port=port)
        try:
            prepare_repository(base_dir, server.bare_path, branch)
            write_mode(base_dir, mode)
            if protocol == "git":
                server._daemon, server._daemon_port = start_daemon(base_dir)
            server._sync()
        except BaseException:
            server.stop()
            raise
        server._record()
        server._watcher = threading.Thread(target=server._watch, name="remote-mode-watcher", daemon=True)
        server._watcher.start()
        return server

    @property
    def url(self) -> str:
        return f"{self.protocol}://{HOST}:{self.port}/{REPO_NAME}"

    @property
    def mode(self) -> Mode:
        return read_mode(self.base_dir)

    def set_mode(self, mode: Mode) -> None:
        """Switch the mode; it takes effect for the next connection or request."""
        mode = Mode(mode)
        check_supported(self.protocol, mode)
        write_mode(self.base_dir, mode)
        self._sync()

    def head(self) -> str | None:
        """The branch's commit id, read straight from the bare repository (None if unborn)."""
        result = subprocess.run(
            [
                find_git(),
                f"--git-dir={self.bare_path}",
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{self.branch}^{{commit}}",
            ],
            capture_output=True,
            text=True,
            env=git_env(),
            check=False,
        )
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def stop(self) -> None:
        """Stop listening, cut every connection (held ones too) and kill the git daemon.

        Idempotent.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            self._close_listener()
            self._release_held()
        with self._conns_lock:
            pipes = list(self._pipes)
            for conn in self._requests:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for pipe in pipes:
            pipe.cut()
            for thread in pipe.threads:
                thread.join(timeout=5)
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            stop_daemon(daemon)
        record = self.base_dir / SERVER_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text(encoding="utf-8")).get("url") == self.url:
                record.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the record -----------------------------------------------------------------------

    def _record(self) -> None:
        record = {
            "pid": os.getpid(),
            "url": self.url,
            "protocol": self.protocol,
            "branch": self.branch,
        }
        write_atomically(self.base_dir / SERVER_FILE, json.dumps(record) + "\n")

    # -- following the mode ---------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            # A port taken by someone else meanwhile is tried again on the next poll.
            with contextlib.suppress(OSError):
                self._sync()

    def _sync(self) -> None:
        """Put the mode recorded on disk into effect on the listening side."""
        with self._lock:
            if self._stopped:
                return
            mode = self.mode
            if mode is Mode.REFUSE:
                self._close_listener()
            else:
                self._open_listener()
            if mode is not Mode.HANG:
                self._release_held()
            self._acknowledge(mode)

    def _acknowledge(self, mode: Mode) -> None:
        """Record the mode in effect, for ``mode`` commands waiting on the switch."""
        applied = self.base_dir / APPLIED_FILE
        if self._applied is not mode or read_text(applied) != mode.value:
            write_atomically(applied, f"{mode.value}\n")
            self._applied = mode

    def _hold_while_hanging(self) -> None:
        while self.mode is Mode.HANG and not self._stopping.wait(POLL_SECONDS):
            pass

    def _open_listener(self) -> None:
        if self.protocol == "http":
            if self._http is None:
                server = HTTPFront(self.port, self)
                self.port = int(server.server_address[1])
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": POLL_SECONDS},
                    name="remote-http",
                    daemon=True,
                )
                thread.start()
                self._http, self._http_thread = server, thread
        elif self._front is None:
            self._front = Listener(self.port, self._on_git_connection)
            self.port = self._front.port

    def _close_listener(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join()
            self._http, self._http_thread = None, None
        if self._front is not None:
            self._front.close()
            self._front = None

    # -- http -----------------------------------------------------------------------------

    def _track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._requests.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._requests.discard(conn)

    # -- git ------------------------------------------------------------------------------

    def _on_git_connection(self, conn: socket.socket) -> None:
        mode = self.mode
        if mode is Mode.HANG:
            with self._conns_lock:
                if not self._stopped:
                    self._held.append(conn)
                    return
        if mode is Mode.REFUSE or self._stopping.is_set():
            conn.close()
            return
        try:
            upstream = socket.create_connection((HOST, self._daemon_port), timeout=5)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        pipe = Pipe(conn, upstream)
        pipe.on_closed = self._pipe_closed
        with self._conns_lock:
            self._pipes.add(pipe)
        pipe.start()

    def _pipe_closed(self, pipe: Pipe) -> None:
        with self._conns_lock:
            self._pipes.discard(pipe)

    def _release_held(self) -> None:
        with self._conns_lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
