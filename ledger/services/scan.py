"""Scanning the real index: the crate files at the remote's head, compared with the views.

A scan fetches the branch and reads the crate files in scope: every file on the first scan of
a remote (and when the last scanned commit is not in the local clone, or very many files
changed), later only the files changed since the last scanned head. Each file in scope is
compared twice:

- with what the ledger believes the index holds (the index view): every crate whose real file
  differs goes into the ``IndexScanned`` event's ``observed``, so the index view, and with it
  the audit, follows the real index;
- with what the registry says should be there (the database view): each difference is a
  discrepancy: ``lost``, ``foreign``, ``phantom``, ``yank_mismatch`` or ``content_mismatch`` (unparseable
  lines and versions written twice in one file are content mismatches).

A scan records what it saw and nothing else: it never confirms a push or closes a job.

Speed: a canonical index line's SHA-256 is the view's content digest (a yanked line is hashed
with ``"yanked":true`` read as ``false``), so a file whose lines are exactly the ones the views
expect is recognised by hashing, and only files that differ are parsed. A full scan reads each
view in one streaming query; an incremental scan reads the views of the changed crates only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError

from ledger.domain.aggregates import IndexRemote
from ledger.domain.errors import StoreUnavailable
from ledger.domain.names import collision_key, crate_from_path, index_path
from ledger.domain.real_lines import ReadLine, file_fingerprint, numbered_lines, read_line
from ledger.logs import log_step
from ledger.ports import Database
from ledger.progress import report
from ledger.settings import redact
from projections.crates import (
    Belief,
    Registered,
    belief_fingerprints,
    chunks,
    known_lines,
    last_scan,
    load_beliefs,
    load_registered,
    registry_fingerprints,
    unsynced_keys,
)

if TYPE_CHECKING:
    from ledger.ports import IndexTarget
    from ledger.services.core import LedgerCore

CONFIG_PATH = "config.json"
INCREMENTAL_LIMIT = 5000
"""Beyond this many changed paths a full scan, which reads blobs in bulk, is faster."""
SAVE_RETRIES = 3

# -- the scan ------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What one scan read and found; the ``IndexScanned`` event at ``position`` records it."""

    head: str | None
    files: int
    examined: int
    discrepancies: list[dict[str, Any]]
    position: int
    duration: float
    branch: str = ""
    full: bool = True
    observed: int = 0
    base_position: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "branch": self.branch,
            "full": self.full,
            "files": self.files,
            "examined": self.examined,
            "observed": self.observed,
            "discrepancies": len(self.discrepancies),
            "position": self.position,
            "base_position": self.base_position,
            "seconds": round(self.duration, 3),
        }


@dataclass
class _Findings:
    observed: dict[str, list[Any]] = field(default_factory=dict)
    discrepancies: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        crate: str,
        version: str | None,
        cls: str,
        detail: str,
        path: str,
        line_number: int | None = None,
    ) -> None:
        found: dict[str, Any] = {
            "crate": crate,
            "version": version,
            "class": cls,
            "detail": detail,
            "path": path,
        }
        if line_number is not None:
            found["line_number"] = line_number
        self.discrepancies.append(found)


Scope = dict[str, dict[str, bytes | None]]
"""Crate key -> path -> the file's bytes at head (None: absent), for the files in scope."""


def scan_index(ledger: LedgerCore) -> ScanResult:
    """Read the real index, record an ``IndexScanned`` event, and return what was found."""
    started = time.monotonic()
    index = ledger.index()
    base_position = ledger.views.catch_up()
    head = index.survey()
    remote_id = IndexRemote.create_id(redact(index.remote_url))
    last = last_scan(ledger.db, remote_id.hex, index.branch)
    last_head, last_files = last if last is not None else (None, 0)
    findings = _Findings()
    changed = _changed_since(index, last_head, head)
    if changed is None or last_head is None or head is None:
        changed = None
        files, examined = _full_scan(ledger.db, index, head, findings)
    else:
        files, examined = _incremental_scan(ledger.db, index, last_head, last_files, head, changed, findings)
    findings.discrepancies.sort(key=_order)

    def record(remote: IndexRemote) -> None:
        remote.scanned(
            branch=index.branch,
            head=head,
            base_position=base_position,
            files=files,
            changed_files=examined,
            observed=findings.observed,
            discrepancies=findings.discrepancies,
            target=ledger.target,
        )

    position = save_remote_events(ledger, index.remote_url, record)
    ledger.views.catch_up()
    result = ScanResult(
        head=head,
        files=files,
        examined=examined,
        discrepancies=findings.discrepancies,
        position=position,
        duration=time.monotonic() - started,
        branch=index.branch,
        full=changed is None,
        observed=len(findings.observed),
        base_position=base_position,
    )
    log_step("index_scanned", **result.to_dict())
    return result


