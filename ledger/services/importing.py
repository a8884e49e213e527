"""Adopting an existing cargo index: one publish per line found, confirmed against the source.

:func:`import_index` fetches the source's branch into a bare clone, walks every crate file at its
head and records each version through the batched path (actor ``import``, yank state kept,
lines in file order). Lines that cannot be adopted are refused and reported by path and line
number without stopping, and so are, by path (line 0), a symbolic link, a directory or a
submodule where a crate file would be and a crate file under an invalid name; versions already
recorded count as present, so a second import adds nothing. A source that is not a cargo index
(a folder that is not a git repository, a ``config.json`` that is not a JSON object) is refused
before anything is recorded.

The versions were read from the index itself, so each sync job the import creates is
confirmed in the same transaction that records it: ``IndexPushConfirmed`` at the source's head,
with the crate's file as read, then ``IndexSyncCompleted``. The audit therefore sees the
adopted index as holding what it holds, and the worker has nothing to push for it.

What a crate file's confirmation lists: every line that parses, belongs to that file's crate
and is the first of its version (build metadata ignored). A line the ledger refuses for its
state (a name spelled differently from the registered one, a deleted version) is still listed:
the index holds it, so the audit reports it as a phantom instead of hiding it.

Parsing and checking the lines costs more than recording them, so for a large index other
processes (spawned, one per CPU up to :data:`MAX_READ_PROCESSES`) read and check the crate files
while this one records them, in the same order and with the same result as reading here.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ledger.domain.aggregates import IMPORT_ACTOR
from ledger.domain.errors import Invalid, InvalidLine, NotFound
from ledger.domain.index_format import parse_file
from ledger.domain.names import crate_from_path, index_path, layout_problem
from ledger.logs import log_step
from ledger.progress import report
from ledger.services.publishing import CheckedLine, Confirmation
from ledger.settings import check_index_url, redact

if TYPE_CHECKING:
    from ledger.ports import IndexTarget, OpenTarget
    from ledger.services.core import LedgerCore

ACTOR = IMPORT_ACTOR
METHOD = "import: read from the remote"
CONFIG_PATH = "config.json"
EVENTS_PER_SAVE = 20_000
EVENTS_PER_FILE = 4  # beside one per line: registered, enqueued, confirmed, completed
MAX_READ_PROCESSES = 4
READ_PROCESSES = min(os.cpu_count() or 1, MAX_READ_PROCESSES)
"""Processes that read and check crate files while this one records them (1: read here)."""
PARALLEL_FILES = 4000
"""Below this many crate files everything is read in this process: readers would not pay off."""
FILES_PER_TASK = 500
TASKS_AHEAD = 4
"""Tasks queued per reading process: bounds the files read but not yet recorded."""
GC_THRESHOLD = 200_000
"""The youngest generation's collection threshold during an import (Python's default is 700):
an import allocates millions of objects that live until their save, and frequent collections
walk them again and again."""


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


class _CrateFile(NamedTuple):
    """One crate file as read: the lines to record, the entries the index holds, the refusals."""

    path: str
    read: int
    """Non-empty lines read."""
    lines: list[tuple[int, CheckedLine]]
    entries: list[list[Any]]
    refused: list[tuple[int, str]]


def read_crate_file(path: str, data: bytes) -> _CrateFile:
    """Parse a crate file leniently: refuse what cannot be adopted, keep the rest in order."""
    lines: list[tuple[int, CheckedLine]] = []
    entries: list[list[Any]] = []
    refused: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    read = 0
    for number, parsed in parse_file(data):
        read += 1
        if isinstance(parsed, InvalidLine):
            refused.append((number, parsed.message))
            continue
        if index_path(parsed.name) != path:
            refused.append((number, f"the line is for crate {parsed.name!r}, whose file is not {path}"))
            continue
        first = seen.get(parsed.key)
        if first is not None:
            msg = (
                f"{parsed.name} {parsed.vers} repeats the version of line {first} "
                "(build metadata ignored); the first line is kept"
            )
            refused.append((number, msg))
            continue
        seen[parsed.key] = number
        rendered = parsed.render()
        digest = parsed.content_digest()
        line = CheckedLine(
            parsed.name, parsed.vers, parsed.key, parsed.cksum, parsed.yanked, rendered.decode()
        )
        lines.append((number, line))
        entries.append([parsed.vers, parsed.key, parsed.yanked, digest])
    return _CrateFile(path, read, lines, entries, refused)


def import_index(
    ledger: LedgerCore,
    source: str,
    *,
    branch: str | None = None,
    clone_dir: Path | None = None,
    events_per_save: int = EVENTS_PER_SAVE,
    readers: int | None = None,
) -> ImportResult:
    """Adopt the cargo index at ``source`` (a path, file://, git:// or http(s):// URL).

    The source is fetched into ``clone_dir``; by default a folder beside the ledger's own index
    clone (its name + ``-import``) when the settings place one, else a temporary folder.
    Raises :class:`~ledger.domain.errors.NotFound` when the source has no such branch and
    :class:`~ledger.domain.errors.RemoteUnavailable` when it cannot be read.

    ``readers`` processes (default :data:`READ_PROCESSES`) read and check the crate files of a
    large index while this process records them; the result is the same as reading here.
    """
    started = time.monotonic()
    check_index_url(source)
    _check_local_source(source)
    shown = redact(source)
    branch = branch or ledger.settings.branch
    result = ImportResult(source=shown)
    log_step("import_started", source=shown, branch=branch)
    with _clone_folder(ledger, clone_dir) as folder:
        index = ledger.open_target(
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
            check_config(index.read_blob(head, CONFIG_PATH), shown)
            adoption = _Adoption(ledger, result, head, events_per_save)
            files, odd = index.tree_files(head)
            for path, what in sorted(odd.items()):
                adoption.refuse_path(path, f"{path} is {what}: not adopted")
            paths = adoption.crate_paths(files)
            adoption.total = len(paths)
            count = READ_PROCESSES if readers is None else readers
            with _fewer_collections():
                if count > 1 and len(paths) >= PARALLEL_FILES:
                    adoption.run(_read_elsewhere(ledger.open_target, folder, branch, head, paths, count))
                else:
                    adoption.run(read_crate_file(path, index.read_blob(head, path) or b"") for path in paths)
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


def adopt_files(ledger: LedgerCore, source: str, head: str, files: dict[str, bytes]) -> ImportResult:
    """Adopt the lines of these crate files, read from the index at ``head``, as an import does.

    The worker's adoption on first touch: each file's lines the ledger has no record of are
    recorded with actor ``import`` (those it has are present), and the job that carries them is
    confirmed at ``head`` with the file as read.
    """
    result = ImportResult(source=redact(source), head=head)
    _Adoption(ledger, result, head, EVENTS_PER_SAVE).run(
        read_crate_file(path, data) for path, data in files.items()
    )
    log_step(
        "adopted",
        source=result.source,
        head=head,
        files=result.files,
        accepted=result.accepted,
        present=result.present,
        refused=len(result.refused),
    )
    return result


def _check_local_source(source: str) -> None:
    """A path (or file:// URL) must be a git repository: Invalid naming what it is instead."""
    if ("://" in source and not source.startswith("file://")) or source.startswith("sparse+"):
        return
    folder = Path(source.removeprefix("file://"))
    if not folder.exists():
        msg = f"{source!r} does not exist: import-index reads a cargo index's git repository"
    elif not folder.is_dir():
        msg = f"{source!r} is a file, not a folder: import-index reads a cargo index's git repository"
    elif not (folder / "HEAD").is_file() and not (folder / ".git").exists():
        msg = (
            f"{source!r} is a folder but not a git repository: import-index reads the index's "
            "commits, never the files of a folder"
        )
    else:
        return
    raise Invalid(msg, source=source)


def check_config(data: bytes | None, source: str) -> None:
    """``config.json`` of an index to adopt, when present, must be the JSON object cargo reads
    (``dl`` and ``api`` strings where given); anything else means the source is not a cargo
    index: Invalid, and nothing is recorded."""
    if data is None:
        return
    problem = None
    try:
        config = json.loads(data.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"is not JSON ({exc})"
    else:
        if not isinstance(config, dict):
            problem = f"must be a JSON object, not {type(config).__name__}"
        elif "dl" in config and not isinstance(config["dl"], str):
            problem = 'has a "dl" that is not a string (where cargo downloads crates from)'
        elif "api" in config and not isinstance(config["api"], str | None):
            problem = 'has an "api" that is not a string'
    if problem is not None:
        msg = f"config.json of {source} {problem}: it is not a cargo index; nothing was imported"
        raise Invalid(msg, source=source, path=CONFIG_PATH)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@contextmanager
def _clone_folder(ledger: LedgerCore, configured: Path | None) -> Iterator[Path]:
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


def _derived_folder(ledger: LedgerCore) -> Path | None:
    """Beside the ledger's index clone when the settings place it (index dir or SQLite file)."""
    own = ledger.index_dir
    return None if own is None else own.with_name(own.name + "-import")


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect the youngest generation less often for the duration (see :data:`GC_THRESHOLD`)."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _read_elsewhere(
    open_target: OpenTarget, folder: Path, branch: str, head: str, paths: list[str], processes: int
) -> Iterator[_CrateFile]:
    """The crate files at ``paths``, read and checked by ``processes`` other processes, in order.

    Each opens the clone the source was fetched into with ``open_target`` (a module-level
    function, so it reaches them by name); at most :data:`TASKS_AHEAD` tasks per
    process wait to be recorded, so memory stays bounded however fast they read. A reader that
    dies makes the import fail (``BrokenProcessPool``) rather than wait for it.
    """
    tasks = (paths[i : i + FILES_PER_TASK] for i in range(0, len(paths), FILES_PER_TASK))
    # Spawned, not forked: a forked reader would share this process's store connections, and
    # anything it did to them (a finaliser run by its garbage collector) would corrupt them.
    # As with any spawned process, the caller's main module is imported again in each reader,
    # under another name: a script must keep its work behind ``if __name__ == "__main__"``.
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_open_reader,
        initargs=(open_target, str(folder), branch, head),
    )
    try:
        waiting: deque[Future[list[_CrateFile]]] = deque()
        for task in tasks:
            waiting.append(pool.submit(_read_task, task))
            if len(waiting) >= processes * TASKS_AHEAD:
                yield from waiting.popleft().result()
        while waiting:
            yield from waiting.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_reader: tuple[IndexTarget, str] | None = None
"""In a reading process: the clone and the commit to read."""


def _open_reader(open_target: OpenTarget, folder: str, branch: str, head: str) -> None:
    global _reader  # noqa: PLW0603  (one per reading process, set by the pool's initializer)
    gc.set_threshold(max(GC_THRESHOLD, gc.get_threshold()[0]), *gc.get_threshold()[1:])
    _reader = (open_target(Path(folder), folder, branch=branch), head)


def _read_task(paths: list[str]) -> list[_CrateFile]:
    assert _reader is not None
    index, head = _reader
    return [read_crate_file(path, index.read_blob(head, path) or b"") for path in paths]


class _Adoption:
    """Records crate files in chunks through the batched path, and confirms the jobs created."""

    def __init__(self, ledger: LedgerCore, result: ImportResult, head: str, events_per_save: int) -> None:
        self.ledger = ledger
        self.result = result
        self.head = head
        self.events_per_save = events_per_save
        self.chunk: dict[str, _CrateFile] = {}
        self.chunk_events = 0
        self.total: int | None = None
        """Crate files to read, for the progress display (None: unknown)."""

    def crate_paths(self, paths: Iterable[str]) -> list[str]:
        """The crate files among ``paths``; the others (but ``config.json``) count as ignored."""
        found: list[str] = []
        for path in paths:
            if path == CONFIG_PATH:
                continue
            if crate_from_path(path) is None:
                problem = layout_problem(path)
                if problem is not None:
                    self.refuse_path(path, f"{path} is not adopted: {problem}")
                else:
                    self.result.ignored_paths += 1
                continue
            found.append(path)
        return found

    def run(self, files: Iterable[_CrateFile]) -> None:
        for crate_file in files:
            self.result.files += 1
            report("import: crate files", self.result.files, self.total)
            self.result.lines += crate_file.read
            for number, error in crate_file.refused:
                self._refuse(crate_file.path, number, error)
            if crate_file.lines:
                self.chunk[crate_file.path] = crate_file
                self.chunk_events += len(crate_file.lines) + EVENTS_PER_FILE
            if self.chunk_events >= self.events_per_save:
                self._record()
        self._record()
        self.result.refused.sort(key=lambda r: (r.path, r.line))

    def refuse_path(self, path: str, error: str) -> None:
        """A whole path refused (line 0): something that is not a crate file where one would be."""
        self._refuse(path, 0, error)

    def _refuse(self, path: str, line: int, error: str) -> None:
        self.result.refused.append(RefusedLine(path, line, error))

    def _record(self) -> None:
        """Record the chunk's lines through the batched path, in one save; confirm its jobs."""
        if not self.chunk:
            return
        origins: list[tuple[str, int]] = []

        def numbered() -> Iterator[tuple[int, CheckedLine]]:
            for crate_file in self.chunk.values():
                for number, line in crate_file.lines:
                    origins.append((crate_file.path, number))
                    yield len(origins) - 1, line

        bulk = self.ledger.app.publish_many(
            numbered(),
            ACTOR,
            events_per_save=self.chunk_events + 1,
            keep_yanked=True,
            confirm=self._confirm,
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

    def _confirm(self, lines: Sequence[CheckedLine]) -> Confirmation:
        """The versions were read from the remote at ``head``: the job is done as it is created."""
        path = index_path(lines[0].name)
        self.result.confirmed_jobs += 1
        return Confirmation(self.head, self.head, METHOD, path, self.ledger.target, self.chunk[path].entries)
