"""One crate's index file, regenerated from the truth: never appended to, so never duplicated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

from ledger.index_format import render_fields, render_file


class VersionState(Protocol):
    @property
    def line(self) -> str: ...
    @property
    def yanked(self) -> bool: ...


def crate_file(versions: Sequence[VersionState]) -> bytes | None:
    """The file's bytes: each version's line in publication order, ``yanked`` from its latest state.

    None when no version belongs in the index (the file must not exist).
    """
    if not versions:
        return None
    return render_file(render_fields(json.loads(v.line), yanked=v.yanked) for v in versions)
