"""Ports: the narrow interfaces the use cases talk to; the adapters implement them.

- :class:`Database`: plain SQL on the ledger's own store (the views, the lease).
- :class:`EventLog`: reads of the stored events the recorders do not offer, and the hash chain.
- :class:`Lease`: one index writer at a time.
- :class:`IndexTarget`: where the index is published, and read back.
- :class:`Observer`: what the sync worker reports as it works (metrics).
- :class:`CrateFiles`: the registry's ``.crate`` files, by their SHA-256.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import Notification


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@runtime_checkable
class CopyCursor(Cursor, Protocol):
    """A cursor that also takes new rows through the store's bulk path (PostgreSQL's ``COPY``)."""

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], /) -> None: ...


class Database(Protocol):
    """A plain SQL connection to the ledger's store (``?`` placeholders on every dialect)."""

    dialect: str

    def transaction(self) -> AbstractContextManager[Cursor]: ...
    def exclusive(self, name: str) -> AbstractContextManager[None]: ...
    def query(self, sql: str, params: Sequence[Any] = ...) -> list[tuple[Any, ...]]: ...
    def stream(self, sql: str, params: Sequence[Any] = ..., size: int = ...) -> Iterator[tuple[Any, ...]]: ...
    def close(self) -> None: ...


# -- the event log -------------------------------------------------------------------------------

LogRow = tuple[int, str, str, bytes]
"""A stored event as the views read it: position, originator id as stored (text), topic, state."""


@dataclass(frozen=True)
class Break:
    """The first place where the hash chain over the stored events does not hold."""

    position: int
    problem: str

    def to_dict(self) -> dict[str, object]:
        return {"position": self.position, "problem": self.problem}


@dataclass(frozen=True)
class ChainReport:
    """The outcome of walking the hash chain over every stored event."""

    events: int
    head: str
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


class EventLog(Protocol):
    """Direct reads of the stored events, for what the event store's recorders do not offer."""

    def notifications_of(self, ids: Sequence[UUID]) -> list[Notification]:
        """Every stored event of these aggregates, with its log position, in log order."""
        ...

    def notifications_with_topic(self, topic: str) -> Iterator[Notification]:
        """Every stored event with this topic, in log order."""
        ...

    def count_with_topic(self, topic: str) -> int: ...

    def rows(self, start: int, limit: int, stop: int | None = None) -> list[LogRow]:
        """Up to ``limit`` stored events after position ``start`` (and at most ``stop``), in order."""
        ...

    def chain_link(self, position: int) -> str | None:
        """The hash chain's link recorded at ``position``, None when there is none."""
        ...

    def walk_chain(self) -> ChainReport:
        """Recompute the hash chain over every stored event and compare it with the recorded links."""
        ...


class Lease(Protocol):
    """A named lease, held for a while at a time: one index writer at once."""

    holder: str

    def acquire(self, *, wait: float = ..., poll: float = ...) -> None: ...
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...
    def current_holder(self) -> str | None: ...


# -- the index target ----------------------------------------------------------------------------

PushStatus = Literal["ok", "rejected", "error", "no_status"]
ErrorKind = Literal["timeout", "unreachable", "other"]


@dataclass(frozen=True)
class PushReport:
    """What the pusher said about one push; recorded, never trusted."""

    status: PushStatus
    message: str | None
    """The server's rejection text (or the client's own refusal), or the error text."""
    error_kind: ErrorKind | None = None
    """For status ``"error"``: what the error text describes."""


@dataclass(frozen=True)
class ReadBack:
    """Evidence about a published change, read from the target on a new connection."""

    remote_head: str | None
    contains_commit: bool
    """The published change is the target's head or one of its ancestors."""
    mismatched: tuple[str, ...]
    """Paths whose content at the target's head differs from what was expected."""
    method: str
    problems: tuple[str, ...] = ()
    """What was seen instead, one line per mismatched path (``"<path>: HTTP 404"``), when the
    target can say more than that the content differs."""

    @property
    def confirmed(self) -> bool:
        """The target holds the change and every expected file."""
        return self.contains_commit and not self.mismatched


