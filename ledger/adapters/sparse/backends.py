"""Where a sparse index's files are written (its *origin*): a folder, or an S3 bucket.

A backend holds the index's files under their index paths (``config.json``, ``se/rd/serde``)
and one object more, the head marker at :data:`MARKER_KEY`: the head whose files the origin
holds, written after them. Cargo never asks for a path that starts with a dot, so the marker
(and any other dot path, such as a folder's temporary files) is never listed as an index file.

Every failure to reach or use the origin becomes
:class:`~ledger.domain.errors.RemoteUnavailable`, its message naming the origin.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from ledger.adapters.folders import replace_file
from ledger.domain.errors import RemoteUnavailable

MARKER_KEY = ".ledger/head"
"""The head marker's key: the commit id the origin's files equal, as text and a newline."""

FILE_MODE = 0o644
"""Files written into a folder origin: readable by the web server that serves them."""


def is_index_key(key: str) -> bool:
    """Whether ``key`` can be an index file: no empty part, none starting with a dot, no NUL."""
    return all(part and not part.startswith(".") and "\0" not in part for part in key.split("/"))


class Backend(ABC):
    """The origin's files, written and listed; ``origin`` names it in every message."""

    origin: str

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object at ``key``; None when there is none."""

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """``(key, object or None)`` for every key, in any order."""
        for key in keys:
            yield key, self.get(key)

    @abstractmethod
    def put_many(self, items: Iterable[tuple[str, bytes]]) -> dict[str, str]:
        """Write every ``(key, data)``; the signature each key then lists with."""

    @abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove these keys (a missing one is not an error)."""

    @abstractmethod
    def listing(self) -> Iterator[tuple[str, str]]:
        """Every index file as ``(key, signature)``: the signature changes when the file does."""

    @abstractmethod
    def put_marker(self, data: bytes) -> None:
        """Write the head marker."""

    def get_marker(self) -> bytes | None:
        """The head marker; None when there is none."""
        return self.get(MARKER_KEY)

    @abstractmethod
    def flush(self) -> None:
        """Make the files written so far durable (before the marker that names them)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the backend holds open."""


class FolderBackend(Backend):
    """An origin in a local folder (served by any web server): one file per key.

    Each file is written to a temporary dot name in its own folder and renamed into place, so a
    reader sees the old file or the new one, never part of one. Folders left empty by a delete
    are removed. :meth:`flush` syncs the file systems once, so a push's files are durable
    before its marker is written; the marker itself is synced on its own.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.origin = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._unavailable(f"read {key} from", exc) from exc

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> dict[str, str]:
        """Write every file (a temporary file beside it, renamed over it), with as few system
        calls as a file allows: each folder made once, the signature from the open file."""
        signatures: dict[str, str] = {}
        made: set[Path] = set()
        for key, data in items:
            target = self._path(key)
            try:
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                signatures[key] = _signature(replace_file(target, data, mode=FILE_MODE, durable=False))
            except OSError as exc:
                raise self._unavailable(f"write {key} to", exc) from exc
        return signatures

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            target = self._path(key)
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                raise self._unavailable(f"delete {key} from", exc) from exc
            folder = target.parent
            while folder != self.root and self.root in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent

    def listing(self) -> Iterator[tuple[str, str]]:
        if not self.root.exists():
            return
        try:
            yield from self._scan(self.root, "")
        except OSError as exc:
            raise self._unavailable("list", exc) from exc

    def _scan(self, folder: Path, prefix: str) -> Iterator[tuple[str, str]]:
        with os.scandir(folder) as entries:
            found = sorted(entries, key=lambda entry: entry.name)
        for entry in found:
            if entry.name.startswith("."):
                continue
            key = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self._scan(Path(entry.path), f"{key}/")
            elif entry.is_file() and is_index_key(key):
                yield key, _signature(entry.stat())

    def put_marker(self, data: bytes) -> None:
        target = self._path(MARKER_KEY)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_file(target, data, mode=FILE_MODE, durable=True)
        except OSError as exc:
            raise self._unavailable("write the head marker to", exc) from exc

    def flush(self) -> None:
        os.sync()

    def close(self) -> None:
        """Nothing to release: every file is closed once written."""

    def _unavailable(self, action: str, exc: OSError) -> RemoteUnavailable:
        reason = exc.strerror or str(exc)
        return RemoteUnavailable(f"cannot {action} the folder {self.origin}: {reason}", remote=self.origin)


def _signature(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}"
