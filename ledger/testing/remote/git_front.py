"""The git:// front: git daemon on a private loopback port, and the listener spliced to it.

The front sets TCP_NODELAY and TCP_QUICKACK on both ends of every splice; which connections
it splices, refuses or holds is up to its ``on_accept`` callback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ledger.testing.remote.git_tools import find_git, git_env
from ledger.testing.remote.loopback import HOST, free_port
from ledger.testing.remote.modes import POLL_SECONDS

_DAEMON_LOG = "daemon.log"
_START_TIMEOUT = 10.0


class Listener:
    """A listening TCP socket on 127.0.0.1 whose connections a thread hands to ``on_accept``."""

    def __init__(self, port: int, on_accept: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((HOST, port))
            self.sock.listen(128)
            self.sock.settimeout(POLL_SECONDS)
        except OSError:
            self.sock.close()
            raise
        self.port = int(self.sock.getsockname()[1])
        self._on_accept = on_accept
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="remote-git-front", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._on_accept(conn)

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        self.sock.close()


class Pipe:
    """One client connection spliced to the git daemon, a thread per direction.

    Both sockets get TCP_NODELAY, and TCP_QUICKACK before every read: without them a push over
    loopback waits out a delayed ACK (about 40 ms) on every round trip.
    """

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self._lock = threading.Lock()
        self._open_directions = 2
        for sock in self.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
        ]
        self.on_closed: Callable[[Pipe], None] = lambda pipe: None

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                if _QUICKACK is not None:
                    source.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                self._open_directions -= 1
                last = self._open_directions == 0
            if last:
                for sock in self.sockets:
                    sock.close()
                self.on_closed(self)

    def cut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


@functools.cache
def _git_daemon() -> str:
    exec_path = subprocess.run(
        [find_git(), "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    daemon = Path(exec_path) / "git-daemon"
    if not daemon.exists():
        raise RuntimeError(f"git-daemon is not in {exec_path}")
    return str(daemon)


def start_daemon(base_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start git daemon on a private port of its own; the front splices clients to it."""
    log_path = base_dir / _DAEMON_LOG
    offset = 0
    for _ in range(5):
        offset = log_path.stat().st_size if log_path.exists() else 0
        port = free_port()
        with log_path.open("ab") as log:
            daemon = subprocess.Popen(
                [
                    _git_daemon(),
                    "--reuseaddr",
                    f"--listen={HOST}",
                    f"--port={port}",
                    f"--base-path={base_dir}",
                    "--export-all",
                    "--enable=receive-pack",
                    "--informative-errors",
                    "--verbose",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=git_env(),
                start_new_session=True,
            )
        if _daemon_ready(daemon, log_path, offset):
            return daemon, port
    text = log_path.read_bytes()[offset:].decode("utf-8", "replace").strip()
    raise RuntimeError(f"git daemon did not start: {text}")


def _daemon_ready(daemon: subprocess.Popen[bytes], log_path: Path, offset: int) -> bool:
    ready = f"[{daemon.pid}] Ready to rumble".encode()
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        with log_path.open("rb") as log:
            log.seek(offset)
            if ready in log.read():
                return True
        if daemon.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
            return False
        time.sleep(0.005)


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    """Kill the daemon's whole process group: the daemon, its children and their hooks."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGTERM)
    try:
        daemon.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
