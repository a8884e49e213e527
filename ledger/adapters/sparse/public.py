"""The sparse index as cargo reads it: plain GETs of files under the public URL.

Each :meth:`PublicIndex.session` is a new connection (kept alive across the files of one
read-back, and opened again when the server closes it). Requests carry no ``Cache-Control`` and
nothing that busts a cache: what comes back is what cargo would be served, a stale CDN edge
included. Like cargo, the reader asks for gzip and follows redirects.

Failing to reach the server (refused, timed out, name not resolved, connection lost) raises
:class:`~ledger.domain.errors.RemoteUnavailable`; any answer, whatever its status, is a
:class:`Fetched` for the caller to judge.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import zlib
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urljoin, urlsplit

from ledger.adapters.git.push import strip_credentials
from ledger.domain.errors import Invalid, RemoteUnavailable

REDIRECTS = 5
"""Redirects followed for one file, as many as cargo's HTTP client follows by default at least."""

_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Fetched:
    """One answer: its status and body (decoded), and what was wrong with the body, if anything."""

    status: int
    body: bytes
    truncated: tuple[int, int | None] | None = None
    """Bytes received and bytes announced (None: not announced) when the body ended early."""
    problem: str | None = None
    """A body that could not be read (an undecodable encoding)."""


@dataclass(frozen=True)
class _Endpoint:
    """Where requests go: scheme, host, port, the path prefix, and Basic credentials if any."""

    scheme: str
    host: str
    port: int | None
    path: str
    authorization: str | None

    @classmethod
    def parse(cls, url: str, what: str) -> _Endpoint:
        shown = strip_credentials(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Invalid(f"{what} {shown!r} is malformed: {strip_credentials(str(exc))}", url=shown) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"{what} {shown!r} is not an http:// or https:// URL with a host", url=shown)
        if parts.fragment:
            raise Invalid(f"{what} {shown!r} has a fragment", url=shown)
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode()
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return cls(parts.scheme, parts.hostname, port, path, authorization)

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return self.scheme, self.host, self.port

    def connection(self, connect_timeout_s: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=connect_timeout_s)
        return http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout_s)


def check_url(url: str, what: str) -> None:
    """Raise :class:`~ledger.domain.errors.Invalid` unless ``url`` is an http(s) URL with a host."""
    _Endpoint.parse(url, what)


class PublicIndex:
    """The public URL of a sparse index (ending in ``/``), read as cargo reads it."""

    def __init__(self, url: str, *, connect_timeout_ms: int = 5000, timeout_ms: int = 15000) -> None:
        if url.startswith("sparse+"):
            url = url[len("sparse+") :]
        self._endpoint = _Endpoint.parse(url, "public URL")
        self.url = strip_credentials(url)
        if "?" in self._endpoint.path or not self._endpoint.path.endswith("/"):
            raise Invalid(f"public URL {self.url!r} must end in a slash and have no query", url=self.url)
        self._connect_s = connect_timeout_ms / 1000
        self._timeout_s = timeout_ms / 1000

    def path_of(self, path: str) -> str:
        """The URL path cargo requests for the index file ``path``."""
        return self._endpoint.path + quote(path)

    def session(self) -> Session:
        """A new connection, for the files of one read-back."""
        return Session(self._endpoint, self.url, self._connect_s, self._timeout_s)

    def post_json(self, url: str, document: object) -> str | None:
        """POST ``document`` as JSON to ``url`` on a new connection; None when the answer is 2xx,
        else what went wrong."""
        endpoint = _Endpoint.parse(url, "URL")
        shown = strip_credentials(url)
        with Session(endpoint, shown, self._connect_s, self._timeout_s) as session:
            try:
                status, body = session.post(endpoint.path, json.dumps(document).encode())
            except RemoteUnavailable as exc:
                return exc.message
        if 200 <= status < 300:
            return None
        return f"{shown} answered HTTP {status}: {body[:200].decode('utf-8', 'replace').strip()}"


