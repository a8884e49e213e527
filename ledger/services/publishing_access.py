"""Who may change a crate through the registry's API: its owners, API tokens, refusals recorded.

:class:`RegistryAccess` is a mixin of :class:`~ledger.services.publishing.PublicationLedger`.
Owners are events of the crate (``OwnerAdded``, ``OwnerRemoved``); a request refused to a
known user is recorded on the crate (``RequestRefused``) and changes nothing; a token is an
:class:`~ledger.domain.aggregates.ApiToken` holding only the SHA-256 of its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.domain.aggregates import ApiToken, Crate
from ledger.domain.errors import Conflict, Invalid, NotFound, Unauthorized
from ledger.logs import log_step
from ledger.services.publishing_terms import check_actor, store_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventsourcing.application import Repository
    from eventsourcing.persistence import Recording

TOKEN_PREFIX = "ldg"  # noqa: S105  (the tokens' public prefix, not a secret)
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_(?P<id>[0-9a-f]{{16}})_(?P<secret>[A-Za-z0-9_-]{{43}})")
SAVE_RETRIES = 5


def check_user(user: str) -> str:
    """A registry user's name: letters, digits, ``_ . -``, at most 64; Invalid otherwise."""
    if not isinstance(user, str) or USER_NAME.fullmatch(user) is None:
        msg = f"user name {user!r} is not valid: up to 64 letters, digits, '_', '.', '-', first alphanumeric"
        raise Invalid(msg, field="user")
    return user


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RegistryAccess:
    """Owners, tokens and refusals of :class:`~ledger.services.publishing.PublicationLedger`."""

    if TYPE_CHECKING:

        @property
        def repository(self) -> Repository[UUID]: ...

        save: Callable[..., list[Recording[UUID]]]

        def find_crate(self, name: str) -> Crate | None: ...

    # -- owners -----------------------------------------------------------------------------------

    def owners(self, name: str) -> list[str]:
        crate = self._crate(name)
        return sorted(crate.owners)

    def add_owner(self, name: str, user: str, actor: str) -> int:
        """Make ``user`` an owner of the crate; the log position of the event."""
        check_user(user)

        def change(crate: Crate) -> None:
            if user in crate.owners:
                msg = f"{user} already owns {crate.name}"
                raise Conflict(msg, crate=crate.name, user=user)
            crate.add_owner(crate=crate.name, user=user, actor=actor)

        return self._save_crate(name, actor, change, "owner_added", user=user)

    def remove_owner(self, name: str, user: str, actor: str) -> int:
        """``user`` no longer owns the crate; the log position of the event."""

        def change(crate: Crate) -> None:
            if user not in crate.owners:
                msg = f"{user} is not an owner of {crate.name}"
                raise NotFound(msg, crate=crate.name, user=user)
            crate.remove_owner(crate=crate.name, user=user, actor=actor)

        return self._save_crate(name, actor, change, "owner_removed", user=user)

    def record_refusal(self, name: str, action: str, version: str | None, actor: str, reason: str) -> int:
        """Record on the crate that a request by ``actor`` was refused; nothing else changes."""

        def change(crate: Crate) -> None:
            crate.refused(crate=crate.name, action=action, version=version, actor=actor, reason=reason)

        return self._save_crate(name, actor, change, "request_refused", action=action, version=version)

    def _crate(self, name: str) -> Crate:
        crate = self.find_crate(name)
        if crate is None:
            msg = f"no crate named {name!r}"
            raise NotFound(msg, crate=name)
        return crate

    def _save_crate(self, name: str, actor: str, change: Any, step: str, **logged: object) -> int:
        check_actor(actor)
        for _ in range(SAVE_RETRIES):
            crate = self._crate(name)
            change(crate)
            try:
                recordings = self.save(crate)
            except IntegrityError:
                continue  # another writer saved the crate first: decide again on its new state
            except PersistenceError as exc:
                raise store_error(exc) from exc
            position = max(r.notification.id for r in recordings)
            log_step(step, crate=crate.name, actor=actor, position=position, **logged)
            return position
        msg = f"{name}: the crate kept changing under concurrent writers; try again"
        raise Conflict(msg, crate=name)

    # -- tokens -----------------------------------------------------------------------------------

    def create_token(self, user: str, actor: str) -> tuple[str, str]:
        """A new API token for ``user``: (token id, the token). The token is shown once: only its
        SHA-256 is recorded."""
        check_user(user)
        check_actor(actor)
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        record = ApiToken(token_id=token_id, user=user, digest=token_digest(token), actor=actor)
        try:
            self.save(record)
        except PersistenceError as exc:
            raise store_error(exc) from exc
        log_step("token_created", user=user, token_id=token_id, actor=actor)
        return token_id, token

    def revoke_token(self, token_id: str, actor: str) -> str:
        """Revoke a token by its id; the user it belonged to."""
        check_actor(actor)
        record = self._token(token_id)
        if record is None:
            msg = f"no API token with id {token_id!r}"
            raise NotFound(msg, token_id=token_id)
        if record.revoked:
            msg = f"API token {token_id} is already revoked"
            raise Conflict(msg, token_id=token_id)
        record.revoke(actor=actor)
        try:
            self.save(record)
        except PersistenceError as exc:
            raise store_error(exc) from exc
        log_step("token_revoked", user=record.user, token_id=token_id, actor=actor)
        return str(record.user)

    def authenticate(self, token: str | None) -> str:
        """The user whose API token this is; :class:`Unauthorized` for none, unknown or revoked."""
        if not token:
            msg = "this request needs an API token: `cargo login` or CARGO_REGISTRIES_<NAME>_TOKEN"
            raise Unauthorized(msg)
        found = _TOKEN.fullmatch(token.strip())
        record = None if found is None else self._token(found["id"])
        if record is None or not hmac.compare_digest(record.digest, token_digest(token.strip())):
            msg = "the API token is not valid for this registry"
            raise Unauthorized(msg)
        if record.revoked:
            msg = f"the API token {record.token_id} was revoked"
            raise Unauthorized(msg, token_id=record.token_id)
        return str(record.user)

    def _token(self, token_id: str) -> ApiToken | None:
        if re.fullmatch(r"[0-9a-f]{16}", token_id) is None:
            return None
        try:
            found: Any = self.repository.get(ApiToken.create_id(token_id))
        except AggregateNotFoundError:
            return None
        assert isinstance(found, ApiToken)
        return found
