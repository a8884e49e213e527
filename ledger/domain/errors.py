"""The ledger's one exception tree, and the exit code each branch maps to.

::

    LedgerError                      base of everything the ledger raises on purpose
    ├── Invalid                      bad input; nothing was written           exit 2
    │   ├── InvalidName
    │   ├── InvalidVersion
    │   ├── InvalidLine              a cargo index line that cannot be accepted
    │   ├── NameCollision            equal to an existing crate after folding
    │   └── AlreadyPublished         the version (build metadata ignored) exists
    ├── Refused                      a valid request the ledger's state refuses exit 1
    │   ├── NotFound                 unknown crate or version
    │   ├── Conflict                 the state forbids it (unyank of a live version, ...)
    │   └── LockHeld                 another index writer holds the lock
    └── InfrastructureError          the store or the remote cannot be used   exit 3
        ├── StoreUnavailable
        └── RemoteUnavailable

Third-party errors are turned into these at the edges (``raise ... from exc``),
so callers and the CLI only ever need to know this tree.
"""

from __future__ import annotations

from typing import ClassVar, Literal


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        """The error as the JSON document the CLI prints."""
        return {"type": type(self).__name__, "kind": self.kind, "message": self.message, **self.details}


class Invalid(LedgerError):
    """Bad input: the request names something that can never be accepted."""

    exit_code = 2
    kind = "invalid"


class InvalidName(Invalid):
    """A crate name outside cargo's rules."""


class InvalidVersion(Invalid):
    """A version that is not SemVer 2.0."""


class InvalidLine(Invalid):
    """A cargo index line that cannot be accepted."""


class NameCollision(Invalid):
    """A new crate name equal to an existing one after lowercasing and folding ``-`` into ``_``."""


class AlreadyPublished(Invalid):
    """The version, build metadata ignored, was already published for this crate."""


class Refused(LedgerError):
    """A well-formed request that the ledger's current state refuses."""

    exit_code = 1
    kind = "refused"


class NotFound(Refused):
    """An unknown crate or version."""


class Conflict(Refused):
    """The state forbids the request (unyank of a live version, publish after delete, ...)."""


class Forbidden(Refused):
    """The request is refused to this user (not an owner of the crate)."""


class Unauthorized(Refused):
    """The request carries no valid API token (none, unknown, or revoked)."""


class LockHeld(Refused):
    """Another index writer holds the index lock."""


class InfrastructureError(LedgerError):
    """The store or the index remote cannot be used right now."""

    exit_code = 3
    kind = "unavailable"


class StoreUnavailable(InfrastructureError):
    """The event store cannot be reached or used."""


class RemoteUnavailable(InfrastructureError):
    """The git remote cannot be reached or used."""


_UNREACHABLE_MARKERS = (
    "connection refused",
    "failed to connect",
    "could not resolve",
    "failed to resolve",
    "name or service not known",
    "temporary failure in name resolution",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
)


def classify_error(message: str) -> Literal["timeout", "unreachable", "other"]:
    """Which kind of failure a network error's text describes (libgit2's and git's words)."""
    text = message.lower()
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return "unreachable"
    return "other"
