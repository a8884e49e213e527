"""One crate's index file, regenerated from the truth: never appended to, so never duplicated."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Protocol

from ledger.domain.index_format import render_fields, render_file


class VersionState(Protocol):
    @property
    def line(self) -> str: ...
    @property
    def yanked(self) -> bool: ...
    @property
    def digest(self) -> str: ...


def crate_file(versions: Sequence[VersionState]) -> bytes | None:
    """The file's bytes: each version's line in the view's order (versions adopted from an index
    first, then publication order), ``yanked`` from its latest state.

    None when no version belongs in the index (the file must not exist).
    """
    if not versions:
        return None
    return render_file(_line(v) for v in versions)


def _line(version: VersionState) -> bytes:
    """One version's line. A live version whose recorded line already renders as not yanked
    (its digest is the digest of the line itself: the usual case) is that line as it stands,
    without decoding and encoding it again."""
    if not version.yanked:
        raw = version.line.encode()
        if hashlib.sha256(raw).hexdigest() == version.digest:
            return raw
    return render_fields(json.loads(version.line), yanked=version.yanked)
