"""Lines the ledger's own commits removed without a record: found in the index's history, adopted.

Every push the worker attempted is recorded with the commit it pushed and the head it built on
(``IndexPushAttempted``). For each such commit the remote's history holds (it landed), the
crate files it changed are compared with the same files at its parent: a line the commit
removed whose version the ledger has no record of was lost without an event (what the worker
did before it compared files with the ledger's record). Such a line is restored when the index
does not hold its version today: recorded as imported (actor ``import``, bytes kept) so that
the repair writes it back, before the versions published through the ledger.

Lines removed by a repair are not looked at: ``RepairApplied`` records each one it removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.domain.aggregates import IMPORT_ACTOR, SyncJob
from ledger.domain.names import collision_key, crate_from_path, index_path
from ledger.domain.real_lines import numbered_lines
from ledger.services.foreign import find_foreign
from projections.queries import VersionRow, live_versions_of

if TYPE_CHECKING:
    from ledger.ports import IndexTarget
    from ledger.services.core import LedgerCore


@dataclass(frozen=True)
class LostLine:
    """A line a commit of the ledger removed, unrecorded, and that the index lacks today."""

    crate: str
    version: str | None
    path: str
    raw: bytes
    removed_by: str
    parent: str
    restorable: bool
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "crate": self.crate,
            "version": self.version,
            "path": self.path,
            "removed_by": self.removed_by,
            "parent": self.parent,
            "line": self.raw.decode("utf-8", "replace"),
            "restorable": self.restorable,
        }
        if self.why_not is not None:
            found["why_not"] = self.why_not
        return found


def ledger_commits(ledger: LedgerCore) -> list[tuple[str, str]]:
    """(commit, parent) of every push the worker attempted, in log order, each once."""
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    for notification in ledger.log.notifications_with_topic(SyncJob.IndexPushAttempted.TOPIC):
        event = ledger.app.mapper.to_domain_event(notification)
        assert isinstance(event, SyncJob.IndexPushAttempted)
        if event.commit is None or event.parent is None:
            continue
        pair = (event.commit, event.parent)
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def find_lost_lines(ledger: LedgerCore, index: IndexTarget, head: str | None) -> list[LostLine]:
    """Every line the ledger's landed commits removed without a record, missing at ``head``."""
    if head is None:
        return []
    lost: dict[tuple[str, str], LostLine] = {}
    recorded: dict[str, list[VersionRow]] = {}
    at_head: dict[str, tuple[set[bytes], set[str]]] = {}
    for commit, parent in ledger_commits(ledger):
        if not index.holds_ancestor(head, commit) or not index.has_commit(parent):
            continue  # never landed (or its parent is unknown here): it removed nothing
        for path, raw in _removed_lines(index, parent, commit):
            name = crate_from_path(path)
            if name is None:
                continue
            key = collision_key(name)
            if key not in recorded:
                recorded[key] = live_versions_of(ledger.db, [key], with_deleted=True)[key]
            found = find_foreign(key, path, raw + b"\n", recorded[key])
            if not found.foreign:
                continue  # the ledger has a record of that version: its events explain the change
            line = found.foreign[0]
            slot = (path, line.version or raw.decode("utf-8", "replace"))
            if path not in at_head:
                at_head[path] = _lines_and_versions(key, path, index.read_blob(head, path), recorded[key])
            lines, versions = at_head[path]
            if slot in lost or raw in lines or line.version in versions:
                continue  # already found, or the index holds that line or its version today
            lost[slot] = LostLine(name, line.version, path, raw, commit, parent, line.adoptable, line.why_not)
    return list(lost.values())


def _lines_and_versions(
    key: str, path: str, data: bytes | None, recorded: list[VersionRow]
) -> tuple[set[bytes], set[str]]:
    """The lines of a crate file, and the versions of those that can be read."""
    entries = find_foreign(key, path, data, recorded).entries
    return {raw for _, raw in numbered_lines(data)}, {entry[0] for entry in entries}


def _removed_lines(index: IndexTarget, parent: str, commit: str) -> Iterator[tuple[str, bytes]]:
    """(path, line) for each line of a crate file at ``parent`` that ``commit`` no longer has."""
    for path in index.changed_paths(parent, commit):
        before = numbered_lines(index.read_blob(parent, path))
        if not before:
            continue
        after = Counter(raw for _, raw in numbered_lines(index.read_blob(commit, path)))
        for _, raw in before:
            if after[raw] > 0:
                after[raw] -= 1
            else:
                yield path, raw


def adopt_lost_lines(ledger: LedgerCore, lines: list[LostLine]) -> int:
    """Record the restorable lines as imported (their jobs open until the index holds them)."""
    restorable = [line for line in lines if line.restorable and index_path(line.crate) == line.path]
    if not restorable:
        return 0
    result = ledger.app.publish_many(
        ((number, line.raw) for number, line in enumerate(restorable)),
        IMPORT_ACTOR,
        keep_yanked=True,
    )
    ledger.views.catch_up()
    return result.accepted
