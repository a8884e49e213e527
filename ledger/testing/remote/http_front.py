"""The http:// front: a threading HTTP server that runs ``git http-backend`` as CGI.

One request per connection (HTTP/1.0); request bodies may be chunked and gzip-encoded. HANG
holds the request, HTTP_500 answers 500, NO_STATUS and LIE answer a push with a fake report.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
import subprocess
import sys
import traceback
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import unquote

from ledger.testing.remote.git_tools import find_git, git_env
from ledger.testing.remote.loopback import HOST
from ledger.testing.remote.modes import Mode
from ledger.testing.remote.pktline import fake_report


class Served(Protocol):
    """What the HTTP front needs of the server behind it (``RemoteServer``)."""

    base_dir: Path

    @property
    def mode(self) -> Mode: ...
    def _track(self, conn: socket.socket) -> None: ...
    def _untrack(self, conn: socket.socket) -> None: ...
    def _hold_while_hanging(self) -> None: ...


_BACKEND_LOG = "http-backend.log"
_SERVER_LOG = "http-server.log"


class HTTPFront(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, remote: Served) -> None:
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
    def remote(self) -> Served:
        return cast(HTTPFront, self.server).remote

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
            self._answer(200, "application/x-git-receive-pack-result", fake_report(mode, body))
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
        env = git_env()
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
                [find_git(), "http-backend"],
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
