"""The index-writer lease: one worker writes the index at a time, and another takes over when it dies.

A row per lease in the ledger's own store (so it works the same on SQLite and PostgreSQL): the
holder renews it while working; once it expires, any other worker may take it. A worker that
lost its lease stops before its next push. Git's compare-and-swap on the branch keeps even a
stale writer from overwriting a newer commit, and read-back confirmation keeps it from
recording anything untrue.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from ledger.domain.errors import LockHeld
from ledger.ports import Database

INDEX_WRITER = "index-writer"


@dataclass(frozen=True)
class LeaseState:
    holder: str | None
    expires_at: float

    def held_by_other(self, me: str, now: float) -> bool:
        """Another holder whose lease runs and whose process, when on this host, is alive."""
        if self.holder in (None, me) or self.expires_at <= now:
            return False
        return not _dead_on_this_host(self.holder)


def _dead_on_this_host(holder: str) -> bool:
    """A ``host:pid`` holder on this host whose process is gone (its lease can be taken at once)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    """A named lease in the store, taken for ``ttl`` seconds at a time."""

    def __init__(self, db: Database, holder: str, *, name: str = INDEX_WRITER, ttl: float = 30.0) -> None:
        self.db = db
        self.holder = holder
        self.name = name
        self.ttl = ttl
        with db.transaction() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS ledger_leases (name TEXT PRIMARY KEY, holder TEXT, "
                "expires_at DOUBLE PRECISION NOT NULL)"
            )

    def state(self) -> LeaseState:
        rows = self.db.query("SELECT holder, expires_at FROM ledger_leases WHERE name = ?", (self.name,))
        return LeaseState(rows[0][0], float(rows[0][1])) if rows else LeaseState(None, 0.0)

    def current_holder(self) -> str | None:
        return self.state().holder

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when another live holder has it."""
        now = time.time()
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO ledger_leases (name, holder, expires_at) VALUES (?, NULL, 0) "
                "ON CONFLICT (name) DO NOTHING",
                (self.name,),
            )
            cur.execute(f"SELECT holder, expires_at FROM ledger_leases WHERE name = ?{lock}", (self.name,))
            holder, expires_at = cur.fetchone()
            if LeaseState(holder, float(expires_at)).held_by_other(self.holder, now):
                return False
            cur.execute(
                "UPDATE ledger_leases SET holder = ?, expires_at = ? WHERE name = ?",
                (self.holder, now + self.ttl, self.name),
            )
        return True

    def acquire(self, *, wait: float = 0.0, poll: float = 0.5) -> None:
        """Take the lease, waiting up to ``wait`` seconds; LockHeld names the holder otherwise."""
        deadline = time.monotonic() + wait
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                state = self.state()
                msg = (
                    f"another index writer ({state.holder}) holds the lock until "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(state.expires_at))}"
                )
                raise LockHeld(msg, holder=state.holder)
            time.sleep(poll)

    def release(self) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE ledger_leases SET holder = NULL, expires_at = 0 WHERE name = ? AND holder = ?",
                (self.name, self.holder),
            )
