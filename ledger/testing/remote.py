"""A real git remote on 127.0.0.1 that can play faults.

The ledger proves a push landed by reading the remote back: libgit2's push succeeds when the
server sends no per-ref status, and a lying server or a hook that moves the ref back fools the
push callbacks. Path and ``file://`` remotes skip server behaviour, so the faults are played
by real servers, bound to 127.0.0.1 only:

``http``
    A ``ThreadingHTTPServer`` that runs ``git http-backend`` as CGI, one request per
    connection (HTTP/1.0). Request bodies may be chunked and gzip-encoded.
``git``
    ``git daemon --enable=receive-pack`` on a private loopback port, behind a thin front on
    the public port that splices each connection through to it (or holds it, in HANG). The
    front sets TCP_NODELAY and TCP_QUICKACK: a pygit2 push of an empty-tree commit measured
    about 60 ms straight to a hook-less git daemon and under 20 ms through the front, hooks
    included, the difference being a delayed-ACK stall on loopback.

``base_dir`` holds ``index.git`` (the bare repository), ``mode`` (read by the HTTP handler,
the git front and the hooks on every request, connection and push), ``mode.applied`` (the
mode the listening side has put into effect), ``server.json`` (pid, URL and protocol of the
running server) and the logs of git daemon, git http-backend and the HTTP handler.

What pygit2 1.21.0 (libgit2 1.9.7) sees in each mode, measured by tests/test_remote_server.py
with a 1000 ms server timeout:

===========  =====  ==========================================================================
mode         over   the client sees / the remote holds afterwards
===========  =====  ==========================================================================
OK           both   push() returns, push_update_reference(ref, None); the new commit.
REJECT       both   push() returns, push_update_reference(ref, "pre-receive hook declined");
                    the hook's text ("index is read-only: maintenance") reaches only
                    sideband_progress, never the per-ref message; the old commit.
REFUSE       both   push() raises GitError "failed to connect to 127.0.0.1: Connection
                    refused" within milliseconds, no callback; the old commit.
HANG         both   push() raises GitError "could not read from socket: timed out" after the
                    server timeout (1.00 s), no callback; the old commit.
HTTP_500     http   push() raises GitError "unexpected http status code: 500", no callback.
NO_STATUS    http   push() returns normally and push_update_reference is never called; the
                    old commit. The answer is "unpack ok" and not a single per-ref line. (A
                    bare flush packet instead makes libgit2 raise "unpacking the sent packfile
                    failed on the remote", an empty body "could not read report from remote
                    repository"; git 2.39's own client says "remote failed to report status".)
LIE          http   push() returns, push_update_reference(ref, None), just as in OK; the old
                    commit (the pack is dropped unread).
ROLLBACK     both   push() returns, push_update_reference(ref, None); the old commit already
                    when push() returns, since libgit2 reads until receive-pack ends, after
                    post-receive (a post-receive slowed by 0.5 s slows push() by 0.5 s). A
                    branch's first push is rolled back by deleting the branch.
===========  =====  ==========================================================================

Only reading the remote back (``head()``) tells NO_STATUS, LIE and ROLLBACK from OK.

Outside pytest::

    python -m ledger.testing.remote serve --dir D [--protocol http|git] [--mode ok] [--port N]
    python -m ledger.testing.remote mode --dir D MODE

``serve`` prints the URL and serves until SIGTERM or SIGINT; ``mode`` switches a running
server and returns once the switch is in effect (exit 2 for a mode its protocol cannot play).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import gzip
import json
import os
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, cast
from urllib.parse import unquote

HOST = "127.0.0.1"
REPO_NAME = "index.git"
REJECT_MESSAGE = "index is read-only: maintenance"
POLL_SECONDS = 0.05

Protocol = Literal["http", "git"]

_MODE_FILE = "mode"
_APPLIED_FILE = "mode.applied"
_SERVER_FILE = "server.json"
_DAEMON_LOG = "daemon.log"
_BACKEND_LOG = "http-backend.log"
_SERVER_LOG = "http-server.log"
_START_TIMEOUT = 10.0
_FLUSH = b"0000"


class Mode(enum.StrEnum):
    """How the server answers the next connection or request."""

    OK = "ok"
    REJECT = "reject"
    REFUSE = "refuse"
    HANG = "hang"
    HTTP_500 = "http500"
    NO_STATUS = "no_status"
    LIE = "lie"
    ROLLBACK = "rollback"


SUPPORTED_MODES: dict[str, frozenset[Mode]] = {
    "http": frozenset(Mode),
    "git": frozenset({Mode.OK, Mode.REJECT, Mode.REFUSE, Mode.HANG, Mode.ROLLBACK}),
}


def _check_supported(protocol: str, mode: Mode) -> None:
    if protocol not in SUPPORTED_MODES:
        raise ValueError(f"unknown protocol {protocol!r}: use 'http' or 'git'")
    if mode not in SUPPORTED_MODES[protocol]:
        raise ValueError(f"a {protocol}:// server cannot play mode {mode.value!r}")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_mode(base_dir: Path) -> Mode:
    """The mode recorded in ``base_dir``; a missing or unknown value reads as OK."""
    text = _read_text(base_dir / _MODE_FILE)
    try:
        return Mode(text) if text else Mode.OK
    except ValueError:
        return Mode.OK


def _write_mode(base_dir: Path, mode: Mode) -> None:
    _write_atomically(base_dir / _MODE_FILE, f"{mode.value}\n")


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not on PATH")
    return git


@functools.cache
def _git_daemon() -> str:
    exec_path = subprocess.run(
        [_git(), "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    daemon = Path(exec_path) / "git-daemon"
    if not daemon.exists():
        raise RuntimeError(f"git-daemon is not in {exec_path}")
    return str(daemon)


def _git_env() -> dict[str, str]:
    """The environment of every git process the server starts: no user or system config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode("ascii") + data


