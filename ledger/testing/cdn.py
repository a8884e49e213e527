"""A CDN edge in front of a sparse cargo index, on 127.0.0.1, that can misbehave as CDNs do.

crates.io serves its sparse index (``index.crates.io``) as plain files in S3 behind CloudFront
and Fastly: a publish writes the crate's file to the bucket, then asks the CDNs to invalidate
that path. Until the invalidation has taken effect the edges keep serving the copy they hold,
so for a while after a publish the public URL serves the old file while the bucket holds the
new one; an invalidation that is slow, fails or is lost stretches that window. The ledger
confirms a push by GETting the file through the public URL exactly as cargo does, and must
never confirm while that URL serves the wrong content. ``CdnFront`` plays the edge, so that
can be shown against real HTTP.

The edge
--------

``CdnFront(origin)`` is a ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) on a free port.
``origin`` is a folder (the file at ``origin/<path>``) or an HTTP base URL ending in ``/``,
such as an S3 path-style bucket URL ``http://127.0.0.1:PORT/bucket/prefix/``, fetched with
``origin_headers`` (origin 404 -> 404; any other status but 200 is passed on and no answer is
502, neither cached). A CDN signs its requests to a private bucket; moto's S3 server takes any
``Authorization`` header, so ``origin_headers={"Authorization": UNSIGNED_S3_AUTHORIZATION}``
stands in for the signature (without it, moto answers 403). ``url`` is the public base
(``http://127.0.0.1:PORT/index/``); paths outside the prefix answer 404, a ``.`` or ``..``
segment (also percent-encoded) 400. The query string is not part of the cache key, as in a
CDN's default cache policy: a cache-busting query does not get past the edge.

Every path's answer (a 200 body or a 404) is cached when first served. A cached copy younger
than ``ttl`` seconds (default 0) and not invalidated is served without asking the origin;
otherwise the GET revalidates with the origin, so with the default ``ttl=0`` and no fault
every GET is fresh. Answers carry ``Content-Length`` (also on HEAD and 304, the length of the
body a GET would get), ``Content-Type`` (``application/json`` for ``config.json``, else
``text/plain``), ``X-Cache`` (``Hit`` when the origin was not asked, else ``Miss``) and, on a
200, ``ETag`` (the quoted sha256 of the body), ``Last-Modified`` (the origin's), ``Age`` and
``Cache-Control``. ``If-None-Match`` matching the ETag, or without it ``If-Modified-Since`` not
older than ``Last-Modified``, answers 304: cargo's sparse fetches send one or the other.

``POST /_invalidate`` with ``{"paths": [...]}`` (public paths like ``/index/se/rd/serde``,
or paths relative to the index; a trailing ``*`` matches every path it begins) marks those
copies invalidated, so their next GET revalidates, and answers 200 ``{"invalidated": N}``, N
the number of paths accepted (bad JSON or a traversing path -> 400). ``POST /_fault`` with
``{"kind": ..., "paths": ..., "seconds": ..., "times": ...}`` and ``POST /_heal`` do what
``fault()`` and ``heal()`` do, for another process (``python -m ledger.testing.cdn``).

The faults
----------

``fault(kind, paths=None, seconds=None, times=None)`` adds a fault, ``heal()`` clears them
all and releases hung requests (several may be in force at once). ``paths`` limits a fault
to some paths (public or relative); None means every path but ``config.json``, which is only
hit when named. ``times`` limits it to the next N matching GET or HEAD requests (for
``ignore_invalidation``: the next N invalidation requests it swallows), after which it is gone.

``stale``
    A slow invalidation, the known failure: once a path is cached, its cached copy is served
    for ``seconds`` (default 5) after it was cached, whatever the origin holds and whatever is
    invalidated meanwhile; then the next GET revalidates and caches the origin's copy, which
    in turn is kept for ``seconds``. A stale file turns fresh by itself.
``ignore_invalidation``
    An invalidation that is accepted but never carried out (a failed or lost CloudFront
    invalidation, a Fastly purge sent to the wrong service): while the fault is in force,
    cached copies never expire and ``/_invalidate`` answers 200 as usual but marks nothing.
    After ``heal()`` copies expire by ``ttl`` again; the swallowed invalidations stay undone.
``missing_new``
    A negatively cached new file: an edge that cached the 404 of a crate's file before it
    was published (CloudFront caches error answers, 10 s by default; S3 answers a missing
    key with 403 or 404) keeps answering 404 after the file appears. A path whose origin file
    is new to the edge (never cached, or cached as 404) is answered 404 and cached as 404;
    paths the edge already holds as 200 are served as usual.
``unavailable``
    An overloaded edge or origin (S3's ``503 Slow Down``, a CDN's capacity errors): 503 with
    ``Retry-After: 1`` and a one-line body; nothing is cached or read from the origin.
``truncated``
    A connection cut mid-body by the edge: the headers announce the full ``Content-Length``,
    then half the body is sent and the connection is closed (``http.client`` raises
    ``IncompleteRead``).
``wrong_crate``
    An edge serving another object's bytes under this path (a cache-key collision, a
    misconfigured origin path): 200 with the body of another crate's file (another cached
    copy, else another file of a folder origin) or, when there is none, a valid-looking index
    line of a crate named ``not-<name>``; ``config.json`` gets another registry's config.
    The served body is not cached; its ETag is its own and its Last-Modified is now, so no
    conditional GET gets a 304 for it.
``hang``
    An edge that accepts the request and never answers (an origin read timeout in the
    making): no answer for ``seconds`` (None: until ``heal()`` or ``stop()``), then the
    connection is closed without one.

``requests`` lists ``(method, path, status)`` of every request answered (status 0 for a hung
one), ``origin_reads`` counts the origin fetches. Outside pytest::

    python -m ledger.testing.cdn --origin DIR_OR_URL [--port 0] [--prefix /index/] \\
        [--ttl S] [--fault KIND[:SECONDS]]... [--origin-header "NAME: VALUE"]...

prints ``{"url": ..., "invalidate_url": ...}`` on one line and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import http.client
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, cast
from urllib.parse import quote, unquote, urlsplit

from ledger.testing.remote.loopback import HOST

Fault = Literal[
    "stale", "ignore_invalidation", "missing_new", "unavailable", "truncated", "wrong_crate", "hang"
]
FAULTS: tuple[Fault, ...] = (
    "stale",
    "ignore_invalidation",
    "missing_new",
    "unavailable",
    "truncated",
    "wrong_crate",
    "hang",
)
STALE_SECONDS = 5.0
CONFIG = "config.json"
INVALIDATE_PATH = "/_invalidate"
FAULT_PATH = "/_fault"
HEAL_PATH = "/_heal"
ORIGIN_TIMEOUT = 10.0
UNSIGNED_S3_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=cdn/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
)
"""An ``Authorization`` shaped like a signature, for S3 servers that do not check signatures."""

_NOT_FOUND = b"not found\n"
_UNAVAILABLE = b"service unavailable\n"
_MAX_POST = 1 << 20

Request = tuple[str, str, int]


# -- the origin ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    status: int  # 200 or 404
    body: bytes
    last_modified: float | None


class _OriginError(Exception):
    """The origin gave no usable answer: ``status`` is passed on (502 when it did not answer)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class _Origin(Protocol):
    def fetch(self, rel: str) -> _Fetched: ...
    def other_file(self, rel: str) -> bytes | None: ...


