"""Lines of a real index file: identified by their digest when the views know them, parsed
otherwise; and the fingerprints that tell a whole file's lines apart in one value.

A canonical index line's SHA-256 is the views' content digest (a yanked line is hashed with
``"yanked":true`` read as ``false``), so a file whose lines are exactly the ones expected is
recognised by hashing, and only files that differ are parsed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.domain.errors import InvalidLine, InvalidVersion
from ledger.domain.index_format import parse_line
from ledger.domain.versions import parse_version

_YANKED_TRUE = b'"yanked":true'
_YANKED_FALSE = b'"yanked":false'


def line_tag(raw: bytes) -> tuple[str, bool]:
    """The content digest and yanked flag ``raw`` has if it is a canonical index line.

    A canonical line (compact JSON as the ledger writes it) holds ``"yanked":true`` or
    ``"yanked":false`` exactly once, as its top-level field; its content digest is the SHA-256
    of the line with ``false`` there. A digest equal to a known one therefore proves the line
    is that version's line, byte for byte; any other line simply matches nothing.
    """
    if _YANKED_TRUE in raw:
        return hashlib.sha256(raw.replace(_YANKED_TRUE, _YANKED_FALSE, 1)).hexdigest(), True
    return hashlib.sha256(raw).hexdigest(), False


def numbered_lines(data: bytes | None) -> list[tuple[int, bytes]]:
    """The non-empty lines of a file, numbered from 1 (none for a missing file)."""
    if not data:
        return []
    return [(number, raw) for number, raw in enumerate(data.split(b"\n"), start=1) if raw]


def well_formed(data: bytes) -> bool:
    """Lines each ended by a newline, none empty: the only shape the ledger writes."""
    return data.endswith(b"\n") and not data.startswith(b"\n") and b"\n\n" not in data


def tag(digest: str, yanked: bool) -> str:
    return digest + ("y" if yanked else "n")


def fingerprint(tags: list[str], *, ordered: bool) -> str | None:
    """One digest for a file's (digest, yanked) tags; None for no lines at all."""
    if not tags:
        return None
    return hashlib.sha256("\n".join(tags if ordered else sorted(tags)).encode()).hexdigest()


def file_fingerprint(data: bytes, *, ordered: bool) -> str | None:
    """The fingerprint of a file's lines read as canonical lines (:func:`line_tag`, inlined)."""
    sha256 = hashlib.sha256
    tags = []
    for raw in data.split(b"\n"):
        if not raw:
            continue
        if _YANKED_TRUE in raw:
            tags.append(sha256(raw.replace(_YANKED_TRUE, _YANKED_FALSE, 1)).hexdigest() + "y")
        else:
            tags.append(sha256(raw).hexdigest() + "n")
    return fingerprint(tags, ordered=ordered)


@dataclass(frozen=True)
class ReadLine:
    """One line of a real index file as far as it could be read."""

    number: int
    raw: bytes
    version: str | None
    key: str | None
    yanked: bool
    digest: str | None
    name: str | None
    error: str | None = None
    """Why the line is not a valid index line (its version may still be readable)."""

    @property
    def entry(self) -> list[Any]:
        return [self.version, self.key, self.yanked, self.digest]


Known = Mapping[str, tuple[str, str, str]]
"""Content digest -> (version, version key, crate name) of lines the views know."""


def read_line(number: int, raw: bytes, known: Known) -> ReadLine:
    """Identify a line by its digest when the views know it, else parse it."""
    digest, yanked = line_tag(raw)
    hit = known.get(digest)
    if hit is not None:
        return ReadLine(number, raw, hit[0], hit[1], yanked, digest, hit[2])
    try:
        line = parse_line(raw)
    except InvalidLine as exc:
        salvaged = _salvage(raw)
        if salvaged is None:
            return ReadLine(number, raw, None, None, False, None, None, exc.message)
        version, key, name, flag = salvaged
        return ReadLine(number, raw, version, key, flag, hashlib.sha256(raw).hexdigest(), name, exc.message)
    return ReadLine(number, raw, line.vers, line.key, line.yanked, line.content_digest(), line.name)


def _salvage(raw: bytes) -> tuple[str, str, str, bool] | None:
    """The crate, version and yanked flag of an invalid line, when they can still be read."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    name, version = obj.get("name"), obj.get("vers")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    try:
        key = parse_version(version).key
    except InvalidVersion:
        return None
    return version, key, name, obj.get("yanked") is True