def _order(found: dict[str, Any]) -> tuple[str, str, int, str]:
    return (found["crate"], found["version"] or "", found.get("line_number") or 0, found["class"])


def _changed_since(index: IndexTarget, last_head: str | None, head: str | None) -> list[str] | None:
    """The paths changed since the last scanned head; None when everything must be read."""
    if last_head is None or head is None:
        return None
    try:
        changed = index.changed_paths(last_head, head)
    except ValueError:
        return None  # the last scanned commit is not in this clone
    return changed if len(changed) <= INCREMENTAL_LIMIT else None


def save_remote_events(ledger: LedgerCore, url: str, record: Callable[[IndexRemote], None]) -> int:
    """Record events on the remote's aggregate and save them; the log position of the last.

    When another writer saved an event of the same remote first, the aggregate is reloaded
    and the events recorded again on top of it.
    """
    for attempt in range(SAVE_RETRIES):
        remote = ledger.app.remote(url)
        record(remote)
        try:
            return ledger.app.save_jobs([remote])
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, IntegrityError) or attempt == SAVE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _full_scan(db: Database, index: IndexTarget, head: str | None, findings: _Findings) -> tuple[int, int]:
    """Every crate file at head; files equal to both views are recognised by hashing alone.

    The index view of a crate in sync holds exactly the live versions of the database view,
    so its fingerprint is the registry's: only the crates out of sync have their index view
    read (all of them when ``view_unsynced`` is not kept).
    """
    registry = registry_fingerprints(db, ordered=False)
    unsynced = unsynced_keys(db)
    beliefs = belief_fingerprints(db, sorted(unsynced) if unsynced is not None else None)
    scope: Scope = {}
    present: set[str] = set()
    own_seen: set[str] = set()
    files = 0
    for path, data in index.files_unordered(head) if head is not None else ():
        name = crate_from_path(path)
        if name is None:
            continue
        files += 1
        report("scan: crate files", files)
        present.add(path)
        key = collision_key(name)
        registered = registry.get(key)
        if registered is not None and name == registered[0].lower():  # the crate's own file
            own_seen.add(key)
            believed = beliefs.get(key) if unsynced is None or key in unsynced else registered
            real = file_fingerprint(data, ordered=False)
            if real == registered[1] and real == (believed[1] if believed else None):
                continue
        scope.setdefault(key, {})[path] = data
    # Files the views expect that are not there at all.
    for key, (name, fp) in registry.items():
        if fp is not None and key not in own_seen:
            scope.setdefault(key, {})[index_path(name)] = None
    for key, (path, fp) in beliefs.items():
        if fp is None or key in own_seen:
            continue
        own = index_path(registry[key][0]) if key in registry else path
        if own not in present:
            scope.setdefault(key, {})[own] = None
    _compare_scope(db, scope, findings)
    return files, files


def _incremental_scan(
    db: Database,
    index: IndexTarget,
    last_head: str,
    files: int,
    head: str,
    changed: list[str],
    findings: _Findings,
) -> tuple[int, int]:
    """Only the crate files whose blob changed since the last scanned head."""
    scope: Scope = {}
    examined = 0
    for path in changed:
        name = crate_from_path(path)
        if name is None:
            continue
        examined += 1
        data = index.read_blob(head, path)
        before = index.read_blob(last_head, path) is not None
        files += (data is not None) - before
        scope.setdefault(collision_key(name), {})[path] = data
    _compare_scope(db, scope, findings)
    return files, examined


def _compare_scope(db: Database, scope: Scope, findings: _Findings) -> None:
    for chunk in chunks(sorted(scope)):
        registered = load_registered(db, chunk, with_lines=False)
        beliefs = load_beliefs(db, chunk)
        for key in chunk:
            _compare_crate(key, scope[key], registered.get(key), beliefs.get(key), findings)


