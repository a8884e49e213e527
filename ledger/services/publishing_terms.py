"""What the publication ledger's calls take and give back, and the checks both its paths share.

A :class:`Receipt` answers a single change and a :class:`BulkResult` a batched publish; a
:class:`CheckedLine` is a line ``parse_line`` accepted and a :class:`Confirmation` what the index
already holds of a new job's crate. ``check_actor`` and ``store_error`` are used by the single and
the batched path alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple
from uuid import UUID

from ledger.domain.errors import Invalid, StoreUnavailable
from ledger.domain.index_format import IndexLine
from ledger.settings import redact


@dataclass(frozen=True)
class Receipt:
    """What an accepted call returns: the change is durable at ``position`` in the log."""

    crate: str
    version: str
    event: str
    job: UUID
    position: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "crate": self.crate,
            "version": self.version,
            "event": self.event,
            "job": str(self.job),
            "position": self.position,
        }


@dataclass
class BulkResult:
    """What a batched publish did: accepted, already present, refused (with line numbers)."""

    accepted: int = 0
    present: int = 0
    events: int = 0
    jobs: int = 0
    position: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "present": self.present,
            "events": self.events,
            "jobs": self.jobs,
            "position": self.position,
            "refused": [{"line": n, "error": e} for n, e in self.refused],
        }


class CheckedLine(NamedTuple):
    """An index line that ``parse_line`` accepted, with what the batched path records of it.

    ``text`` is the line's JSON as :meth:`IndexLine.render` writes it (the event's ``line``).
    """

    name: str
    vers: str
    key: str
    cksum: str
    yanked: bool
    text: str

    @classmethod
    def of(cls, line: IndexLine) -> CheckedLine:
        return cls(line.name, line.vers, line.key, line.cksum, line.yanked, line.render().decode())


class Confirmation(NamedTuple):
    """A new job's ``IndexPushConfirmed`` but for its crate: the remote holds its file as read."""

    commit: str
    remote_head: str
    method: str
    path: str
    target: str
    """The index target that holds the file (an import's source)."""
    entries: list[list[Any]]
    """Last, as in the event: the views read a confirmation's entries from the end of its text."""


def check_actor(actor: str) -> None:
    if not actor or not actor.strip() or len(actor) > 200:
        msg = "an actor (who asked for the change) is required, at most 200 characters"
        raise Invalid(msg, field="actor")


def store_error(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"the event store failed: {redact(str(exc)).strip()}")
