"""Repair: make the real index equal to the database view, in one commit, proven by reading back.

:func:`repair` reads every crate file at the remote's head and plans, for each file that differs
from what the database view says (the worker's own regeneration: versions in publication order,
yanked flag from the latest state, deleted versions absent), the change that makes it equal.
Lines the database view lacks or deleted (phantoms) are reported; they are removed only with
``remove_phantoms``. Without it a phantom line stays exactly as it is, after the ledger's lines
and in its original order, and a file that holds nothing but phantoms is left alone.
``config.json`` is written when missing.

All changes go into one commit on the fetched head (for an empty remote, or when very many
files change, one commit whose tree holds every file), which is pushed and read back; then
``RepairApplied`` records what changed, what the pusher said and whether the remote holds it.
The index-writer lease is held throughout, so no worker writes at the same time.

Repair is idempotent: a second run finds every file as planned and changes nothing. A dry run
plans exactly the same changes and touches nothing: no event, no commit, no push.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledger.domain.aggregates import IndexRemote
from ledger.domain.errors import LockHeld, RemoteUnavailable
from ledger.domain.index_format import render_fields
from ledger.domain.names import collision_key, crate_from_path, index_path
from ledger.domain.real_lines import (
    ReadLine,
    line_tag,
    numbered_lines,
    read_line,
)
from ledger.logs import log_step
from ledger.ports import Database, EventLog, Lease
from ledger.progress import report
from ledger.services.repair_caches import REGISTRY_FILE, cached_registry, file_shapes
from ledger.services.restore import adopt_lost_lines, find_lost_lines
from ledger.services.scan import CONFIG_PATH, Scope, save_remote_events
from projections.crates import Registered, chunks, known_lines, load_registered
from projections.queries import VersionRow

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ledger.ports import IndexTarget
    from ledger.services.core import LedgerCore

CHANGES_PER_EVENT = 2000
FULL_TREE_CHANGES = 20_000
"""Beyond this many changed files one commit is built from every file instead of path by path."""
LEASE_TTL = 300.0

_TRUE = b'"yanked":true'
_FALSE = b'"yanked":false'


@dataclass
class PlannedChange:
    """One file made equal to the database view (phantoms aside)."""

    crate: str
    path: str
    data: bytes | None
    entries: list[list[Any]]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    phantoms_kept: list[str] = field(default_factory=list)
    phantoms_removed: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "delete" if self.data is None else "write"

    def to_dict(self, *, entries: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {
            "crate": self.crate,
            "path": self.path,
            "action": self.action,
            "added": self.added,
            "removed": self.removed,
            "phantoms_kept": self.phantoms_kept,
            "phantoms_removed": self.phantoms_removed,
        }
        if entries:
            found["entries"] = self.entries
        return found


@dataclass
class RepairResult:
    """What a repair planned and, unless a dry run, wrote, pushed and read back."""

    dry_run: bool
    head: str | None
    changes: list[PlannedChange] = field(default_factory=list)
    phantoms: list[dict[str, Any]] = field(default_factory=list)
    restored: list[dict[str, Any]] = field(default_factory=list)
    """Lines the ledger's own commits removed without a record (``restore_lost``): recorded as
    imported and written back (a dry run only lists them)."""
    config: bool = False
    """``config.json`` was missing and is (or would be) written."""
    commit: str | None = None
    reported: str | None = None
    confirmed: bool = False
    """The remote was read back and holds the repair (or nothing needed changing)."""
    position: int = 0
    duration: float = 0.0

    @property
    def changed(self) -> int:
        """How many files the repair changes (crate files and ``config.json``)."""
        return len(self.changes) + self.config

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "commit": self.commit,
            "parent": self.head,
            "confirmed": self.confirmed,
            "dry_run": self.dry_run,
            "reported": self.reported,
            "config": self.config,
            "changes": [c.to_dict() for c in self.changes],
            "phantoms": self.phantoms,
            "restored": self.restored,
            "position": self.position,
            "seconds": round(self.duration, 3),
        }


def repair(
    ledger: LedgerCore,
    *,
    dry_run: bool = False,
    remove_phantoms: bool = False,
    restore_lost: bool = False,
    actor: str | None = None,
) -> RepairResult:
    """Make the real index equal to the database view (see the module's description).

    ``restore_lost`` first looks through the index's history for lines the ledger's own commits
    removed without a record (see :mod:`ledger.services.restore`) and records them as imported, so that
    this repair writes them back; a dry run lists them and records nothing.

    Raises :class:`~ledger.domain.errors.LockHeld` when another index writer holds the lease (nothing
    is touched) and :class:`~ledger.domain.errors.RemoteUnavailable` when the remote cannot be read.
    """
    started = time.monotonic()
    index = ledger.index()
    lease = None if dry_run else ledger.lease(_holder(), LEASE_TTL)
    if lease is not None:
        lease.acquire()
    try:
        ledger.views.catch_up()
        head = index.survey()  # the files as the target holds them (for git, its head)
        lost = find_lost_lines(ledger, index, head) if restore_lost else []
        if lost and not dry_run:
            adopt_lost_lines(ledger, lost)
        result = _Planner(ledger.db, ledger.log, remove_phantoms=remove_phantoms).plan(index, head)
        _leave_odd_entries(index, head, result)
        result.restored = [line.to_dict() for line in lost]
        result.dry_run = dry_run
        if not dry_run:
            assert lease is not None
            _apply(ledger, index, lease, result, actor or _actor())
    finally:
        if lease is not None:
            lease.release()
    result.duration = time.monotonic() - started
    log_step(
        "repair",
        dry_run=dry_run,
        changed=result.changed,
        phantoms=len(result.phantoms),
        restored=len(result.restored),
        commit=result.commit,
        parent=result.head,
        reported=result.reported,
        confirmed=result.confirmed,
        seconds=round(result.duration, 3),
    )
    return result


def _leave_odd_entries(index: IndexTarget, head: str | None, result: RepairResult) -> None:
    """Drop the planned changes to a path that is not a regular file in the index (a directory,
    a symbolic link, a submodule): writing there would remove what it holds. Reported instead."""
    kept: list[PlannedChange] = []
    for change in result.changes:
        kind = index.entry_kind(head, change.path)
        if kind in (None, "file"):
            kept.append(change)
            continue
        result.phantoms.append(
            {
                "crate": change.crate,
                "version": None,
                "path": change.path,
                "line_number": None,
                "reason": f"{change.path} is a {kind} in the index, not a crate file: left alone",
                "action": "kept",
            }
        )
    result.changes = kept


def config_bytes() -> bytes:
    """``config.json`` as the worker writes it into a new index."""
    from ledger.services.sync import DEFAULT_CONFIG

    return json.dumps(dict(DEFAULT_CONFIG), indent=2).encode() + b"\n"


def _holder() -> str:
    return f"repair@{socket.gethostname()}:{os.getpid()}"


def _actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"
    return f"{user}@{socket.gethostname()}"


# -- planning -----------------------------------------------------------------------------------


class _Planner:
    """Compares every crate file at head with the database view and plans the changes."""

    def __init__(self, db: Database, log: EventLog, *, remove_phantoms: bool) -> None:
        self.db = db
        self.log = log
        self.remove_phantoms = remove_phantoms

    def plan(self, index: IndexTarget, head: str | None) -> RepairResult:
        result = RepairResult(dry_run=True, head=head)
        registry = cached_registry(self.db, self.log, index.path / REGISTRY_FILE)
        scope: Scope = {}
        own_seen: set[str] = set()
        config = False
        for read, (path, (formed, fp, name, key), data) in enumerate(file_shapes(index, head), start=1):
            report("repair: reading the index", read)
            if path == CONFIG_PATH:
                config = True
                continue
            if name is None or key is None:
                continue
            registered = registry.get(key)
            if registered is not None and name == registered[0].lower():  # the crate's own file
                own_seen.add(key)
                if registered[1] is not None and formed and fp == registered[1]:
                    continue
            scope.setdefault(key, {})[path] = data if data is not None else index.read_blob(head, path)
        for key, (name, fp) in registry.items():
            if fp is not None and key not in own_seen:
                scope.setdefault(key, {})[index_path(name)] = None
        result.config = not config
        planned = 0
        for chunk in chunks(sorted(scope)):
            found = load_registered(self.db, chunk, with_lines=True)
            for key in chunk:
                self._plan_crate(key, scope[key], found.get(key), result)
            planned += len(chunk)
            report("repair: planning crate files", planned, len(scope))
        return result

    def _plan_crate(
        self,
        key: str,
        paths: dict[str, bytes | None],
        registered: Registered | None,
        result: RepairResult,
    ) -> None:
        own = registered.path if registered is not None else None
        live = registered.live if registered is not None else []
        expected_lines = rendered_lines(live)
        live_keys = {row.key: row.version for row in live}
        deleted = {row.key for row in registered.rows if row.state == "deleted"} if registered else set()
        known = known_lines(registered, None)
        versions = dict(zip(expected_lines, [row.version for row in live], strict=True))
        own_entries: list[list[Any]] = [[r.version, r.key, r.yanked, r.digest] for r in live]
        own_change: PlannedChange | None = None
        strays: list[PlannedChange] = []
        for path in sorted(paths):
            data = paths[path]
            lines = [read_line(n, raw, known) for n, raw in numbered_lines(data)]
            crate = registered.name if registered is not None else _line_name(key, lines, path)
            phantoms = [line for line in lines if path != own or not _is_ours(line, key, live_keys)]
            kept = [] if self.remove_phantoms else phantoms
            if path == own:
                if not expected_lines and kept:
                    new = data  # only phantoms: left alone
                else:
                    new_lines = expected_lines + [line.raw for line in kept]
                    new = b"".join(line + b"\n" for line in new_lines) if new_lines else None
                own_entries = _entries(own_entries, kept, key)
            else:
                new = data if kept else None
            self._report(result, crate, path, phantoms, key, deleted, own, live_keys)
            if new == data:
                continue
            change = PlannedChange(crate, path, new, [])
            change.added, change.removed = _line_changes(lines, new, versions)
            labels = [_label(line) for line in phantoms]
            if self.remove_phantoms:
                change.phantoms_removed = labels
            else:
                change.phantoms_kept = labels
            if path == own:
                own_change = change
            else:
                strays.append(change)
        for change in strays:
            change.entries = own_entries
        if own_change is not None:
            own_change.entries = own_entries
            strays.append(own_change)
        result.changes.extend(strays)

    def _report(
        self,
        result: RepairResult,
        crate: str,
        path: str,
        phantoms: list[ReadLine],
        key: str,
        deleted: set[str],
        own: str | None,
        live: dict[str, str],
    ) -> None:
        action = "removed" if self.remove_phantoms else "kept"
        for line in phantoms:
            if own is not None and path != own:
                why = f"in a file for a name colliding with {own}"
            elif line.key is None or line.name is None:
                why = f"not a valid index line: {line.error}"
            elif collision_key(line.name) != key:
                why = f"a line for the crate {line.name}"
            elif line.key in deleted:
                why = "deleted in the registry"
            elif line.key in live:
                why = f"another line for {live[line.key]} (build metadata ignored), which the registry holds"
            else:
                why = "foreign: the ledger has no record of it"
            result.phantoms.append(
                {
                    "crate": crate,
                    "version": line.version,
                    "path": path,
                    "line_number": line.number,
                    "reason": why,
                    "action": action,
                }
            )


def rendered_lines(rows: list[VersionRow]) -> list[bytes]:
    """The lines of :func:`~ledger.domain.crate_files.crate_file` for ``rows``, byte for byte.

    A row's stored line, with its ``yanked`` field set, is taken as it is when its digest
    proves it canonical (see :func:`~ledger.services.scan.line_tag`); any other is rendered anew.
    """
    lines: list[bytes] = []
    for row in rows:
        raw = row.line.encode()
        yanked = row.yanked
        raw = raw.replace(_FALSE, _TRUE, 1) if yanked else raw.replace(_TRUE, _FALSE, 1)
        if line_tag(raw) != (row.digest, yanked):
            raw = render_fields(json.loads(row.line), yanked=yanked)
        lines.append(raw)
    return lines


def _is_ours(line: ReadLine, key: str, live_keys: dict[str, str]) -> bool:
    """A line for one of the crate's live versions, spelled as registered: the ledger writes its
    own line instead. (A line for ``1.3.1+1`` where the registry has ``1.3.1`` is not its own.)"""
    return (
        line.key is not None
        and live_keys.get(line.key) == line.version
        and line.name is not None
        and collision_key(line.name) == key
    )


def _line_name(key: str, lines: list[ReadLine], path: str) -> str:
    for line in lines:
        if line.name is not None and collision_key(line.name) == key:
            return line.name
    return crate_from_path(path) or key


def _label(line: ReadLine) -> str:
    return line.version if line.version is not None else f"line {line.number}"


def _entries(ledger_entries: list[list[Any]], kept: list[ReadLine], key: str) -> list[list[Any]]:
    """The index view entries of the file as planned: the ledger's versions, then kept phantoms."""
    entries = {entry[1]: entry for entry in ledger_entries}
    for line in kept:
        if line.key is not None and line.name is not None and collision_key(line.name) == key:
            entries.setdefault(line.key, line.entry)
    return list(entries.values())


def _line_changes(
    lines: list[ReadLine], new: bytes | None, versions: dict[bytes, str]
) -> tuple[list[str], list[str]]:
    """The versions whose line a change adds, and the lines it removes (by version or number)."""
    new_lines = new.split(b"\n")[:-1] if new else []
    unmatched_old = Counter(line.raw for line in lines)
    added: list[str] = []
    for raw in new_lines:
        if unmatched_old[raw] > 0:
            unmatched_old[raw] -= 1
        else:
            added.append(versions.get(raw, "?"))
    unmatched_new = Counter(new_lines)
    removed: list[str] = []
    for line in lines:
        if unmatched_new[line.raw] > 0:
            unmatched_new[line.raw] -= 1
        else:
            removed.append(_label(line))
    return added, removed


# -- writing ------------------------------------------------------------------------------------


def _apply(ledger: LedgerCore, index: IndexTarget, lease: Lease, result: RepairResult, actor: str) -> None:
    """Commit, push and read back the planned changes, then record ``RepairApplied``."""
    if not result.changed:
        result.confirmed = True
        return
    files: dict[str, bytes | None] = {c.path: c.data for c in result.changes}
    if result.config:
        files[CONFIG_PATH] = config_bytes()
    message = _message(result)
    head = result.head
    if head is None or len(result.changes) > FULL_TREE_CHANGES:
        commit: str | None = index.build_commit(_full_tree(index, head, files), message, parent=head)
    else:
        commit = index.commit(head, files, message)
    if commit is None:  # the tree already holds every change
        result.changes, result.config, result.confirmed = [], False, True
        return
    if not lease.try_acquire():
        holder = lease.current_holder()
        msg = f"another index writer ({holder}) took the lock during the repair; nothing was pushed"
        raise LockHeld(msg, holder=holder)
    result.commit = commit
    report = index.push(commit)
    result.reported = report.status
    try:
        result.confirmed = index.read_back(commit, files).confirmed
    except RemoteUnavailable:
        result.confirmed = False
    changes = [c.to_dict(entries=True) for c in result.changes]

    def record(remote: IndexRemote) -> None:
        for start in range(0, max(len(changes), 1), CHANGES_PER_EVENT):
            remote.repaired(
                branch=index.branch,
                commit=commit,
                parent=head,
                changes=changes[start : start + CHANGES_PER_EVENT],
                reported=report.status,
                confirmed=result.confirmed,
                actor=actor,
                target=ledger.target,
            )

    result.position = save_remote_events(ledger, index.remote_url, record)
    ledger.views.catch_up()


def _full_tree(
    index: IndexTarget, head: str | None, files: dict[str, bytes | None]
) -> Iterator[tuple[str, bytes]]:
    """Every file of the repaired index: those at head with the changes applied, then new ones."""
    seen: set[str] = set()
    for path, data in index.files_unordered(head) if head is not None else ():
        seen.add(path)
        content = files.get(path, data)
        if content is not None:
            yield path, content
    for path, planned in files.items():
        if path not in seen and planned is not None:
            yield path, planned


def _message(result: RepairResult) -> str:
    crates = sorted({c.crate for c in result.changes})
    shown = ", ".join(crates[:10]) + (f" and {len(crates) - 10} more" if len(crates) > 10 else "")
    parts = [f"Repair {len(result.changes)} crate file(s): {shown}"] if crates else []
    if result.config:
        parts.append("write config.json")
    return "; ".join(parts)
