"""ledger: an event-sourced publication ledger for package registries.

Every publish, yank, enqueue, push attempt and push confirmation is an immutable event; a push
counts only once the remote has been read back; views rebuilt from the events make every
inconsistency between the registry and its index a query, now or as of any past moment.
"""

from ledger.bootstrap import open_ledger
from ledger.domain.errors import (
    AlreadyPublished,
    Conflict,
    InfrastructureError,
    Invalid,
    InvalidLine,
    InvalidName,
    InvalidVersion,
    LedgerError,
    LockHeld,
    NameCollision,
    NotFound,
    Refused,
    RemoteUnavailable,
    StoreUnavailable,
)
from ledger.services.ledger import AsOf, Ledger
from ledger.services.publishing import BulkResult, Receipt
from ledger.settings import Settings

__all__ = [
    "AlreadyPublished",
    "AsOf",
    "BulkResult",
    "Conflict",
    "InfrastructureError",
    "Invalid",
    "InvalidLine",
    "InvalidName",
    "InvalidVersion",
    "Ledger",
    "LedgerError",
    "LockHeld",
    "NameCollision",
    "NotFound",
    "Receipt",
    "Refused",
    "RemoteUnavailable",
    "Settings",
    "StoreUnavailable",
    "open_ledger",
]
