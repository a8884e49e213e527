"""What a repair keeps between runs, in the index target's local folder, so that planning reads
only what changed: each crate's fingerprint in the database view (with the log position and the
hash chain's link it was read at), and each crate file's shape at the last head planned.

A missing, damaged or foreign copy means reading everything, as the first time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ledger.domain.names import collision_key, crate_from_path
from ledger.domain.real_lines import file_fingerprint, fingerprint, tag, well_formed
from ledger.ports import Database, EventLog
from projections.crates import registry_fingerprints
from projections.queries import versions_changed_since, views_position
from projections.runner import TRACKING_NAME

if TYPE_CHECKING:
    from ledger.ports import IndexTarget

SHAPES_FILE = "ledger-file-shapes"
"""Beside the clone's objects: each file's shape at one commit (see ``file_shapes``)."""


SHAPES_HEADER = "ledger file shapes 2"


REGISTRY_FILE = "ledger-registry-fingerprints"
"""Beside the clone: the database view's fingerprints at one log position (see ``registry``)."""


REGISTRY_HEADER = "ledger registry fingerprints 1"


Fingerprints: TypeAlias = dict[str, tuple[str, str | None]]


def cached_registry(db: Database, log: EventLog, store: Path) -> Fingerprints:
    """:func:`~ledger.services.scan.registry_fingerprints` (ordered), read again only where it changed.

    The fingerprints are kept at ``store`` with the views' log position and the hash chain's
    link there, which stands for the whole log up to it. When the store's link at that position
    is the same, only the crates with a row of the database view changed after it (every insert
    and update of a row sets its ``updated_pos``) are read again; otherwise all of them.
    """
    position = views_position(db, TRACKING_NAME)
    saved_position, saved_link, found = _load_registry(store)
    if saved_position is None or saved_position > position or log.chain_link(saved_position) != saved_link:
        found = registry_fingerprints(db, ordered=True)
    else:
        found.update(_fingerprints_of(versions_changed_since(db, saved_position)))
        if saved_position == position:
            return found
    link = log.chain_link(position)
    if link is not None:
        _save_registry(store, position, link, found)
    return found


def _fingerprints_of(rows: Iterable[tuple[Any, ...]]) -> Fingerprints:
    """Each crate's spelling and ordered fingerprint from its rows in publication order."""
    found: Fingerprints = {}
    for crate_key, group in groupby(rows, key=lambda row: row[0]):
        rows_of = list(group)
        tags = [tag(digest, state == "yanked") for _, _, digest, state in rows_of if state != "deleted"]
        found[crate_key] = (rows_of[0][1], fingerprint(tags, ordered=True))
    return found


def _load_registry(store: Path) -> tuple[int | None, str | None, Fingerprints]:
    try:
        lines = store.read_text(encoding="utf-8").split("\n")
        if len(lines) < 4 or lines[0] != REGISTRY_HEADER or lines[-1] != "":
            return None, None, {}
        found: Fingerprints = {}
        for line in lines[3:-1]:
            key, name, digest = line.split("\t")
            found[key] = (name, digest or None)
        return int(lines[1]), lines[2], found
    except (OSError, UnicodeDecodeError, ValueError):
        return None, None, {}


def _save_registry(store: Path, position: int, link: str, found: Fingerprints) -> None:
    rows = [f"{key}\t{name}\t{digest or ''}" for key, (name, digest) in found.items()]
    _replace(store, [REGISTRY_HEADER, str(position), link, *rows, ""])


def _replace(store: Path, lines: list[str]) -> None:
    """Replace ``store`` at once (a reader sees the old file or the new one, never a part)."""
    temporary = store.with_name(f"{store.name}.{os.getpid()}")
    try:
        temporary.write_text("\n".join(lines), encoding="utf-8")
        temporary.replace(store)
    except OSError:  # only a cache: the next plan reads everything again
        temporary.unlink(missing_ok=True)


Shape: TypeAlias = tuple[bool, str | None, str | None, str | None]
"""What planning asks of a file: ``well_formed`` and the ordered ``file_fingerprint`` of its
bytes, the crate its path is for (``crate_from_path``) and that crate's ``collision_key``."""


def _shape(path: str, data: bytes) -> Shape:
    name = crate_from_path(path)
    key = None if name is None else collision_key(name)
    return well_formed(data), file_fingerprint(data, ordered=True), name, key


def file_shapes(index: IndexTarget, head: str | None) -> Iterator[tuple[str, Shape, bytes | None]]:
    """Every file at ``head`` with its :data:`Shape`, and its bytes when they were read.

    Both are functions of a file's bytes alone, so they are kept beside the clone
    (:data:`SHAPES_FILE`) for the commit they were computed at; the next plan reads only the
    files git says differ between that commit and ``head``, and takes the rest as kept.
    """
    if head is None:
        return
    store = index.path / SHAPES_FILE
    base, known = _load_shapes(store)
    changed: set[str] | None = None
    if base is not None:
        try:
            changed = set(index.changed_paths(base, head))
        except ValueError:  # that commit is no longer in the clone
            changed = None
    shapes: dict[str, Shape] = {}
    if changed is None:
        for path, data in index.files_unordered(head):
            shape = shapes[path] = _shape(path, data)
            yield path, shape, data
    else:
        for path, shape in known.items():
            if path not in changed:
                shapes[path] = shape
                yield path, shape, None
        for path in sorted(changed):
            found = index.read_blob(head, path)
            if found is not None:
                shape = shapes[path] = _shape(path, found)
                yield path, shape, found
    if changed is None or changed or base != head:
        _save_shapes(store, head, shapes)


def _load_shapes(store: Path) -> tuple[str | None, dict[str, Shape]]:
    """The commit and the shapes saved at ``store``; nothing when it is missing or unreadable."""
    try:
        text = store.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, {}
    lines = text.split("\n")
    if not lines or lines[0] != SHAPES_HEADER or len(lines) < 3 or lines[-1] != "":
        return None, {}
    shapes: dict[str, Shape] = {}
    try:
        for line in lines[2:-1]:
            path, formed, fp, name, key = line.split("\t")
            shapes[path] = (formed == "1", fp or None, name or None, key or None)
    except ValueError:
        return None, {}
    return lines[1], shapes


def _save_shapes(store: Path, head: str, shapes: dict[str, Shape]) -> None:
    """Save the shapes; nothing when a path holds a tab or a line break, which the format cannot."""
    if any(mark in path for path in shapes for mark in "\t\n\r"):
        store.unlink(missing_ok=True)
        return
    rows = [
        f"{path}\t{int(formed)}\t{fp or ''}\t{name or ''}\t{key or ''}"
        for path, (formed, fp, name, key) in shapes.items()
    ]
    _replace(store, [SHAPES_HEADER, head, *rows, ""])