def _pkt_lines(data: bytes) -> list[bytes]:
    """The pkt-lines at the start of ``data`` up to the first flush packet."""
    lines: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        try:
            size = int(data[pos : pos + 4], 16)
        except ValueError:
            break
        if size < 4:
            break
        lines.append(data[pos + 4 : pos + size])
        pos += size
    return lines


def _push_commands(body: bytes) -> tuple[list[bytes], set[bytes]]:
    """The refs a receive-pack request updates, and the capabilities the client asked for."""
    refs: list[bytes] = []
    caps: set[bytes] = set()
    for index, line in enumerate(_pkt_lines(body)):
        command, _, cap_text = line.rstrip(b"\n").partition(b"\0")
        if index == 0:
            caps = set(cap_text.split())
        parts = command.split(b" ")
        if len(parts) == 3:
            refs.append(parts[2])
    return refs, caps


def _report_status(lines: list[bytes], caps: set[bytes]) -> bytes:
    """A report-status made of ``lines``, side-band wrapped if the client asked for it."""
    report = b"".join(_pkt(line) for line in lines) + _FLUSH
    if b"side-band-64k" in caps:
        limit = 65515
    elif b"side-band" in caps:
        limit = 995
    else:
        return report
    packets = [_pkt(b"\x01" + report[i : i + limit]) for i in range(0, len(report), limit)]
    return b"".join(packets) + _FLUSH


def _fake_report(mode: Mode, body: bytes) -> bytes:
    """The answer to a receive-pack request whose pack is dropped on the floor.

    LIE says every ref was updated; NO_STATUS says the pack unpacked and nothing about any ref.
    """
    refs, caps = _push_commands(body)
    lines = [b"unpack ok\n"]
    if mode is Mode.LIE:
        lines += [b"ok " + ref + b"\n" for ref in refs]
    return _report_status(lines, caps)


# The hooks use the shell's builtins only: a fork of ``cat`` costs a push a few milliseconds.
_PRE_RECEIVE = """#!/bin/sh
while read -r _; do :; done
mode=
read -r mode 2>/dev/null < {mode_file}
if [ "$mode" = "{reject}" ]; then
    echo "{message}" >&2
    exit 1
fi
exit 0
"""