def _compare_crate(
    key: str,
    paths: dict[str, bytes | None],
    registered: Registered | None,
    belief: Belief | None,
    findings: _Findings,
) -> None:
    """Compare the crate's files in scope with both views."""
    own = registered.path if registered else belief.path if belief else min(paths)
    known = known_lines(registered, belief)
    for path in sorted(paths):
        lines = [read_line(n, raw, known) for n, raw in numbered_lines(paths[path])]
        if path == own:
            _compare_own(key, path, lines, registered, belief, findings)
        else:
            _stray(key, path, own, lines, registered, findings)


def _crate_name(
    key: str, path: str, lines: list[ReadLine], registered: Registered | None, belief: Belief | None
) -> str:
    if registered is not None:
        return registered.name
    for line in lines:
        if line.name is not None and collision_key(line.name) == key:
            return line.name
    if belief is not None:
        return belief.crate
    return crate_from_path(path) or key


def _compare_own(
    key: str,
    path: str,
    lines: list[ReadLine],
    registered: Registered | None,
    belief: Belief | None,
    findings: _Findings,
) -> None:
    crate = _crate_name(key, path, lines, registered, belief)
    entries: dict[str, ReadLine] = {}
    unreadable: set[str] = set()
    for line in lines:
        if line.key is None or line.name is None:
            detail = f"line {line.number} of {path} is not a valid index line: {line.error}"
            findings.add(crate, None, "content_mismatch", detail, path, line.number)
            continue
        if collision_key(line.name) != key:
            detail = f"line {line.number} of {path} is for the crate {line.name} {line.version}"
            findings.add(crate, line.version, "content_mismatch", detail, path, line.number)
            continue
        if line.error is not None:
            detail = f"line {line.number} of {path} is not a valid index line: {line.error}"
            findings.add(crate, line.version, "content_mismatch", detail, path, line.number)
            unreadable.add(line.key)
        earlier = entries.get(line.key)
        if earlier is not None:
            detail = (
                f"{crate} {line.version} is on lines {earlier.number} and {line.number} of {path}; "
                "cargo uses the last"
            )
            findings.add(crate, line.version, "content_mismatch", detail, path, line.number)
        entries[line.key] = line
    _against_registry(crate, path, entries, unreadable, registered, findings)
    real = {k: (line.version or "", line.yanked, line.digest or "") for k, line in entries.items()}
    if real != (belief.entries if belief is not None else {}):
        findings.observed[key] = [crate, path, [line.entry for line in entries.values()]]


def _against_registry(
    crate: str,
    path: str,
    entries: dict[str, ReadLine],
    unreadable: set[str],
    registered: Registered | None,
    findings: _Findings,
) -> None:
    rows = registered.rows if registered is not None else []
    live = {r.key: r for r in rows if r.state != "deleted"}
    deleted = {r.key for r in rows if r.state == "deleted"}
    missing = "the file is missing" if not entries else f"{path} has no line for it"
    for vers_key, row in live.items():
        if vers_key not in entries:
            findings.add(crate, row.version, "lost", f"published in the registry; {missing}", path)
    for vers_key, line in entries.items():
        if vers_key in unreadable:
            continue
        found = live.get(vers_key)
        if found is None:
            if vers_key in deleted:
                detail = f"line {line.number} of {path}: deleted in the registry"
                findings.add(crate, line.version, "phantom", detail, path)
            else:
                detail = f"line {line.number} of {path}: the ledger has no record of it"
                findings.add(crate, line.version, "foreign", detail, path)
            continue
        if line.yanked != found.yanked:
            detail = f"the index has yanked={str(line.yanked).lower()}, the registry {found.state}"
            findings.add(crate, found.version, "yank_mismatch", detail, path, line.number)
        if line.digest != found.digest:
            detail = f"line {line.number} of {path} differs from the published line"
            findings.add(crate, found.version, "content_mismatch", detail, path, line.number)


def _stray(
    key: str,
    path: str,
    own: str,
    lines: list[ReadLine],
    registered: Registered | None,
    findings: _Findings,
) -> None:
    """A file for a name that collides with the crate's own: none of its lines is the crate's."""
    crate = registered.name if registered is not None else crate_from_path(path) or key
    for line in lines:
        detail = f"line {line.number} of {path}, a file for a name colliding with {own}"
        if line.version is None:
            findings.add(crate, None, "content_mismatch", f"{detail}, is not a valid index line", path)
        else:
            findings.add(crate, line.version, "phantom", detail, path, line.number)
