"""Files replaced in folders, durably when asked: what the crate files and a sparse folder share."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def replace_file(target: Path, data: bytes, *, mode: int, durable: bool) -> os.stat_result:
    """Write ``data`` to a temporary file beside ``target`` and rename it over ``target``; the
    written file's status (its size and modification time, as a listing sees them).

    ``durable``: the file's data is flushed to the disk before the rename and the rename after
    it, so a crash leaves the old file or the new one, never a part. The temporary name is the
    writing process's and thread's own, so writers of one file never write into one another's.
    """
    temporary = target.with_name(f".incoming-{target.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
            status = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        sync_folder(target.parent)
    return status


def sync_folder(folder: Path) -> None:
    """Make a rename into ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
