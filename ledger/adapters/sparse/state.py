"""What a sparse index keeps in its folder between runs: small JSON files, replaced atomically.

- the *heads*: which local commit each head marker read from the origin stands for, when that
  marker names a commit this folder never wrote (another machine's, or none at all);
- the *survey*: the origin's listing (key -> signature) at the last survey, and the commit
  whose tree holds exactly those files, so the next survey reads only what changed.

Either file may be lost: the heads are found again by a survey, and a survey without its
listing reads every file once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ledger.domain.errors import InfrastructureError

HEADS_KEPT = 32
"""Marker values remembered, the newest kept."""


@dataclass
class Survey:
    """The origin's files at the last survey, and the commit that holds exactly them."""

    commit: str | None = None
    files: dict[str, str] = field(default_factory=dict)


class State:
    """The JSON files of a sparse index, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._heads_file = self.folder / "sparse-heads.json"
        self._survey_file = self.folder / "sparse-survey.json"

    def head_for(self, marker: str) -> str | None:
        """The local commit recorded for the origin's marker ``marker``."""
        found = _load(self._heads_file).get(marker)
        return found if isinstance(found, str) else None

    def remember(self, marker: str, commit: str) -> None:
        """Record that the origin's marker ``marker`` stands for the local ``commit``."""
        heads = {k: v for k, v in _load(self._heads_file).items() if isinstance(v, str) and k != marker}
        heads[marker] = commit
        _save(self._heads_file, dict(list(heads.items())[-HEADS_KEPT:]))

    def survey(self) -> Survey:
        data = _load(self._survey_file)
        commit, files = data.get("commit"), data.get("files")
        if not isinstance(commit, str) or not isinstance(files, dict):
            return Survey()
        return Survey(commit, {str(k): str(v) for k, v in files.items()})

    def save_survey(self, survey: Survey) -> None:
        _save(self._survey_file, {"commit": survey.commit, "files": survey.files})


def _load(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, object]) -> None:
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, separators=(",", ":"), sort_keys=True)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise InfrastructureError(f"cannot write {path}: {exc}", path=str(path)) from exc
