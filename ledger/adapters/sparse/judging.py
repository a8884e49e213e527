"""What a read-back saw where it expected a file (or its absence), in one line for the operator."""

from __future__ import annotations

import hashlib
import json

from ledger.adapters.sparse.public import Fetched
from ledger.domain.names import crate_from_path

ABSENT = (404, 410, 451)
"""The statuses cargo reads as *no such file*."""


def problem(path: str, fetched: Fetched, expected: bytes | None) -> str | None:
    """Why ``fetched`` is not what cargo should be served at ``path``; None when it is.

    ``expected`` None means the file must be absent.
    """
    if expected is None:
        return _absence(fetched)
    if fetched.status != 200:
        return f"HTTP {fetched.status}"
    return _content(path, fetched, expected)


def _absence(fetched: Fetched) -> str | None:
    if fetched.status in ABSENT:
        return None
    if fetched.status == 200:
        return f"still served (HTTP 200, {len(fetched.body)} bytes), expected no file"
    return f"HTTP {fetched.status}"


def _content(path: str, fetched: Fetched, expected: bytes) -> str | None:
    body = fetched.body
    if fetched.truncated is not None:
        received, announced = fetched.truncated
        return f"truncated: {received} of {announced if announced is not None else len(expected)} bytes"
    if fetched.problem is not None:
        return fetched.problem
    if body == expected:
        return None
    if len(body) < len(expected) and expected.startswith(body) and not body.endswith(b"\n"):
        # Cut inside a line; a prefix ending at a line's end is an older version of the file.
        return f"truncated: {len(body)} of {len(expected)} bytes"
    served, mine = _crate_named(body), _crate_named(expected) or crate_from_path(path)
    if served is not None and mine is not None and served.lower() != mine.lower():
        return f"serves the file of crate {served!r}"
    return f"stale or different content (sha256 {_short(body)}…, expected {_short(expected)}…)"


def _crate_named(body: bytes) -> str | None:
    """The crate the first line of an index file names, None when it names none."""
    try:
        line = json.loads(body.split(b"\n", 1)[0])
    except ValueError:
        return None
    name = line.get("name") if isinstance(line, dict) else None
    return name if isinstance(name, str) else None


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]
