"""A sparse index's folder served over HTTP, as cargo reads it (``serve --serve-index TARGET``).

``GET``/``HEAD`` of ``{prefix}{path}`` answers the file at ``folder/path`` with a strong ``ETag``
(the SHA-256 of the body) and ``Last-Modified``, ``304`` to a matching ``If-None-Match`` (cargo
revalidates its cached files that way), ``404`` for a file that is not there, and ``400`` for a
path that leaves the folder. Names starting with a dot (the ledger's ``.ledger/head``) are never
served. A CDN may stand in front; the ledger reads the URL back either way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_STATUS = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 404: "404 Not Found"}


class IndexFiles:
    """The files of one sparse index folder under one URL prefix (ending in ``/``)."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = Path(folder).resolve()
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def holds(self, path: str) -> bool:
        """Whether a request path is this index's to answer."""
        return path.startswith(self.prefix)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        relative = environ.get("PATH_INFO", "")[len(self.prefix) :]
        if method not in ("GET", "HEAD"):
            return _answer(start_response, 400, b"the index is read with GET\n", method)
        found = self._read(relative)
        if isinstance(found, int):
            return _answer(start_response, found, b"not found\n" if found == 404 else b"bad path\n", method)
        body, modified = found
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        headers = [
            ("ETag", etag),
            ("Last-Modified", formatdate(modified, usegmt=True)),
            ("Cache-Control", "public, max-age=0, must-revalidate"),
        ]
        if etag in (environ.get("HTTP_IF_NONE_MATCH") or ""):
            start_response(_STATUS[304], headers)
            return iter(())
        kind = "application/json" if relative == "config.json" else "text/plain; charset=utf-8"
        return _answer(start_response, 200, body, method, [("Content-Type", kind), *headers])

    def _read(self, relative: str) -> tuple[bytes, float] | int:
        """The file's bytes and modification time, or the status that refuses the path."""
        parts = relative.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            return 400
        if any(p.startswith(".") for p in parts):
            return 404
        target = self.folder.joinpath(*parts)
        try:
            if not target.resolve().is_relative_to(self.folder):
                return 400
            return target.read_bytes(), os.stat(target).st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return 404


def _answer(
    start_response: StartResponse,
    status: int,
    body: bytes,
    method: str,
    headers: list[tuple[str, str]] | None = None,
) -> Iterator[bytes]:
    found = headers or [("Content-Type", "text/plain; charset=utf-8")]
    start_response(_STATUS[status], [*found, ("Content-Length", str(len(body)))])
    return iter(() if method == "HEAD" else (body,))
