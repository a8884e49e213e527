"""The registry's ``.crate`` files in a folder, content-addressed: ``ab/cd/<sha256>.crate``.

A file is written to a temporary name, flushed to disk, then renamed into place (and the folder
synced), so a crash leaves either no file or the whole file; never a partial one under its
name. The publish is recorded only after :meth:`FolderCrateFiles.put` returns, so a crash in
between leaves an unreferenced file, never an index line without its file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ledger.adapters.folders import replace_file
from ledger.domain.errors import InfrastructureError, Invalid

_CKSUM = re.compile(r"[0-9a-f]{64}")
FILE_MODE = 0o600
"""The registry's files are its own user's: it serves them itself (the download route)."""


class FolderCrateFiles:
    """:class:`~ledger.ports.CrateFiles` in the folder ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, cksum: str) -> Path:
        if _CKSUM.fullmatch(cksum) is None:
            msg = f"{cksum!r} is not a SHA-256 in hex"
            raise Invalid(msg, field="cksum")
        return self.root / cksum[:2] / cksum[2:4] / f"{cksum}.crate"

    def put(self, cksum: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != cksum:
            msg = f"the file's SHA-256 is not {cksum}"
            raise Invalid(msg, field="cksum")
        target = self.path(cksum)
        if target.is_file() and target.stat().st_size == len(data):
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_file(target, data, mode=FILE_MODE, durable=True)
        except OSError as exc:
            msg = f"cannot store the .crate file under {self.root}: {exc}"
            raise InfrastructureError(msg, path=str(self.root)) from exc

    def get(self, cksum: str) -> bytes | None:
        try:
            return self.path(cksum).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            msg = f"cannot read the .crate file {cksum} under {self.root}: {exc}"
            raise InfrastructureError(msg, path=str(self.root)) from exc

    def has(self, cksum: str) -> bool:
        return self.path(cksum).is_file()
