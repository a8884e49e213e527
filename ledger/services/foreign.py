"""Lines the ledger cannot account for: what a crate's real file holds beyond the ledger's record.

Before a writer replaces a crate's file it reads the file at the head it builds on. A line is
the ledger's when the ledger has a record of its version for that crate (published, yanked or
deleted, build metadata ignored): the ledger's events say what that line must be, or that it
must go. Every other line is **foreign**: a version published before the ledger arrived, or
written to the index behind its back. A foreign line is never removed or changed by a write;
it is adopted (recorded as imported, its bytes kept) or the write waits for the operator.

A foreign line can be adopted as it stands only when it is a valid index line of this file's
crate, the first of its version in the file, and in the compact form the ledger writes (the
form cargo registries write): anything else would change its bytes.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.errors import InvalidLine
from ledger.domain.index_format import parse_line
from ledger.domain.names import collision_key, crate_from_path, index_path
from ledger.domain.real_lines import Known, ReadLine, numbered_lines, read_line
from projections.queries import VersionRow


@dataclass(frozen=True)
class ForeignLine:
    """A line of the real file that the ledger has no record of."""

    number: int
    raw: bytes
    version: str | None
    adoptable: bool
    why_not: str | None = None

    @property
    def label(self) -> str:
        return self.version if self.version is not None else f"line {self.number}"


@dataclass
class Finding:
    """One crate file as read: its entries and its foreign lines."""

    path: str
    entries: list[list[Any]] = field(default_factory=list)
    """The file's readable lines as index view entries, the first of each version."""
    foreign: list[ForeignLine] = field(default_factory=list)
    not_a_file: str | None = None
    """What the path is when it is not a regular file (a directory, a symlink, a submodule)."""

    @property
    def held(self) -> bool:
        """A write to this path would remove or change something the ledger cannot account for."""
        return bool(self.foreign) or self.not_a_file is not None

    @property
    def labels(self) -> list[str]:
        if self.not_a_file is not None:
            return [f"the {self.not_a_file} at {self.path}"]
        return [line.label for line in self.foreign]

    @property
    def adoptable(self) -> bool:
        return self.not_a_file is None and bool(self.foreign) and all(line.adoptable for line in self.foreign)


def find_foreign(crate_key: str, path: str, data: bytes | None, recorded: Sequence[VersionRow]) -> Finding:
    """The lines of ``data`` (the file at ``path``) that ``recorded`` (every version the ledger
    has a record of for the crate, deleted ones included) does not account for.

    A line is the ledger's when its version is one the ledger recorded, spelled as recorded: a
    line for ``1.3.1+1`` where the ledger has ``1.3.1`` (one version once build metadata is
    ignored, two lines in the index) is foreign, and cannot be adopted.
    """
    finding = Finding(path)
    if not data:
        return finding
    spelling = {row.key: row.version for row in recorded}
    known: Known = {row.digest: (row.version, row.key, "") for row in recorded}
    first_of: dict[str, str | None] = {}
    for number, raw in numbered_lines(data):
        line = read_line(number, raw, known)
        earlier = first_of.get(line.key) if line.key is not None else None
        if line.key is not None and line.key not in first_of:
            first_of[line.key] = line.version
            finding.entries.append(line.entry)
        ours = line.key is not None and spelling.get(line.key) == line.version
        if ours and _of_crate(line, crate_key):
            continue
        recorded_as = spelling.get(line.key) if line.key is not None else None
        why = _why_not_adoptable(line, path, crate_key, recorded_as=recorded_as, earlier=earlier)
        finding.foreign.append(ForeignLine(line.number, line.raw, line.version, why is None, why))
    return finding


def _of_crate(line: ReadLine, crate_key: str) -> bool:
    """A line identified by digest carries no name (it is a known line of this crate)."""
    return not line.name or collision_key(line.name) == crate_key


def _why_not_adoptable(
    line: ReadLine, path: str, crate_key: str, *, recorded_as: str | None, earlier: str | None
) -> str | None:
    if line.error is not None or line.key is None:
        return f"not a valid index line: {line.error}"
    if line.name is not None and (collision_key(line.name) != crate_key or index_path(line.name) != path):
        return f"a line for the crate {line.name}, whose file is not {path}"
    if recorded_as is not None:
        return (
            f"the ledger has this version as {recorded_as} (build metadata ignored), and keeps one "
            "line per version"
        )
    if earlier is not None:
        return f"repeats version {earlier} of an earlier line (build metadata ignored)"
    if not _compact(line.raw):
        return "not in the compact form the ledger writes: adopting it would change its bytes"
    return None


def _compact(raw: bytes) -> bool:
    """The line is exactly what the ledger would write for it (so adopting it keeps its bytes)."""
    try:
        return parse_line(raw).render() == raw
    except InvalidLine:
        return False


def held_reason(finding: Finding, head: str, remote: str) -> str:
    """What the operator reads in the job's history and in the worker's output."""
    if finding.not_a_file is not None:
        return (
            f"{finding.path} at {head[:12]} is a {finding.not_a_file}, not a crate file; nothing was "
            "pushed over it. Move it out of the way in the index, then run the worker again."
        )
    shown = ", ".join(finding.labels[:10]) + (
        f" and {len(finding.labels) - 10} more" if len(finding.labels) > 10 else ""
    )
    text = (
        f"{finding.path} at {head[:12]} holds {len(finding.foreign)} line(s) the ledger has no "
        f"record of ({shown}); nothing was pushed over them."
    )
    blocked = [line for line in finding.foreign if not line.adoptable]
    if blocked:
        text += " " + "; ".join(f"{b.label} cannot be adopted as it stands: {b.why_not}" for b in blocked[:5])
        text += (
            ". Fix or remove those lines in the index (`ledger repair --remove-phantoms` removes "
            "lines the registry does not hold, and records it), then run the worker again."
        )
    else:
        text += (
            f" Adopt them with `ledger import-index {remote}`, or run the worker with "
            "--adopt-foreign to adopt a crate's lines when it first writes to it."
        )
    return text


def unadopted_paths(crate_paths: Iterable[str], recorded_keys: Container[str]) -> list[str]:
    """The crate files among ``crate_paths`` whose crate the ledger has no record of at all."""
    found: list[str] = []
    for path in crate_paths:
        name = crate_from_path(path)
        if name is not None and collision_key(name) not in recorded_keys:
            found.append(path)
    return found
