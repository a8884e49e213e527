"""Readers for the real crates.io publication record in ``shared/data/crates-io-2024``.

The record lists crate names and version strings only (see the folder's README): the baseline
(every non-yanked version on 2024-04-29, oldest first within a crate) and the trace (publishes,
yanks and unyanks over the following 102 days). :func:`index_line` turns a (crate, version)
pair into a deterministic, valid cargo index line, and :func:`baseline_files` renders the whole
baseline as cargo index files, for benchmarks, load tests and realistic fixtures.

The folder is found through ``LEDGER_DATA_DIR`` (the folder itself or its parent), else by
walking up from the current directory and from this file's directory looking for
``shared/data/crates-io-2024``. When it is absent, :class:`DataMissing` says where it looked.

Rows whose name breaks the ledger's name rules or whose version is not strict SemVer are
skipped and counted in a :class:`ReadStats`, never raised.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ledger.domain.errors import InvalidName, InvalidVersion
from ledger.domain.names import collision_key, index_path, validate_name
from ledger.domain.versions import parse_version

DATA_ENV = "LEDGER_DATA_DIR"
DATASET = "crates-io-2024"
BASELINE = "baseline.tsv.gz"
TRACE = "trace.tsv.gz"
BASELINE_ROWS = 1_050_952
TRACE_ROWS = 103_562

DATA_MISSING = (
    f"the real publication data ({DATASET}/{BASELINE} and {TRACE}) was not found: set "
    f"{DATA_ENV} to the folder, or run from a checkout that has shared/data/{DATASET} "
    "in one of its parent folders"
)
"""The message of :class:`DataMissing`, without the list of places searched."""

TRACE_EVENTS = ("publish", "yank", "unyank")
MAX_DEPS = 3


class DataMissing(FileNotFoundError):
    """The real data folder is absent; the message says how to point at it."""

    def __init__(self, searched: Sequence[Path]) -> None:
        places = ", ".join(str(p) for p in searched) or "nowhere"
        super().__init__(f"{DATA_MISSING} (looked in: {places})")
        self.searched = list(searched)


class TraceEvent(NamedTuple):
    """One change seen in a 15-minute window; ``unix_ts`` is the end of that window."""

    unix_ts: int
    event: str
    crate: str
    version: str


@dataclass
class ReadStats:
    """What a reader read and what it skipped (with a few examples of each)."""

    rows: int = 0
    yielded: int = 0
    bad_names: int = 0
    bad_versions: int = 0
    bad_rows: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.bad_names + self.bad_versions + self.bad_rows

    def _skip(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 10:
            self.examples.append(detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "yielded": self.yielded,
            "bad_names": self.bad_names,
            "bad_versions": self.bad_versions,
            "bad_rows": self.bad_rows,
            "examples": list(self.examples),
        }


# -- locating the data ----------------------------------------------------------------------


def _has_data(folder: Path) -> bool:
    return (folder / BASELINE).is_file() and (folder / TRACE).is_file()


def data_dir() -> Path:
    """The ``crates-io-2024`` folder, or :class:`DataMissing` naming every place searched."""
    searched: list[Path] = []
    configured = os.environ.get(DATA_ENV)
    if configured:
        base = Path(configured).expanduser()
        for candidate in (base, base / DATASET):
            searched.append(candidate)
            if _has_data(candidate):
                return candidate
        raise DataMissing(searched)
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data" / DATASET
            if candidate in searched:
                continue
            searched.append(candidate)
            if _has_data(candidate):
                return candidate
    raise DataMissing(searched)


def data_available() -> bool:
    """Whether the real data folder can be found."""
    try:
        data_dir()
    except DataMissing:
        return False
    return True


def _rows(name: str) -> Iterator[list[str]]:
    with gzip.open(data_dir() / name, "rt", encoding="utf-8", newline="\n") as source:
        for raw in source:
            yield raw.rstrip("\n").split("\t")


def _valid(crate: str, version: str, stats: ReadStats) -> bool:
    try:
        validate_name(crate)
    except InvalidName as exc:
        stats._skip("bad_names", exc.message)
        return False
    try:
        parse_version(version)
    except InvalidVersion as exc:
        stats._skip("bad_versions", f"{crate}: {exc.message}")
        return False
    return True


# -- readers --------------------------------------------------------------------------------


def baseline(limit: int | None = None, *, stats: ReadStats | None = None) -> Iterator[tuple[str, str]]:
    """Every valid (crate, version) of the baseline, in file order, at most ``limit`` of them."""
    stats = stats if stats is not None else ReadStats()
    if limit is not None and limit <= 0:
        return
    for row in _rows(BASELINE):
        stats.rows += 1
        if len(row) != 2:
            stats._skip("bad_rows", f"baseline row {stats.rows}: {len(row)} columns, not 2")
            continue
        crate, version = row
        if not _valid(crate, version, stats):
            continue
        stats.yielded += 1
        yield crate, version
        if limit is not None and stats.yielded >= limit:
            return


def trace(limit: int | None = None, *, stats: ReadStats | None = None) -> Iterator[TraceEvent]:
    """Every valid event of the trace, oldest first, at most ``limit`` of them."""
    stats = stats if stats is not None else ReadStats()
    if limit is not None and limit <= 0:
        return
    for row in _rows(TRACE):
        stats.rows += 1
        if len(row) != 4 or not row[0].isdigit() or row[1] not in TRACE_EVENTS:
            stats._skip("bad_rows", f"trace row {stats.rows}: {row!r}")
            continue
        ts, kind, crate, version = row
        if not _valid(crate, version, stats):
            continue
        stats.yielded += 1
        yield TraceEvent(int(ts), kind, crate, version)
        if limit is not None and stats.yielded >= limit:
            return


# -- index lines ----------------------------------------------------------------------------


def checksum(crate: str, version: str) -> str:
    """The stand-in checksum of a version: SHA-256 hex of ``crate@version``."""
    return hashlib.sha256(f"{crate}@{version}".encode()).hexdigest()


def _deps(crate: str, digest: bytes, pool: Sequence[str]) -> list[dict[str, Any]]:
    """0 to 3 dependencies on crates of ``pool``, chosen by the bytes of ``digest``."""
    if not pool:
        return []
    own = collision_key(crate)
    chosen: dict[str, dict[str, Any]] = {}
    for i in range(digest[0] % (MAX_DEPS + 1)):
        pick = digest[1 + 4 * i : 5 + 4 * i]
        name = pool[int.from_bytes(pick, "big") % len(pool)]
        if collision_key(name) == own or name in chosen:
            continue
        shape = digest[20 + i]
        req = f"^{shape % 3}" if shape % 3 else f"^0.{shape % 10}"
        chosen[name] = {
            "name": name,
            "req": req,
            "features": [],
            "optional": shape % 7 == 0,
            "default_features": True,
            "target": None,
            "kind": "dev" if shape % 5 == 0 else "normal",
        }
    return [chosen[name] for name in sorted(chosen)]


def index_line(crate: str, version: str, *, deps_pool: Sequence[str] | None = None) -> dict[str, Any]:
    """A deterministic, valid cargo index line for ``crate`` ``version``.

    The checksum is SHA-256 of ``crate@version``; features are empty; with a ``deps_pool``
    (names of earlier crates of the data) the line depends on 0 to 3 of them, chosen from
    the same hash, so equal arguments always give an equal line.
    """
    digest = hashlib.sha256(f"{crate}@{version}".encode()).digest()
    return {
        "name": crate,
        "vers": version,
        "deps": _deps(crate, digest, deps_pool or ()),
        "cksum": digest.hex(),
        "features": {},
        "yanked": False,
    }


def render_line(line: dict[str, Any]) -> bytes:
    """An index line's compact JSON, as the ledger writes it into the index."""
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def baseline_files(
    limit: int | None = None, *, deps: bool = True, stats: ReadStats | None = None
) -> Iterator[tuple[str, bytes]]:
    """The baseline as cargo index files: ``(index_path, content)``, one per crate.

    Lines keep baseline order (oldest first). ``limit`` counts crates. With ``deps`` each line
    depends on crates that come before its own in the baseline.
    """
    if limit is not None and limit <= 0:
        return
    pool: list[str] = []
    crate: str | None = None
    lines: list[bytes] = []
    for name, version in baseline(stats=stats):
        if name != crate:
            if crate is not None:
                yield index_path(crate), b"".join(line + b"\n" for line in lines)
                pool.append(crate)
                if limit is not None and len(pool) >= limit:
                    return
            crate, lines = name, []
        lines.append(render_line(index_line(name, version, deps_pool=pool if deps else None)))
    if crate is not None:
        yield index_path(crate), b"".join(line + b"\n" for line in lines)
