"""Adopting an existing cargo index: one publish per line found, confirmed against the source.

:func:`import_index` fetches the source's branch into a bare clone, walks every crate file at its
head and records each version through the batched path (actor ``import``, yank state kept,
lines in file order). Lines that cannot be adopted are refused and reported by path and line
number without stopping; versions already recorded count as present, so a second import adds
nothing.

The versions were read from the index itself, so each sync job the import creates is
confirmed in the same transaction that records it: ``IndexPushConfirmed`` at the source's head,
with the crate's file as read, then ``IndexSyncCompleted``. The audit therefore sees the
adopted index as holding what it holds, and the worker has nothing to push for it.

What a crate file's confirmation lists: every line that parses, belongs to that file's crate
and is the first of its version (build metadata ignored). A line the ledger refuses for its
state (a name spelled differently from the registered one, a deleted version) is still listed:
the index holds it, so the audit reports it as a phantom instead of hiding it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.domain import SyncJob
from ledger.errors import InvalidLine, NotFound
from ledger.index_format import IndexLine, parse_file
from ledger.logs import log_step
from ledger.names import crate_from_path, index_path
from ledger.settings import check_remote_url, redact

if TYPE_CHECKING:
    from ledger.api import Ledger

ACTOR = "import"
METHOD = "import: read from the remote"
CONFIG_PATH = "config.json"
EVENTS_PER_FILE = 4  # beside one per line: registered, enqueued, confirmed, completed


@dataclass(frozen=True)
class RefusedLine:
    """A line of the source that was not adopted, and why."""

    path: str
    line: int
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "error": self.error}


@dataclass
class ImportResult:
    """What an import did: counts, refusals by path and line, and the jobs it confirmed."""

    source: str
    head: str | None = None
    files: int = 0
    lines: int = 0
    accepted: int = 0
    present: int = 0
    refused: list[RefusedLine] = field(default_factory=list)
    confirmed_jobs: int = 0
    ignored_paths: int = 0
    events: int = 0
    position: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "head": self.head,
            "files": self.files,
            "lines": self.lines,
            "accepted": self.accepted,
            "present": self.present,
            "refused": [r.to_dict() for r in self.refused],
            "confirmed_jobs": self.confirmed_jobs,
            "ignored_paths": self.ignored_paths,
            "events": self.events,
            "position": self.position,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _CrateFile:
    """One crate file as read: the lines to record and the entries the index holds."""

    path: str
    lines: list[tuple[int, IndexLine]] = field(default_factory=list)
    entries: list[list[Any]] = field(default_factory=list)


def import_index(
    ledger: Ledger,
    source: str,
    *,
    branch: str | None = None,
    clone_dir: Path | None = None,
    events_per_save: int = 5000,
) -> ImportResult:
    """Adopt the cargo index at ``source`` (a path, file://, git:// or http(s):// URL).

    The source is fetched into ``clone_dir``; by default a folder beside the ledger's own index
    clone (its name + ``-import``) when the settings place one, else a temporary folder.
    Raises :class:`~ledger.errors.NotFound` when the source has no such branch and
    :class:`~ledger.errors.RemoteUnavailable` when it cannot be read.
    """
    from ledger.git_index import GitIndex

    started = time.monotonic()
    check_remote_url(source)
    shown = redact(source)
    branch = branch or ledger.settings.branch
    result = ImportResult(source=shown)
    log_step("import_started", source=shown, branch=branch)
    with _clone_folder(ledger, clone_dir) as folder:
        index = GitIndex.open(
            folder,
            source,
            branch=branch,
            connect_timeout_ms=ledger.settings.connect_timeout_ms,
            timeout_ms=ledger.settings.timeout_ms,
        )
        try:
            head = index.fetch()
            if head is None:
                msg = f"{shown} has no branch {branch!r} to import"
                raise NotFound(msg, remote=shown, branch=branch)
            result.head = head
            _Adoption(ledger, result, head, events_per_save).run(index.files(head))
        finally:
            index.close()
    result.seconds = time.monotonic() - started
    log_step(
        "import_finished",
        source=shown,
        head=result.head,
        files=result.files,
        lines=result.lines,
        accepted=result.accepted,
        present=result.present,
        refused=len(result.refused),
        confirmed_jobs=result.confirmed_jobs,
        seconds=round(result.seconds, 3),
    )
    return result


@contextmanager
def _clone_folder(ledger: Ledger, configured: Path | None) -> Iterator[Path]:
    """The folder for the source's bare clone: given, derived from the settings, or temporary."""
    if configured is not None:
        yield configured
        return
    derived = _derived_folder(ledger)
    if derived is not None:
        derived.parent.mkdir(parents=True, exist_ok=True)
        yield derived
        return
    temporary = Path(tempfile.mkdtemp(prefix="ledger-import-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _derived_folder(ledger: Ledger) -> Path | None:
    """Beside the ledger's index clone when the settings place it (index dir or SQLite file)."""
    from ledger.bootstrap import index_dir

    settings = ledger.settings
    if settings.index_dir is None and settings.store_url.kind != "sqlite":
        return None
    own = index_dir(settings)
    return own.with_name(own.name + "-import")


class _Adoption:
    """Reads crate files, records their lines in chunks, and confirms the jobs created."""

    def __init__(self, ledger: Ledger, result: ImportResult, head: str, events_per_save: int) -> None:
        self.ledger = ledger
        self.result = result
        self.head = head
        self.events_per_save = events_per_save
        self.chunk: dict[str, _CrateFile] = {}
        self.chunk_events = 0

    def run(self, files: Iterable[tuple[str, bytes]]) -> None:
        for path, data in files:
            if path == CONFIG_PATH:
                continue
            crate = crate_from_path(path)
            if crate is None:
                self.result.ignored_paths += 1
                continue
            self.result.files += 1
            crate_file = self._read(path, data)
            if crate_file.lines:
                self.chunk[path] = crate_file
                self.chunk_events += len(crate_file.lines) + EVENTS_PER_FILE
            if self.chunk_events >= self.events_per_save:
                self._record()
        self._record()
        self.result.refused.sort(key=lambda r: (r.path, r.line))

    def _read(self, path: str, data: bytes) -> _CrateFile:
        """Parse a crate file leniently: refuse what cannot be adopted, keep the rest in order."""
        crate_file = _CrateFile(path)
        seen: dict[str, int] = {}
        for number, parsed in parse_file(data):
            self.result.lines += 1
            if isinstance(parsed, InvalidLine):
                self._refuse(path, number, parsed.message)
                continue
            if index_path(parsed.name) != path:
                self._refuse(path, number, f"the line is for crate {parsed.name!r}, whose file is not {path}")
                continue
            first = seen.get(parsed.key)
            if first is not None:
                msg = (
                    f"{parsed.name} {parsed.vers} repeats the version of line {first} "
                    "(build metadata ignored); the first line is kept"
                )
                self._refuse(path, number, msg)
                continue
            seen[parsed.key] = number
            crate_file.lines.append((number, parsed))
            crate_file.entries.append([parsed.vers, parsed.key, parsed.yanked, parsed.content_digest()])
        return crate_file

    def _refuse(self, path: str, line: int, error: str) -> None:
        self.result.refused.append(RefusedLine(path, line, error))

    def _record(self) -> None:
        """Record the chunk's lines through the batched path, in one save; confirm its jobs."""
        if not self.chunk:
            return
        origins: list[tuple[str, int]] = []

        def numbered() -> Iterator[tuple[int, IndexLine]]:
            for crate_file in self.chunk.values():
                for number, line in crate_file.lines:
                    origins.append((crate_file.path, number))
                    yield len(origins) - 1, line

        bulk = self.ledger.app.publish_many(
            numbered(),
            ACTOR,
            events_per_save=self.chunk_events + 1,
            keep_yanked=True,
            on_job=self._confirm,
        )
        self.result.accepted += bulk.accepted
        self.result.present += bulk.present
        self.result.events += bulk.events
        self.result.position = max(self.result.position, bulk.position)
        for seq, error in bulk.refused:
            path, number = origins[seq]
            self._refuse(path, number, error)
        self.chunk = {}
        self.chunk_events = 0

    def _confirm(self, job: SyncJob, lines: Sequence[IndexLine]) -> None:
        """The versions were read from the remote at ``head``: the job is done as it is created."""
        path = index_path(lines[0].name)
        crate_file = self.chunk[path]
        job.confirmed(
            crate=job.crate,
            commit=self.head,
            remote_head=self.head,
            method=METHOD,
            path=path,
            entries=crate_file.entries,
        )
        job.completed(commit=self.head)
        self.result.confirmed_jobs += 1
