"""cargo's registry web API as a WSGI application: each request parsed, one call, one answer.

Routes (cargo's `registry-web-api`): ``PUT /api/v1/crates/new``,
``DELETE /api/v1/crates/{crate}/{version}/yank``, ``PUT /api/v1/crates/{crate}/{version}/unyank``,
``GET /api/v1/crates/{crate}/{version}/download`` (the ``dl`` of the index's ``config.json``) and
``GET /api/v1/crates/{crate}/owners``. Errors are answered in cargo's shape,
``{"errors": [{"detail": "..."}]}`` with a 4xx status (5xx when the store or the disk failed),
so cargo prints the reason.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from ledger.domain.errors import (
    AlreadyPublished,
    Conflict,
    Forbidden,
    InfrastructureError,
    Invalid,
    LedgerError,
    NotFound,
    Unauthorized,
)
from ledger.entrypoints.serve.files import IndexFiles
from ledger.logs import warn_step
from ledger.services.ledger import Ledger
from ledger.services.registry import Registry, warnings

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]

_CRATE = r"(?P<crate>[^/]+)"
_VERSION = r"(?P<version>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("PUT", re.compile(r"/api/v1/crates/new"), "publish"),
    ("DELETE", re.compile(rf"/api/v1/crates/{_CRATE}/{_VERSION}/yank"), "yank"),
    ("PUT", re.compile(rf"/api/v1/crates/{_CRATE}/{_VERSION}/unyank"), "unyank"),
    ("GET", re.compile(rf"/api/v1/crates/{_CRATE}/{_VERSION}/download"), "download"),
    ("GET", re.compile(rf"/api/v1/crates/{_CRATE}/owners"), "owners"),
]
FRAMING_BYTES = 8
METADATA_BYTES = 1024 * 1024

_STATUS = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    411: "411 Length Required",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


_STATUS_OF: list[tuple[type[LedgerError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (AlreadyPublished, 409),
    (Conflict, 409),
    (Invalid, 400),
    (InfrastructureError, 503),
]


def status_of(exc: LedgerError) -> int:
    """The HTTP status of a refusal, by the error tree (a too large ``.crate``: 413)."""
    if isinstance(exc, Invalid) and exc.details.get("field") == "crate_size":
        return 413
    return next((status for kind, status in _STATUS_OF if isinstance(exc, kind)), 400)


class RegistryApp:
    """The WSGI application: a :class:`~ledger.services.registry.Registry` per serving thread."""

    def __init__(
        self,
        open_ledger: Callable[[], AbstractContextManager[Ledger]],
        *,
        max_crate_bytes: int,
        index_files: IndexFiles | None = None,
    ) -> None:
        self._open = open_ledger
        self.index_files = index_files
        """A sparse index's folder, served under its public URL's path (``--serve-index``)."""
        self.max_crate_bytes = max_crate_bytes
        self._local = threading.local()
        self._opened = ExitStack()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's ledger (once the server has stopped)."""
        with self._lock:
            self._opened.close()

    def registry(self) -> Registry:
        found: Registry | None = getattr(self._local, "registry", None)
        if found is None:
            with self._lock:
                ledger = self._opened.enter_context(self._open())
            if ledger.crate_files is None:
                msg = "this ledger has no folder for .crate files (give --crate-dir or LEDGER_CRATE_DIR)"
                raise InfrastructureError(msg)
            found = Registry(ledger, ledger.crate_files, max_crate_bytes=self.max_crate_bytes)
            self._local.registry = found
        return found

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if self.index_files is not None and self.index_files.holds(path):
            return self.index_files(environ, start_response)
        for route_method, pattern, name in ROUTES:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if method != route_method:
                return _error(start_response, 405, f"{path} takes {route_method}, not {method}")
            try:
                return getattr(self, f"_{name}")(environ, start_response, **found.groupdict())  # type: ignore[no-any-return]
            except LedgerError as exc:
                return _error(start_response, status_of(exc), exc.message)
            except Exception as exc:  # noqa: BLE001  (any other failure is a 500 in cargo's shape, logged)
                warn_step("registry_error", path=path, error=repr(exc))
                return _error(start_response, 500, "the registry failed to answer; see its log")
        return _error(start_response, 404, f"no such endpoint: {method} {path}")

    # -- endpoints ----------------------------------------------------------------------------

    def _publish(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        limit = self.max_crate_bytes + METADATA_BYTES + FRAMING_BYTES
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit():
            return _error(start_response, 411, "a publish needs a Content-Length")
        if int(length) > limit:
            msg = f"the request is {int(length):,} bytes, over this registry's limit of {limit:,}"
            return _error(start_response, 413, msg)
        body = _read(environ, int(length))
        self.registry().publish(_token(environ), body)
        return _json(start_response, 200, {"warnings": warnings()})

    def _yank(
        self, environ: Environ, start_response: StartResponse, crate: str, version: str
    ) -> Iterable[bytes]:
        self.registry().yank(_token(environ), crate, version)
        return _json(start_response, 200, {"ok": True})

    def _unyank(
        self, environ: Environ, start_response: StartResponse, crate: str, version: str
    ) -> Iterable[bytes]:
        self.registry().unyank(_token(environ), crate, version)
        return _json(start_response, 200, {"ok": True})

    def _download(
        self, environ: Environ, start_response: StartResponse, crate: str, version: str
    ) -> Iterable[bytes]:
        data = self.registry().download(crate, version)
        start_response(
            "200 OK",
            [("Content-Type", "application/gzip"), ("Content-Length", str(len(data)))],
        )
        return [data]

    def _owners(self, environ: Environ, start_response: StartResponse, crate: str) -> Iterable[bytes]:
        owners = self.registry().ledger.app.owners(crate)
        users = [{"id": n, "login": user, "name": None} for n, user in enumerate(owners, start=1)]
        return _json(start_response, 200, {"users": users})


def _token(environ: Environ) -> str | None:
    """The API token cargo sends as the whole ``Authorization`` header (a ``Bearer`` prefix is accepted)."""
    raw = str(environ.get("HTTP_AUTHORIZATION") or "").strip()
    return raw.removeprefix("Bearer ").strip() or None


def _read(environ: Environ, length: int) -> bytes:
    """Exactly ``length`` bytes of the request body (fewer when the client sent fewer)."""
    stream = environ["wsgi.input"]
    chunks, left = [], length
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _json(start_response: StartResponse, status: int, document: dict[str, Any]) -> Iterator[bytes]:
    body = json.dumps(document).encode()
    start_response(
        _STATUS.get(status, "200 OK"),
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    yield body


def _error(start_response: StartResponse, status: int, detail: str) -> Iterator[bytes]:
    return _json(start_response, status, {"errors": [{"detail": detail}]})