_POST_RECEIVE = """#!/bin/sh
mode=
read -r mode 2>/dev/null < {mode_file}
while read -r old new ref; do
    if [ "$mode" = "{rollback}" ]; then
        case "$old" in
            *[!0]*) git update-ref "$ref" "$old" "$new" ;;
            *) git update-ref -d "$ref" "$new" ;;
        esac
    fi
done
exit 0
"""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, remote: RemoteServer) -> None:
        self.remote = remote
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a handler's failure to ``http-server.log``; hang-ups and cuts are not failures."""
        error = sys.exc_info()[1]
        if error is None or isinstance(error, OSError):
            return
        with (
            contextlib.suppress(OSError),
            (self.remote.base_dir / _SERVER_LOG).open("a", encoding="utf-8") as log,
        ):
            log.write("".join(traceback.format_exception(error)))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    timeout = 60
    disable_nagle_algorithm = True

    @property
    def remote(self) -> RemoteServer:
        return cast(_HTTPServer, self.server).remote

    def setup(self) -> None:
        super().setup()
        self.remote._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.remote._untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        remote = self.remote
        mode = remote.mode
        if mode is Mode.HANG:
            remote._hold_while_hanging()
            self.close_connection = True
            return
        body = self._read_body()
        path, _, query = self.path.partition("?")
        if mode is Mode.HTTP_500:
            self._answer(500, "text/plain", b"internal server error\n")
        elif (
            mode in (Mode.NO_STATUS, Mode.LIE)
            and self.command == "POST"
            and path.endswith("/git-receive-pack")
        ):
            self._answer(200, "application/x-git-receive-pack-result", _fake_report(mode, body))
        else:
            self._run_backend(unquote(path), query, body)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length > 0 else b""
            if len(data) != length:
                raise ConnectionError("the request body ended early")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        return data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("the chunked request body ended early")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise ConnectionError("the chunked request body ended early")
            chunks.append(chunk)
            self.rfile.readline(65537)

    def _run_backend(self, path: str, query: str, body: bytes) -> None:
        remote = self.remote
        env = _git_env()
        env.update(
            GIT_PROJECT_ROOT=str(remote.base_dir),
            GIT_HTTP_EXPORT_ALL="1",
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_PROTOCOL=self.request_version,
            REQUEST_METHOD=self.command,
            PATH_INFO=path,
            QUERY_STRING=query,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_ADDR=str(self.client_address[0]),
        )
        git_protocol = self.headers.get("Git-Protocol")
        if git_protocol:
            env["HTTP_GIT_PROTOCOL"] = git_protocol
        with (remote.base_dir / _BACKEND_LOG).open("ab") as log:
            proc = subprocess.Popen(
                [_git(), "http-backend"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
            output, _ = proc.communicate(body)
        head, body_out = _split_cgi(output)
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        for raw in head.decode("latin-1").splitlines():
            name, sep, value = raw.partition(":")
            if not sep:
                continue
            if name.strip().lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value.strip()))
        self.send_response(status, reason or None)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body_out)))
        self.end_headers()
        self.wfile.write(body_out)


