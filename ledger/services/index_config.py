"""The index's ``config.json``: where cargo downloads ``.crate`` files (``dl``) and finds the
registry's API (``api``). Written once, when the index has none, and confirmed by reading back;
an existing one is the operator's and is left as it is.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping

from ledger.domain.errors import RemoteUnavailable
from ledger.logs import log_step, warn_step
from ledger.services.core import LedgerCore

CONFIG_PATH = "config.json"
LEASE_TTL = 60.0


def registry_config(base_url: str) -> dict[str, str]:
    """The ``config.json`` that sends cargo to the registry at ``base_url`` for downloads and the API."""
    base = base_url.rstrip("/")
    return {"dl": f"{base}/api/v1/crates", "api": base}


def config_bytes(config: Mapping[str, str]) -> bytes:
    """``config.json`` as the ledger writes it."""
    return json.dumps(dict(config), indent=2).encode() + b"\n"


def ensure_config(ledger: LedgerCore, config: Mapping[str, str], *, wait_for_lock: float = 30.0) -> bool:
    """Write ``config.json`` into an index that has none; True once it is confirmed there.

    Returns False when the index already has one (a differing one is reported, never replaced).
    Raises :class:`~ledger.domain.errors.RemoteUnavailable` when the write cannot be confirmed.
    """
    index = ledger.index()
    lease = ledger.lease(f"{socket.gethostname()}:{os.getpid()}:config", LEASE_TTL)
    lease.acquire(wait=wait_for_lock)
    try:
        head = index.fetch()
        present = index.read_blob(head, CONFIG_PATH)
        wanted = config_bytes(config)
        if present is not None:
            try:
                differs = json.loads(present) != dict(config)
            except ValueError:
                differs = True
            if differs:
                warn_step(
                    "index_config_kept", remote=index.remote_url, found=present.decode(errors="replace")
                )
            return False
        commit = index.commit(head, {CONFIG_PATH: wanted}, "Add config.json")
        assert commit is not None
        report = index.push(commit)
        readback = index.read_back(commit, {CONFIG_PATH: wanted})
        if not readback.confirmed:
            msg = f"config.json was not confirmed at {index.remote_url} (the pusher said {report.status})"
            raise RemoteUnavailable(msg, remote=index.remote_url)
        log_step("index_config_written", remote=index.remote_url, commit=commit, **dict(config))
        return True
    finally:
        lease.release()
