"""An index target held in memory, for fast tests of the use cases: no git, no network.

A :class:`MemoryRemote` is the far side (a branch head and the heads pushed to it) and can play
the faults that matter to the ledger: a push rejected, refused (unreachable), answered with no
status, reported ``ok`` although nothing was kept (a lie), or kept and then rolled back.
:class:`MemoryIndex` implements :class:`~ledger.ports.IndexTarget` over it the way the git
adapter does over a remote: heads are written locally on top of an expected head, a push is
never forced, and only :meth:`MemoryIndex.read_back` says what the remote holds.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ledger.domain.errors import RemoteUnavailable
from ledger.ports import PushReport, ReadBack

__all__ = ["Fault", "MemoryIndex", "MemoryRemote"]


class Fault(enum.StrEnum):
    """What the remote does with the next pushes (and reads, for ``UNREACHABLE``)."""

    NONE = "none"
    REJECT = "reject"
    UNREACHABLE = "unreachable"
    NO_STATUS = "no_status"
    LIE = "lie"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class _Head:
    parent: str | None
    files: Mapping[str, bytes]


@dataclass
class MemoryRemote:
    """The far side of a :class:`MemoryIndex`: one branch, every head it was given."""

    head: str | None = None
    heads: dict[str, _Head] = field(default_factory=dict)
    fault: Fault = Fault.NONE
    pushes: int = 0
    """Pushes that reached the remote (whatever it did with them)."""

    def files(self) -> dict[str, bytes]:
        """The files at the branch's head (none before the first push)."""
        return {} if self.head is None else dict(self.heads[self.head].files)

    def write(self, changes: Mapping[str, bytes | None], parent: str | None = None) -> str:
        """Move the branch behind the ledger's back (another writer): ``changes`` on its head."""
        base = self.head if parent is None else parent
        files = {} if base is None else dict(self.heads[base].files)
        for path, data in changes.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        head = _head_id(base, files, "written elsewhere")
        self.heads[head] = _Head(base, files)
        self.head = head
        return head


class MemoryIndex:
    """An :class:`~ledger.ports.IndexTarget` whose remote is a :class:`MemoryRemote`."""

    def __init__(
        self,
        remote: MemoryRemote,
        path: Path,
        *,
        url: str = "memory://index",
        branch: str = "master",
    ) -> None:
        self.remote = remote
        self._path = Path(path)
        self._url = url
        self._branch = branch
        self._heads: dict[str, _Head] = {}
        """Every head this side knows: read from the remote, or written here (twins share it)."""
        self._twin = False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def remote_url(self) -> str:
        return self._url

    @property
    def branch(self) -> str:
        return self._branch

    def close(self) -> None:
        if not self._twin:
            self._heads.clear()

    def twin(self) -> MemoryIndex:
        twin = MemoryIndex(self.remote, self._path, url=self._url, branch=self._branch)
        twin._heads = self._heads
        twin._twin = True
        return twin

    # -- the remote ---------------------------------------------------------------------------

    def fetch(self) -> str | None:
        if self.remote.fault is Fault.UNREACHABLE:
            msg = f"cannot fetch from {self._url}: failed to connect: connection refused"
            raise RemoteUnavailable(msg, remote=self._url)
        self._heads.update(self.remote.heads)
        return self.remote.head

    def survey(self) -> str | None:
        """The head a fetch reads: a commit names every file it holds."""
        return self.fetch()

    def push(self, commit: str) -> PushReport:
        self._commit(commit)
        remote = self.remote
        if remote.fault is Fault.UNREACHABLE:
            return PushReport("error", f"failed to connect to {self._url}: connection refused", "unreachable")
        remote.pushes += 1
        if remote.fault is Fault.REJECT:
            return PushReport("rejected", "pre-receive hook declined")
        if remote.head is not None and not self._descends(commit, remote.head):
            return PushReport("rejected", "cannot push non-fastforwardable reference")
        if remote.fault is Fault.LIE:
            return PushReport("ok", None)
        if remote.fault is Fault.NO_STATUS:
            return PushReport("no_status", None)
        chain = self._chain(commit, stop=remote.head)
        remote.heads.update((head, self._heads[head]) for head in chain)
        if remote.fault is not Fault.ROLLBACK:
            remote.head = commit
        return PushReport("ok", None)

    def read_back(self, commit: str, expected: Mapping[str, bytes | None]) -> ReadBack:
        head = self.fetch()
        if head is None:
            contains = False
            mismatched = tuple(sorted(path for path, data in expected.items() if data is not None))
        else:
            contains = self.holds_ancestor(head, commit)
            files = self._heads[head].files
            mismatched = tuple(path for path in sorted(expected) if files.get(path) != expected[path])
        return ReadBack(head, contains, mismatched, f"memory: head, ancestry, {len(expected)} files")

    # -- heads read or written ------------------------------------------------------------------

    def has_commit(self, commit: str) -> bool:
        return commit in self._heads

    def holds_ancestor(self, head: str, commit: str) -> bool:
        return self.has_commit(commit) and self._descends(head, commit)

    def entry_kind(self, commit: str | None, path: str) -> str | None:
        if commit is None:
            return None
        files = self._commit(commit).files
        if path in files:
            return "file"
        prefix = path.rstrip("/") + "/"
        return "directory" if any(name.startswith(prefix) for name in files) else None

    def read_file(self, commit: str | None, path: str) -> tuple[str | None, bytes | None]:
        kind = self.entry_kind(commit, path)
        return kind, self.read_blob(commit, path) if kind == "file" else None

    def read_blob(self, commit: str | None, path: str) -> bytes | None:
        return None if commit is None else self._commit(commit).files.get(path)

    def tree_files(self, commit: str) -> tuple[list[str], dict[str, str]]:
        return sorted(self._commit(commit).files), {}

    def files_unordered(self, commit: str) -> Iterator[tuple[str, bytes]]:
        yield from self._commit(commit).files.items()

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        after = self._commit(new).files
        if old is None:
            return sorted(after)
        before = self._commit(old).files
        return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))

    def commit(
        self,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        when: datetime | None = None,
    ) -> str | None:
        files = {} if parent is None else dict(self._commit(parent).files)
        for path, data in changes.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        if parent is not None and files == self._commit(parent).files:
            return None
        if parent is None and not files:
            return None
        return self._add(parent, files, message)

    def build_commit(
        self, files: Iterable[tuple[str, bytes]], message: str, *, parent: str | None = None
    ) -> str:
        if parent is not None:
            self._commit(parent)
        return self._add(parent, dict(files), message)

    # -- inside -----------------------------------------------------------------------------------

    def _add(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        head = _head_id(parent, files, message)
        self._heads[head] = _Head(parent, files)
        return head

    def _commit(self, commit: str) -> _Head:
        try:
            return self._heads[commit]
        except KeyError:
            raise ValueError(f"{commit} is not a commit in the index clone") from None

    def _descends(self, head: str, ancestor: str) -> bool:
        current: str | None = head
        while current is not None:
            if current == ancestor:
                return True
            found = self._heads.get(current) or self.remote.heads.get(current)
            current = None if found is None else found.parent
        return False

    def _chain(self, commit: str, *, stop: str | None) -> list[str]:
        chain: list[str] = []
        current: str | None = commit
        while current is not None and current != stop:
            chain.append(current)
            current = self._heads[current].parent
        return chain


def _head_id(parent: str | None, files: Mapping[str, bytes], message: str) -> str:
    """A 40-hex id for a head, from its parent, its files and its message."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"{parent}\n{message}\n".encode())
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()