class _FolderOrigin:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ValueError(f"the origin folder {root} does not exist")

    def fetch(self, rel: str) -> _Fetched:
        try:
            path = (self.root / rel).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                return _Fetched(404, b"", None)
            return _Fetched(200, path.read_bytes(), path.stat().st_mtime)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return _Fetched(404, b"", None)
        except OSError as exc:
            raise _OriginError(str(exc)) from exc

    def other_file(self, rel: str) -> bytes | None:
        """The first index file (in name order) other than ``rel`` and config.json, if any."""
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(folder)
            for name in sorted(files):
                other = (here / name).relative_to(self.root).as_posix()
                if name.startswith(".") or other in (rel, CONFIG):
                    continue
                with contextlib.suppress(OSError):
                    body = (here / name).read_bytes()
                    if body:
                        return body
        return None


class _HttpOrigin:
    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.headers = dict(headers)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the origin {url!r} is neither a folder nor an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.base = parts.path if parts.path.endswith("/") else parts.path + "/"

    def fetch(self, rel: str) -> _Fetched:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=ORIGIN_TIMEOUT)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=ORIGIN_TIMEOUT)
        try:
            conn.request("GET", self.base + quote(rel), headers=self.headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _OriginError(str(exc)) from exc
        finally:
            conn.close()
        if response.status == 404:
            return _Fetched(404, b"", None)
        if response.status != 200:
            raise _OriginError(f"the origin answered {response.status}", response.status)
        return _Fetched(200, body, _http_date(response.getheader("Last-Modified")))

    def other_file(self, rel: str) -> bytes | None:
        return None


def _open_origin(origin: Path | str, headers: Mapping[str, str]) -> _Origin:
    if isinstance(origin, str) and origin.startswith(("http://", "https://")):
        return _HttpOrigin(origin, headers)
    return _FolderOrigin(Path(origin))


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


# -- the edge's state ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    status: int  # 200 or 404
    body: bytes
    etag: str
    last_modified: float
    cached_at: float  # time.monotonic()
    invalidated: bool = False


@dataclass
class _Fault:
    kind: Fault
    paths: frozenset[str] | None
    seconds: float | None
    remaining: int | None

    def matches(self, rel: str) -> bool:
        return rel != CONFIG if self.paths is None else rel in self.paths

    def describe(self) -> dict[str, object]:
        paths = None if self.paths is None else sorted(self.paths)
        return {"kind": self.kind, "paths": paths, "seconds": self.seconds, "times": self.remaining}


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    bodiless: bool = False  # 304: Content-Length says what a GET would get, nothing follows
    truncate: bool = False
    hang: bool = False
    hang_seconds: float | None = None


def _etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def _traverses(path: str) -> bool:
    return "\\" in path or "\x00" in path or any(part in (".", "..") for part in path.split("/"))


def _json_answer(status: int, doc: Mapping[str, object]) -> _Answer:
    body = (json.dumps(doc) + "\n").encode()
    return _Answer(status, body, (("Content-Type", "application/json"), ("Cache-Control", "no-store")))


def _plain(status: int, body: bytes, *extra: tuple[str, str]) -> _Answer:
    return _Answer(status, body, (("Content-Type", "text/plain"), ("Cache-Control", "no-store"), *extra))


def _not_modified(headers: Mapping[str, str], etag: str, last_modified: float) -> bool:
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = _http_date(headers.get("If-Modified-Since"))
    return since is not None and int(last_modified) <= since


def _synthesized(rel: str) -> bytes:
    """Another registry's config, or a valid-looking index line of a crate named ``not-<name>``."""
    if rel == CONFIG:
        config = {
            "dl": "https://not-this-registry.invalid/api/v1/crates",
            "api": "https://not-this-registry.invalid",
        }
        return (json.dumps(config) + "\n").encode()
    name = f"not-{rel.rpartition('/')[2]}"
    line = {
        "name": name,
        "vers": "0.1.0",
        "deps": [],
        "cksum": hashlib.sha256(f"{name}@0.1.0".encode()).hexdigest(),
        "features": {},
        "yanked": False,
    }
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


class CdnFront:
    """A caching HTTP edge on 127.0.0.1 in front of a sparse index's files, playing faults.

    The port is bound on construction (``url`` is known at once); ``start()`` or ``with``
    serves it from a daemon thread, ``stop()`` closes it and every connection (idempotent).
    """

    def __init__(
        self,
        origin: Path | str,
        *,
        prefix: str = "/index/",
        ttl: float = 0.0,
        port: int = 0,
        origin_headers: Mapping[str, str] | None = None,
    ) -> None:
        if ttl < 0:
            raise ValueError("ttl must not be negative")
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self.ttl = float(ttl)
        self._origin = _open_origin(origin, origin_headers or {})
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._cache: dict[str, _Entry] = {}
        self._faults: list[_Fault] = []
        self._generation = 0  # bumped by heal() and stop(): releases hung requests
        self._stopped = False
        self._requests: list[Request] = []
        self._origin_reads = 0
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._server = _EdgeServer(port, self)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.prefix}"

    @property
    def invalidate_url(self) -> str:
        return f"http://{HOST}:{self.port}{INVALIDATE_PATH}"

    def start(self) -> Self:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the CDN front was stopped")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="cdn-front",
                daemon=True,
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._generation += 1
            self._changed.notify_all()
            thread = self._thread
            conns = list(self._conns)
        if thread is not None:
            self._server.shutdown()
            thread.join()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------

    def fault(
        self,
        kind: Fault,
        *,
        paths: Iterable[str] | None = None,
        seconds: float | None = None,
        times: int | None = None,
    ) -> None:
        """Add a fault; it applies from the next request on (see the module's docstring)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be positive")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if kind == "stale" and seconds is None:
            seconds = STALE_SECONDS
        chosen = None
        if paths is not None:
            chosen = frozenset(
                self._relative(path) for path in ([paths] if isinstance(paths, str) else paths)
            )
        with self._lock:
            self._faults.append(_Fault(kind, chosen, seconds, times))

    def heal(self) -> None:
        """Clear every fault and release hung requests."""
        with self._lock:
            self._faults.clear()
            self._generation += 1
            self._changed.notify_all()

    @property
    def faults(self) -> list[dict[str, object]]:
        with self._lock:
            return [fault.describe() for fault in self._faults]

    # -- what happened -------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """A copy of ``(method, path, status)`` for every request answered so far."""
        with self._lock:
            return list(self._requests)

    @property
    def origin_reads(self) -> int:
        with self._lock:
            return self._origin_reads

    # -- serving -------------------------------------------------------------------------

    def _relative(self, path: str) -> str:
        if _traverses(path):
            raise ValueError(f"the path {path!r} leaves the index")
        if path.startswith(self.prefix):
            return path[len(self.prefix) :]
        return path.lstrip("/")

    def _take(self, rel: str, *, counted: Sequence[Fault]) -> dict[Fault, _Fault]:
        """The faults matching ``rel`` (the first of each kind), spending one of their times."""
        found: dict[Fault, _Fault] = {}
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(rel) or fault.kind in found:
                    continue
                found[fault.kind] = fault
                if fault.kind in counted and fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
        return found

    def _read(self, raw_path: str, headers: Mapping[str, str]) -> _Answer:
        path = unquote(raw_path.partition("?")[0].partition("#")[0])
        if _traverses(path):
            return _plain(400, b"bad path\n")
        if not path.startswith(self.prefix):
            return _plain(404, _NOT_FOUND)
        rel = path[len(self.prefix) :]
        if not rel or "" in rel.split("/"):
            return _plain(404, _NOT_FOUND)
        return self._serve(rel, headers)

    def _serve(self, rel: str, headers: Mapping[str, str]) -> _Answer:
        faults = self._take(rel, counted=[kind for kind in FAULTS if kind != "ignore_invalidation"])
        if "hang" in faults:
            return _Answer(0, hang=True, hang_seconds=faults["hang"].seconds)
        if "unavailable" in faults:
            return _plain(503, _UNAVAILABLE, ("Retry-After", "1"))
        try:
            entry, hit = self._lookup(rel, faults)
        except _OriginError as exc:
            return _plain(exc.status, f"{exc}\n".encode())
        content_type = "application/json" if rel == CONFIG else "text/plain"
        status, body, etag, last_modified = entry.status, entry.body, entry.etag, entry.last_modified
        if "wrong_crate" in faults:
            status, body = 200, self._other_crate(rel, entry.body)
            etag, last_modified = _etag(body), time.time()
        cache = "Hit" if hit else "Miss"
        truncate = "truncated" in faults
        if status == 404:
            return _Answer(
                404,
                _NOT_FOUND,
                (("Content-Type", "text/plain"), ("X-Cache", cache)),
                truncate=truncate,
            )
        age = max(0, int(time.monotonic() - entry.cached_at))
        out = (
            ("Content-Type", content_type),
            ("ETag", etag),
            ("Last-Modified", email.utils.formatdate(last_modified, usegmt=True)),
            ("Cache-Control", f"public, max-age={int(self.ttl)}"),
            ("Age", str(age)),
            ("X-Cache", cache),
        )
        if _not_modified(headers, etag, last_modified):
            return _Answer(304, body, out, bodiless=True)
        return _Answer(200, body, out, truncate=truncate)

    def _lookup(self, rel: str, faults: Mapping[Fault, _Fault]) -> tuple[_Entry, bool]:
        """The copy to serve and whether it came from the cache without asking the origin."""
        with self._lock:
            entry = self._cache.get(rel)
            if entry is not None:
                age = time.monotonic() - entry.cached_at
                stale = faults.get("stale")
                if "ignore_invalidation" in faults:
                    return entry, True
                if stale is not None and stale.seconds is not None and age < stale.seconds:
                    return entry, True
                if not entry.invalidated and age < self.ttl:
                    return entry, True
            self._origin_reads += 1
        fetched = self._origin.fetch(rel)
        with self._lock:
            previous = self._cache.get(rel)
            if (
                fetched.status == 200
                and "missing_new" in faults
                and (previous is None or previous.status == 404)
            ):
                fetched = _Fetched(404, b"", None)
            last_modified = fetched.last_modified
            if last_modified is None:
                same = previous is not None and (previous.status, previous.body) == (
                    fetched.status,
                    fetched.body,
                )
                last_modified = previous.last_modified if same and previous is not None else time.time()
            entry = _Entry(fetched.status, fetched.body, _etag(fetched.body), last_modified, time.monotonic())
            self._cache[rel] = entry
        return entry, False

    def _other_crate(self, rel: str, body: bytes) -> bytes:
        if rel != CONFIG:
            with self._lock:
                for key, entry in self._cache.items():
                    if key not in (rel, CONFIG) and entry.status == 200 and entry.body and entry.body != body:
                        return entry.body
            other = self._origin.other_file(rel)
            if other is not None and other != body:
                return other
        return _synthesized(rel)

    def _post(self, raw_path: str, body: bytes) -> _Answer:
        path = raw_path.partition("?")[0]
        try:
            doc = json.loads(body or b"{}")
            if not isinstance(doc, dict):
                raise TypeError("the body is not a JSON object")
            if path == INVALIDATE_PATH:
                return self._invalidate(doc)
            if path == FAULT_PATH:
                self.fault(
                    doc["kind"],
                    paths=doc.get("paths"),
                    seconds=doc.get("seconds"),
                    times=doc.get("times"),
                )
                return _json_answer(200, {"faults": self.faults})
            if path == HEAL_PATH:
                self.heal()
                return _json_answer(200, {"faults": []})
        except (ValueError, TypeError, KeyError) as exc:
            return _json_answer(400, {"error": str(exc)})
        return _plain(405, b"method not allowed\n", ("Allow", "GET, HEAD"))

    def _invalidate(self, doc: Mapping[str, object]) -> _Answer:
        paths = doc.get("paths")
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise TypeError('"paths" must be a list of strings')
        rels = [self._relative(path) for path in cast(list[str], paths)]
        with self._lock:
            ignoring = [fault for fault in self._faults if fault.kind == "ignore_invalidation"]
            swallowing: list[_Fault] = []
            for rel in rels:
                keys = (
                    [key for key in self._cache if key.startswith(rel[:-1])] if rel.endswith("*") else [rel]
                )
                for key in keys:
                    ignored = next((fault for fault in ignoring if fault.matches(key)), None)
                    if ignored is not None:
                        if all(fault is not ignored for fault in swallowing):
                            swallowing.append(ignored)
                        continue
                    entry = self._cache.get(key)
                    if entry is not None:
                        self._cache[key] = replace(entry, invalidated=True)
            for fault in swallowing:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
        return _json_answer(200, {"invalidated": len(rels)})

    def _hold(self, seconds: float | None) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        with self._changed:
            generation = self._generation
            while self._generation == generation:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._changed.wait(remaining)

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append((method, path, status))

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)


# -- HTTP -----------------------------------------------------------------------------------


class _EdgeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, front: CdnFront) -> None:
        self.front = front
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        """Hang-ups and cut connections are not failures; anything else is reported."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(cast(socket.socket, request), cast(tuple[str, int], client_address))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True

    @property
    def front(self) -> CdnFront:
        return cast(_EdgeServer, self.server).front

    def setup(self) -> None:
        super().setup()
        self.front._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.front._untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are recorded in ``CdnFront.requests``, not logged."""

    def do_GET(self) -> None:
        self._reply(self.front._read(self.path, self._conditions()))

    def do_HEAD(self) -> None:
        self._reply(self.front._read(self.path, self._conditions()), head=True)

    def _conditions(self) -> dict[str, str]:
        names = ("If-None-Match", "If-Modified-Since")
        return {name: value for name in names if (value := self.headers.get(name)) is not None}

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_POST:
            self.close_connection = True
            self._reply(_plain(400, b"bad Content-Length\n"))
            return
        body = self.rfile.read(length)
        self._reply(self.front._post(self.path, body))

    def _reply(self, answer: _Answer, *, head: bool = False) -> None:
        self.front._record(self.command, self.path, answer.status)
        if answer.hang:
            self.front._hold(answer.hang_seconds)
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if head or answer.bodiless:
            return
        if answer.truncate:
            self.wfile.write(answer.body[: len(answer.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(answer.body)


# -- the command line ---------------------------------------------------------------------


def _parse_fault(text: str) -> tuple[Fault, float | None]:
    kind, sep, seconds = text.partition(":")
    if kind not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
    try:
        return kind, float(seconds) if sep else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad seconds in {text!r}") from None


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"not a NAME: VALUE header: {text!r}")
    return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.testing.cdn",
        description="A CDN edge on 127.0.0.1 in front of a sparse index, that can play faults.",
    )
    parser.add_argument("--origin", required=True, help="a folder, or an http(s) base URL ending in /")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prefix", default="/index/")
    parser.add_argument("--ttl", type=float, default=0.0, help="seconds a cached copy is served unasked")
    parser.add_argument(
        "--fault", type=_parse_fault, action="append", default=[], metavar="KIND[:SECONDS]", help="repeatable"
    )
    parser.add_argument(
        "--origin-header",
        type=_parse_header,
        action="append",
        default=[],
        metavar="NAME: VALUE",
        help="sent with every origin request; repeatable",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        front = CdnFront(
            args.origin,
            prefix=args.prefix,
            ttl=args.ttl,
            port=args.port,
            origin_headers=dict(args.origin_header),
        )
        for kind, seconds in args.fault:
            front.fault(kind, seconds=seconds)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    with front:
        sys.stdout.write(json.dumps({"url": front.url, "invalidate_url": front.invalidate_url}) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
