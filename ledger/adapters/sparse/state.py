"""What a sparse index keeps in its folder between runs: small JSON files, replaced atomically.

- the *heads*: which local commit each head marker read from the origin stands for, when that
  marker names a commit this folder never wrote (another machine's, or none at all);
- the *survey*: the origin's listing (key -> signature) at the last survey, and the commit
  whose tree holds exactly those files, so the next survey reads only what changed. A push
  carries it over by appending what it wrote to a journal (one JSON line, the size of the
  change) instead of writing the listing of the whole index again; the next survey folds the
  journal in. The survey is kept in memory between calls while its files do not change.

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
JOURNAL_BYTES = 4 << 20
"""The journal's size past which a push writes the whole listing again (about 20,000 pushes)."""


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
        self._journal_file = self.folder / "sparse-survey.journal"
        self._cached: tuple[tuple[int, ...], Survey] | None = None

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
        """The last survey, with every push carried over since (a copy the caller may change)."""
        key = self._key()
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._read_survey())
        found = self._cached[1]
        return Survey(found.commit, dict(found.files))

    def save_survey(self, survey: Survey) -> None:
        _save(self._survey_file, {"commit": survey.commit, "files": survey.files})
        with contextlib.suppress(FileNotFoundError):
            self._journal_file.unlink()
        self._cached = (self._key(), Survey(survey.commit, dict(survey.files)))

    def carry(self, commit: str, written: dict[str, str], deleted: list[str]) -> None:
        """A push over the surveyed files: ``commit`` now holds exactly them with these changes."""
        line = json.dumps({"commit": commit, "written": written, "deleted": deleted}, separators=(",", ":"))
        cached = self._cached if self._cached is not None and self._cached[0] == self._key() else None
        try:
            with self._journal_file.open("a") as out:
                out.write(line + "\n")
        except OSError as exc:
            raise InfrastructureError(
                f"cannot write {self._journal_file}: {exc}", path=str(self._journal_file)
            ) from exc
        if cached is not None:
            survey = cached[1]
            _apply(survey, commit, written, deleted)
            self._cached = (self._key(), survey)
            if self._cached[0][4] > JOURNAL_BYTES:  # the journal's size: fold it in now and then
                self.save_survey(survey)

    def survey_commit(self) -> str | None:
        """The commit the last survey (with the pushes carried over) describes."""
        key = self._key()
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._read_survey())
        return self._cached[1].commit

    def _read_survey(self) -> Survey:
        data = _load(self._survey_file)
        commit, files = data.get("commit"), data.get("files")
        if not isinstance(commit, str) or not isinstance(files, dict):
            return Survey()
        survey = Survey(commit, {str(k): str(v) for k, v in files.items()})
        try:
            lines = self._journal_file.read_text().splitlines()
        except OSError:
            return survey
        for raw in lines:
            try:
                entry = json.loads(raw)
                _apply(survey, str(entry["commit"]), dict(entry["written"]), list(entry["deleted"]))
            except (ValueError, KeyError, TypeError):
                return Survey()  # a torn journal: the next survey reads every file once
        return survey

    def _key(self) -> tuple[int, ...]:
        """What tells that the survey's files changed (another process surveyed meanwhile)."""
        key: list[int] = []
        for path in (self._survey_file, self._journal_file):
            try:
                found = path.stat()
                key += [found.st_mtime_ns, found.st_size, found.st_ino]
            except OSError:
                key += [0, 0, 0]
        return tuple(key)


def _apply(survey: Survey, commit: str, written: dict[str, str], deleted: list[str]) -> None:
    survey.commit = commit
    survey.files.update(written)
    for path in deleted:
        survey.files.pop(path, None)


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