def _split_cgi(output: bytes) -> tuple[bytes, bytes]:
    """CGI output split into its header block and its body."""
    ends = [(output.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n")]
    found = [(at, sep) for at, sep in ends if at >= 0]
    if not found:
        return output, b""
    at, sep = min(found)
    return output[:at], output[at + len(sep) :]


class _Listener:
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


class _Pipe:
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
        self.on_closed: Callable[[_Pipe], None] = lambda pipe: None

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
        self._http: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._requests: set[socket.socket] = set()
        # git
        self._front: _Listener | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._daemon_port = 0
        self._pipes: set[_Pipe] = set()
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
        _check_supported(protocol, mode)
        base_dir = Path(base_dir).resolve()
        base_dir.mkdir(parents=True, exist_ok=True)
        if port == 0 and mode is Mode.REFUSE:
            port = _free_port()
        server = cls(base_dir, protocol=protocol, branch=branch, port=port)
        try:
            server._prepare_repository()
            _write_mode(base_dir, mode)
            if protocol == "git":
                server._start_daemon()
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
        _check_supported(self.protocol, mode)
        _write_mode(self.base_dir, mode)
        self._sync()

    def head(self) -> str | None:
        """The branch's commit id, read straight from the bare repository (None if unborn)."""
        result = subprocess.run(
            [
                _git(),
                f"--git-dir={self.bare_path}",
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{self.branch}^{{commit}}",
            ],
            capture_output=True,
            text=True,
            env=_git_env(),
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
        self._stop_daemon()
        record = self.base_dir / _SERVER_FILE
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

    # -- the repository -------------------------------------------------------------------

    def _prepare_repository(self) -> None:
        git, env = _git(), _git_env()
        if not (self.bare_path / "HEAD").exists():
            subprocess.run(
                [
                    git,
                    "init",
                    "--quiet",
                    "--bare",
                    f"--initial-branch={self.branch}",
                    "--",
                    str(self.bare_path),
                ],
                check=True,
                env=env,
            )
        settings = (
            ("http.receivepack", "true"),
            ("daemon.receivepack", "true"),
            # A push never starts a gc, so per-push cost stays flat over thousands of pushes.
            ("receive.autogc", "false"),
        )
        for key, value in settings:
            subprocess.run([git, f"--git-dir={self.bare_path}", "config", key, value], check=True, env=env)
        mode_file = shlex.quote(str(self.base_dir / _MODE_FILE))
        hooks = self.bare_path / "hooks"
        hooks.mkdir(exist_ok=True)
        scripts = {
            "pre-receive": _PRE_RECEIVE.format(
                mode_file=mode_file, reject=Mode.REJECT.value, message=REJECT_MESSAGE
            ),
            "post-receive": _POST_RECEIVE.format(mode_file=mode_file, rollback=Mode.ROLLBACK.value),
        }
        for name, text in scripts.items():
            hook = hooks / name
            hook.write_text(text, encoding="utf-8")
            hook.chmod(0o755)

    def _record(self) -> None:
        record = {
            "pid": os.getpid(),
            "url": self.url,
            "protocol": self.protocol,
            "branch": self.branch,
        }
        _write_atomically(self.base_dir / _SERVER_FILE, json.dumps(record) + "\n")

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
        applied = self.base_dir / _APPLIED_FILE
        if self._applied is not mode or _read_text(applied) != mode.value:
            _write_atomically(applied, f"{mode.value}\n")
            self._applied = mode

    def _hold_while_hanging(self) -> None:
        while self.mode is Mode.HANG and not self._stopping.wait(POLL_SECONDS):
            pass

    def _open_listener(self) -> None:
        if self.protocol == "http":
            if self._http is None:
                server = _HTTPServer(self.port, self)
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
            self._front = _Listener(self.port, self._on_git_connection)
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
        pipe = _Pipe(conn, upstream)
        pipe.on_closed = self._pipe_closed
        with self._conns_lock:
            self._pipes.add(pipe)
        pipe.start()

    def _pipe_closed(self, pipe: _Pipe) -> None:
        with self._conns_lock:
            self._pipes.discard(pipe)

    def _release_held(self) -> None:
        with self._conns_lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()

    def _start_daemon(self) -> None:
        """Start git daemon on a private port of its own; the front splices clients to it."""
        log_path = self.base_dir / _DAEMON_LOG
        for attempt in range(5):
            offset = log_path.stat().st_size if log_path.exists() else 0
            port = _free_port()
            with log_path.open("ab") as log:
                daemon = subprocess.Popen(
                    [
                        _git_daemon(),
                        "--reuseaddr",
                        f"--listen={HOST}",
                        f"--port={port}",
                        f"--base-path={self.base_dir}",
                        "--export-all",
                        "--enable=receive-pack",
                        "--informative-errors",
                        "--verbose",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=_git_env(),
                    start_new_session=True,
                )
            if self._daemon_ready(daemon, log_path, offset):
                self._daemon, self._daemon_port = daemon, port
                return
            if attempt == 4:
                text = log_path.read_bytes()[offset:].decode("utf-8", "replace").strip()
                raise RuntimeError(f"git daemon did not start: {text}")

    @staticmethod
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

    def _stop_daemon(self) -> None:
        """Kill the daemon's whole process group: the daemon, its children and their hooks."""
        daemon, self._daemon = self._daemon, None
        if daemon is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


# -- command line ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with RemoteServer.start(
        Path(args.dir),
        protocol=args.protocol,
        branch=args.branch,
        mode=Mode(args.mode),
        port=args.port,
    ) as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


def _server_alive(base_dir: Path) -> dict[str, object] | None:
    try:
        record = json.loads((base_dir / _SERVER_FILE).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cast(dict[str, object], record)


def _set_mode(args: argparse.Namespace) -> int:
    base_dir = Path(args.dir).resolve()
    mode = Mode(args.mode)
    record = _server_alive(base_dir)
    if record is not None:
        _check_supported(str(record["protocol"]), mode)
    with contextlib.suppress(FileNotFoundError):
        (base_dir / _APPLIED_FILE).unlink()
    _write_mode(base_dir, mode)
    if record is None:
        return 0
    deadline = time.monotonic() + args.wait
    while _read_text(base_dir / _APPLIED_FILE) != mode.value:
        if time.monotonic() > deadline:
            sys.stderr.write(f"the server did not switch to {mode.value} within {args.wait} s\n")
            return 1
        time.sleep(0.01)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.testing.remote",
        description="A git remote on 127.0.0.1 that can play faults.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until SIGTERM or SIGINT; prints the URL")
    serve.add_argument("--dir", required=True, help="holds index.git and the mode file")
    serve.add_argument("--protocol", choices=["http", "git"], default="http")
    serve.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.OK.value)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--branch", default="master")
    mode = commands.add_parser("mode", help="change the mode of a running server")
    mode.add_argument("--dir", required=True)
    mode.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the switch")
    mode.add_argument("mode", choices=[m.value for m in Mode])
    args = parser.parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _set_mode(args)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