class Session:
    """One connection to the public URL's server (and to where it redirects)."""

    def __init__(self, endpoint: _Endpoint, shown: str, connect_s: float, timeout_s: float) -> None:
        self._endpoint = endpoint
        self._shown = shown
        self._connect_s = connect_s
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str) -> Fetched:
        """GET the index file ``path``, following redirects."""
        endpoint, target = self._endpoint, self._endpoint.path + quote(path)
        for _ in range(REDIRECTS + 1):
            if endpoint is self._endpoint:
                response = self._request(f"read {path} from", "GET", target, None)
                fetched, location = self._read(path, response)
            else:
                with Session(endpoint, self._shown, self._connect_s, self._timeout_s) as other:
                    response = other._request(f"read {path} from", "GET", target, None)
                    fetched, location = other._read(path, response)
            if location is None:
                return fetched
            base = f"{endpoint.scheme}://{endpoint.host}" + (f":{endpoint.port}" if endpoint.port else "")
            resolved = urljoin(base + target, location)
            moved = _Endpoint.parse(resolved, "redirect")
            if moved.origin == self._endpoint.origin:
                endpoint, target = self._endpoint, moved.path
            else:
                endpoint, target = moved, moved.path
        return fetched

    def post(self, target: str, body: bytes) -> tuple[int, bytes]:
        response = self._request("POST to", "POST", target, body)
        try:
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._unavailable("POST to", exc) from exc

    def _request(self, action: str, method: str, target: str, body: bytes | None) -> http.client.HTTPResponse:
        headers = {
            "User-Agent": "ledger-read-back",
            "Accept-Encoding": "gzip",
            "cargo-protocol": "version=1",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._endpoint.authorization is not None:
            headers["Authorization"] = self._endpoint.authorization
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            try:
                conn = self._connection()
                conn.request(method, target, body=body, headers=headers)
                return conn.getresponse()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                self.close()
                if not reused or attempt == 2:
                    raise self._unavailable(action, exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unavailable(action, exc) from exc
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None or self._conn.sock is None:
            self.close()
            conn = self._endpoint.connection(self._connect_s)
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self._timeout_s)
            self._conn = conn
        return self._conn

    def _read(self, path: str, response: http.client.HTTPResponse) -> tuple[Fetched, str | None]:
        """The answer's :class:`Fetched`, and where it redirects to (None: nowhere)."""
        try:
            raw = response.read()
        except http.client.IncompleteRead as exc:
            self.close()
            partial = bytes(exc.partial)
            announced = None if exc.expected is None else len(partial) + exc.expected
            return Fetched(response.status, partial, truncated=(len(partial), announced)), None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._unavailable(f"read {path} from", exc) from exc
        if response.will_close:
            self.close()
        location = response.getheader("Location")
        if response.status in _REDIRECT_STATUSES and location:
            return Fetched(response.status, raw), location
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > len(raw):
            return Fetched(response.status, raw, truncated=(len(raw), int(length))), None
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        return _decoded(response.status, raw, encoding), None

    def _unavailable(self, action: str, exc: BaseException) -> RemoteUnavailable:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) and "timed out" not in reason:
            reason = f"timed out ({reason})"
        return RemoteUnavailable(
            f"cannot {action} {self._shown}: {strip_credentials(reason)}", remote=self._shown
        )


def _decoded(status: int, raw: bytes, encoding: str) -> Fetched:
    """The answer with its body decoded from ``encoding`` (gzip, or none)."""
    if encoding == "identity":
        return Fetched(status, raw)
    if encoding != "gzip":
        return Fetched(status, raw, problem=f"served with Content-Encoding {encoding}")
    try:
        return Fetched(status, gzip.decompress(raw))
    except (OSError, EOFError, zlib.error) as exc:
        return Fetched(status, raw, problem=f"gzip body cannot be decoded: {exc}")
