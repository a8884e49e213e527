"""The registry's use cases behind cargo's web API: publish, yank, unyank and download.

Every request is authenticated by its API token; a change is refused to anyone who does not own
the crate (recorded on the crate, with the user); a publish is checked whole (framing, metadata,
the index line derived from it, the crate's state) before anything is written; then the
``.crate`` file is stored, and only then is the publish recorded with its index sync job. A
crash between the two leaves an unreferenced file, never an index line without its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.domain.aggregates import Crate
from ledger.domain.cargo_publish import index_line, parse_publish_body
from ledger.domain.errors import Forbidden, InfrastructureError, NotFound
from ledger.domain.index_format import parse_line
from ledger.domain.names import collision_key, validate_name
from ledger.domain.versions import parse_version
from ledger.logs import log_step
from ledger.ports import CrateFiles
from ledger.services.core import LedgerCore
from ledger.services.publishing_terms import Receipt
from projections.queries import version_cksum

__all__ = ["Published", "Registry"]


@dataclass(frozen=True)
class Published:
    """An accepted publish: the receipt of its events and the stored file's SHA-256."""

    receipt: Receipt
    cksum: str
    user: str


class Registry:
    """cargo's registry API over a ledger and its ``.crate`` files."""

    def __init__(self, ledger: LedgerCore, files: CrateFiles, *, max_crate_bytes: int) -> None:
        self.ledger = ledger
        self.files = files
        self.max_crate_bytes = max_crate_bytes

    def publish(self, token: str | None, body: bytes) -> Published:
        """``PUT /api/v1/crates/new``: check everything, store the file, record the publish."""
        app = self.ledger.app
        user = app.authenticate(token)
        request = parse_publish_body(body, max_crate_bytes=self.max_crate_bytes)
        line = parse_line(index_line(request))
        crate = app.find_crate(line.name)
        if crate is not None:
            self._owned(crate, user, "publish", line.vers)
            crate.check_name(line.name)
            crate.check_can_publish(line.key, line.vers)
        self.files.put(request.cksum, request.crate)
        try:
            receipt = app.publish(line.fields, user, owner=user)
        except Forbidden as exc:  # the owners changed since the check above
            app.record_refusal(line.name, "publish", line.vers, user, exc.message)
            raise
        log_step(
            "registry_publish",
            crate=receipt.crate,
            version=receipt.version,
            actor=user,
            job=str(receipt.job),
            cksum=request.cksum,
            bytes=len(request.crate),
        )
        return Published(receipt, request.cksum, user)

    def yank(self, token: str | None, crate: str, version: str) -> Receipt:
        """``DELETE /api/v1/crates/{crate}/{version}/yank``."""
        return self._state_change(token, crate, version, "yank")

    def unyank(self, token: str | None, crate: str, version: str) -> Receipt:
        """``PUT /api/v1/crates/{crate}/{version}/unyank``."""
        return self._state_change(token, crate, version, "unyank")

    def download(self, crate: str, version: str) -> bytes:
        """The ``.crate`` file of a published or yanked version (the index's ``dl``)."""
        validate_name(crate)
        key = parse_version(version).key
        self.ledger.views.catch_up()
        cksum = version_cksum(self.ledger.db, collision_key(crate), key)
        if cksum is None:
            msg = f"{crate} has no version {version} to download"
            raise NotFound(msg, crate=crate, version=version)
        data = self.files.get(cksum)
        if data is None:
            msg = f"the .crate file of {crate} {version} (SHA-256 {cksum}) is missing from the registry"
            raise InfrastructureError(msg, crate=crate, version=version, cksum=cksum)
        return data

    def _state_change(self, token: str | None, crate: str, version: str, action: str) -> Receipt:
        app = self.ledger.app
        user = app.authenticate(token)
        validate_name(crate)
        parse_version(version)
        found = app.find_crate(crate)
        if found is None:
            msg = f"no crate named {crate!r}"
            raise NotFound(msg, crate=crate)
        self._owned(found, user, action, version)
        change = app.yank if action == "yank" else app.unyank
        try:
            receipt = change(found.name, version, user, owner=user)
        except Forbidden as exc:
            app.record_refusal(found.name, action, version, user, exc.message)
            raise
        log_step(f"registry_{action}", crate=receipt.crate, version=version, actor=user, job=str(receipt.job))
        return receipt

    def _owned(self, crate: Crate, user: str, action: str, version: str | None) -> None:
        """Forbidden (recorded on the crate) unless ``user`` owns ``crate``."""
        try:
            crate.check_owner(user, action)
        except Forbidden as exc:
            self.ledger.app.record_refusal(crate.name, action, version, user, exc.message)
            log_step("registry_refused", crate=crate.name, version=version, actor=user, action=action)
            raise


def warnings() -> dict[str, Any]:
    """What cargo expects beside an accepted publish: nothing to warn about."""
    return {"invalid_categories": [], "invalid_badges": [], "other": []}