class IndexTarget(Protocol):
    """Where the index is published: what the worker, scan, repair, restore and import need.

    A *head* names one state of the whole index (a git commit id). Changes are written locally
    on top of an expected head (:meth:`commit`), published (:meth:`push`, never forced: a target
    that moved since refuses), and count only once read back on a fresh connection
    (:meth:`read_back`). Implementations: ``ledger.adapters.git.index.GitIndex`` and, for fast
    tests of the use cases, ``ledger.adapters.memory.MemoryIndex``. Not thread-safe: a
    thread of its own takes a :meth:`twin`.
    """

    @property
    def path(self) -> Path:
        """A local folder the target owns, where the use cases may keep caches."""
        ...

    @property
    def remote_url(self) -> str:
        """The target's URL with any credentials removed."""
        ...

    @property
    def branch(self) -> str: ...

    def close(self) -> None: ...

    def twin(self) -> IndexTarget:
        """Another handle on the same target and local folder, for one other thread.

        Heads either handle writes or reads are seen by both. The worker publishes one commit
        through its twin while it prepares the next through this one; closing the twin leaves
        this handle open.
        """
        ...

    # the target, over the network
    def fetch(self) -> str | None:
        """Read the target's head (and everything under it); None when it has no index yet."""
        ...

    def survey(self) -> str | None:
        """Read what the target holds file by file, as a head (a scan's view of it).

        For git the same as :meth:`fetch`. A target whose files can change without its head
        saying so (the sparse index: files in a folder or a bucket) lists them instead, reading
        only what changed since the last survey, and returns a head holding exactly those files.
        """
        ...

    def push(self, commit: str) -> PushReport:
        """Publish ``commit`` as the target's new head, never forced; what the pusher said."""
        ...

    def read_back(self, commit: str, expected: Mapping[str, bytes | None]) -> ReadBack:
        """On a new connection: does the target's head hold ``commit`` and ``expected``?"""
        ...

    # heads read so far, locally
    def has_commit(self, commit: str) -> bool: ...
    def holds_ancestor(self, head: str, commit: str) -> bool: ...
    def entry_kind(self, commit: str | None, path: str) -> str | None: ...
    def read_file(self, commit: str | None, path: str) -> tuple[str | None, bytes | None]: ...
    def read_blob(self, commit: str | None, path: str) -> bytes | None: ...
    def tree_files(self, commit: str) -> tuple[list[str], dict[str, str]]: ...
    def files_unordered(self, commit: str) -> Iterator[tuple[str, bytes]]: ...
    def changed_paths(self, old: str | None, new: str) -> list[str]: ...

    # new heads, written locally before they are published
    def commit(
        self,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        when: datetime | None = None,
    ) -> str | None:
        """A new head on ``parent`` with ``changes`` (None: delete); None if nothing changes."""
        ...

    def build_commit(
        self, files: Iterable[tuple[str, bytes]], message: str, *, parent: str | None = None
    ) -> str:
        """A new head holding exactly ``files``; ``parent`` only records history."""
        ...


class OpenTarget(Protocol):
    """Opens an index target in a local folder for a URL (the import's source, a reader process)."""

    def __call__(
        self,
        path: Path,
        remote_url: str,
        *,
        branch: str = ...,
        connect_timeout_ms: int = ...,
        timeout_ms: int = ...,
    ) -> IndexTarget: ...


class Observer(Protocol):
    """What the sync worker tells whoever watches it (metrics); every method is cheap."""

    def pass_done(self, seconds: float) -> None: ...
    def remote_up(self, up: bool) -> None: ...
    def read_back(self, confirmed: bool | None) -> None:
        """A read-back's outcome: confirmed, unconfirmed, or None when the target was unreachable."""
        ...

    def pushed(self, reported: str, seconds: float | None) -> None: ...
    def held(self) -> None: ...
    def confirmed(self, latencies: Sequence[float]) -> None: ...
    def failed(self, reason: str) -> None: ...


class Unobserved:
    """An :class:`Observer` that keeps nothing (a worker nobody watches)."""

    def pass_done(self, seconds: float) -> None:
        pass

    def remote_up(self, up: bool) -> None:
        pass

    def read_back(self, confirmed: bool | None) -> None:
        pass

    def pushed(self, reported: str, seconds: float | None) -> None:
        pass

    def held(self) -> None:
        pass

    def confirmed(self, latencies: Sequence[float]) -> None:
        pass

    def failed(self, reason: str) -> None:
        pass


# -- the registry's files ------------------------------------------------------------------------


class CrateFiles(Protocol):
    """The ``.crate`` files a registry serves, stored content-addressed by their SHA-256 (hex)."""

    def put(self, cksum: str, data: bytes) -> None:
        """Store ``data`` under ``cksum`` durably before returning (again: nothing changes)."""
        ...

    def get(self, cksum: str) -> bytes | None: ...
    def has(self, cksum: str) -> bool: ...


# -- waking the worker ---------------------------------------------------------------------------


class Wakeup(Protocol):
    """Tells a waiting worker that the log may have grown (a job enqueued): sooner than a poll.

    A missed or spurious wake-up is harmless: the worker looks for jobs after every wait, and a
    wait never lasts longer than its timeout (the poll stays as the safety net).
    """

    def wait(self, timeout: float) -> bool:
        """Return True once the store may hold new events, False after ``timeout`` seconds."""
        ...

    def clear(self) -> None:
        """Forget the wake-ups so far: the caller is about to look at everything they stand for
        (a look that begins after this call sees every event committed before it)."""
        ...

    def close(self) -> None: ...


class Sleep:
    """A :class:`Wakeup` that only sleeps: the worker finds new jobs at its poll interval."""

    def wait(self, timeout: float) -> bool:
        import time

        time.sleep(timeout)
        return False

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass
