"""The domain: crates, index sync jobs and the index remote, as event-sourced aggregates.

Every fact the ledger records is one of the events declared here. They are a public schema:
projections and operators' queries depend on them, so each carries an explicit, stable
``TOPIC`` (moving or renaming a class never orphans stored events) and changes only by
``class_version`` and upcasters.

Aggregates:

- :class:`Crate` (id derived from the collision key of the name): versions published, yanked,
  unyanked and deleted. Its invariants refuse duplicates, collisions and impossible changes.
- :class:`SyncJob` (one crate's change on its way to the index): enqueued in the same save as
  the change that caused it, then attempted, failed, confirmed, completed or abandoned; held
  while the remote's file holds lines the ledger has no record of.
- :class:`IndexRemote` (id derived from the remote URL without credentials): scans of the real
  index and repairs applied to it.
- :class:`ApiToken` (id derived from the token's public part): a registry user's API token, as
  a hash, and its revocation. A crate's owners are events of the :class:`Crate`.

Nothing here imports SQL, git or CLI code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import AlreadyPublished, Conflict, Forbidden, NameCollision, NotFound
from ledger.domain.names import collision_key

NAMESPACE = uuid5(NAMESPACE_URL, "ledger:crate")
REMOTE_NAMESPACE = uuid5(NAMESPACE_URL, "ledger:remote")
TOKEN_NAMESPACE = uuid5(NAMESPACE_URL, "ledger:token")

IMPORT_ACTOR = "import"
"""The actor of lines adopted from an existing index (``import-index``, adoption on first touch,
lines restored from the index's history): they were published before the ledger recorded them,
so a crate's file lists them before the versions published through the ledger."""

LIVE = "published"
YANKED = "yanked"
DELETED = "deleted"


class Crate(Aggregate):
    """A crate and the state of each of its versions, keyed by version without build metadata."""

    TOPIC: ClassVar[str] = "ledger:Crate"

    class Event(Aggregate.Event):
        TOPIC: ClassVar[str] = "ledger:Crate.Event"

    @staticmethod
    def create_id(name: str) -> UUID:
        """The id of a crate: a UUID of its collision key, so colliding names share it."""
        return uuid5(NAMESPACE, collision_key(name))

    class Registered(Aggregate.Created):
        """The first publish of a crate: its name as it will be spelled in the index."""

        TOPIC: ClassVar[str] = "ledger:CrateRegistered"
        name: str

    @event(Registered)
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[str, str] = {}
        self.spelling: dict[str, str] = {}
        self.owners: list[str] = []

    owners: Sequence[str] = ()
    """Who may publish, yank and unyank through the registry's API (empty: nobody yet; a crate
    recorded before owners existed, or adopted from an index, until an operator adds one)."""

    # -- invariants -------------------------------------------------------------------------

    def check_name(self, name: str) -> None:
        """Refuse a spelling that differs from the registered one but collides with it."""
        if name != self.name:
            msg = f"crate name {name!r} collides with the existing crate {self.name!r}"
            raise NameCollision(msg, crate=name, existing=self.name)

    def check_can_publish(self, key: str, version: str) -> None:
        """Refuse a version whose key (build metadata ignored) was ever used."""
        state = self.versions.get(key)
        if state == DELETED:
            msg = f"{self.name} {version} was deleted and cannot be published again"
            raise Conflict(msg, crate=self.name, version=version)
        if state is not None:
            existing = self.spelling[key]
            msg = f"{self.name} {version} is already published (as {existing})"
            raise AlreadyPublished(msg, crate=self.name, version=version, existing=existing)

    def check_owner(self, user: str, action: str) -> None:
        """Refuse a registry request by someone who does not own the crate."""
        if user in self.owners:
            return
        if not self.owners:
            msg = f"{self.name} has no owners yet: an operator adds one (`ledger owner add {self.name} USER`)"
        else:
            msg = f"{user} is not an owner of {self.name}: only its owners may {action} it"
        raise Forbidden(msg, crate=self.name, user=user, action=action)

    def state_of(self, key: str, version: str) -> str:
        """The state of a version, or NotFound."""
        state = self.versions.get(key)
        if state is None:
            msg = f"{self.name} has no version {version}"
            raise NotFound(msg, crate=self.name, version=version)
        return state

    def check_can_yank(self, key: str, version: str) -> None:
        state = self.state_of(key, version)
        if state != LIVE:
            msg = f"{self.name} {version} is {state}, not published: nothing to yank"
            raise Conflict(msg, crate=self.name, version=version, state=state)

    def check_can_unyank(self, key: str, version: str) -> None:
        state = self.state_of(key, version)
        if state != YANKED:
            msg = f"{self.name} {version} is {state}, not yanked: nothing to unyank"
            raise Conflict(msg, crate=self.name, version=version, state=state)

    def check_can_delete(self, key: str, version: str) -> None:
        state = self.state_of(key, version)
        if state == DELETED:
            msg = f"{self.name} {version} is already deleted"
            raise Conflict(msg, crate=self.name, version=version, state=state)

    # -- events -----------------------------------------------------------------------------

    class VersionPublished(Event):
        """A version accepted by the registry, with its exact cargo index line."""

        TOPIC: ClassVar[str] = "ledger:VersionPublished"
        crate: str
        version: str
        key: str
        line: dict[str, Any]
        cksum: str
        actor: str
        job: UUID

    @event(VersionPublished)
    def _published(
        self,
        crate: str,
        version: str,
        key: str,
        line: dict[str, Any],
        cksum: str,
        actor: str,
        job: UUID,
    ) -> None:
        self.versions[key] = YANKED if line.get("yanked") else LIVE
        self.spelling[key] = version

    class VersionYanked(Event):
        TOPIC: ClassVar[str] = "ledger:VersionYanked"
        crate: str
        version: str
        key: str
        actor: str
        job: UUID

    @event(VersionYanked)
    def _yanked(self, crate: str, version: str, key: str, actor: str, job: UUID) -> None:
        self.versions[key] = YANKED

    class VersionUnyanked(Event):
        TOPIC: ClassVar[str] = "ledger:VersionUnyanked"
        crate: str
        version: str
        key: str
        actor: str
        job: UUID

    @event(VersionUnyanked)
    def _unyanked(self, crate: str, version: str, key: str, actor: str, job: UUID) -> None:
        self.versions[key] = LIVE

    class VersionDeleted(Event):
        """An admin removal: the line must leave the index."""

        TOPIC: ClassVar[str] = "ledger:VersionDeleted"
        crate: str
        version: str
        key: str
        actor: str
        reason: str
        job: UUID

    @event(VersionDeleted)
    def _deleted(self, crate: str, version: str, key: str, actor: str, reason: str, job: UUID) -> None:
        self.versions[key] = DELETED

    class OwnerAdded(Event):
        """``user`` may publish, yank and unyank the crate through the registry's API."""

        TOPIC: ClassVar[str] = "ledger:CrateOwnerAdded"
        crate: str
        user: str
        actor: str

    @event(OwnerAdded)
    def add_owner(self, crate: str, user: str, actor: str) -> None:
        self.owners = sorted({*self.owners, user})  # a list: snapshots hold plain JSON

    class OwnerRemoved(Event):
        TOPIC: ClassVar[str] = "ledger:CrateOwnerRemoved"
        crate: str
        user: str
        actor: str

    @event(OwnerRemoved)
    def remove_owner(self, crate: str, user: str, actor: str) -> None:
        self.owners = [owner for owner in self.owners if owner != user]

    class RequestRefused(Event):
        """A registry request for the crate by someone it refused (not an owner): nothing changed."""

        TOPIC: ClassVar[str] = "ledger:CrateRequestRefused"
        crate: str
        action: str
        version: str | None
        actor: str
        reason: str

    @event(RequestRefused)
    def refused(self, crate: str, action: str, version: str | None, actor: str, reason: str) -> None:
        pass


class SyncJob(Aggregate):
    """One crate's change on its way to the index."""

    TOPIC: ClassVar[str] = "ledger:SyncJob"

    class Event(Aggregate.Event):
        TOPIC: ClassVar[str] = "ledger:SyncJob.Event"

    class IndexSyncEnqueued(Aggregate.Created):
        """Saved in the same transaction as the change that caused it (the outbox)."""

        TOPIC: ClassVar[str] = "ledger:IndexSyncEnqueued"
        crate: str
        versions: list[str]
        cause: str
        actor: str

    @event(IndexSyncEnqueued)
    def __init__(self, crate: str, versions: list[str], cause: str, actor: str) -> None:
        self.crate = crate
        self.open = True
        self.attempts = 0
        self.failures = 0
        self.holds = 0
        self.held_for: list[str] | None = None
        self.targets: list[str] | None = None
        self.confirmed_on: list[str] = []
        self.failures_on: dict[str, int] = {}

    class IndexSyncScoped(Event):
        """The targets this job must reach before it is done (a ledger with several index
        targets records it with the enqueue); a job without it is for the first target only."""

        TOPIC: ClassVar[str] = "ledger:IndexSyncScoped"
        targets: list[str]

    @event(IndexSyncScoped)
    def scoped(self, targets: list[str]) -> None:
        self.targets = list(targets)

    def scope(self, primary: str) -> list[str]:
        """The targets that must confirm this job: as scoped, else the first one only."""
        return list(getattr(self, "targets", None) or [primary])

    def confirmed_for(self, target: str, primary: str) -> bool:
        """Whether ``target`` confirmed this job (a job confirmed before targets had names
        was confirmed by the first)."""
        confirmed = getattr(self, "confirmed_on", None)
        if confirmed is None:
            return not self.open and target == primary
        return target in confirmed

    def confirmed_everywhere(self, primary: str) -> bool:
        """Whether every target this job is for confirmed it (it may be completed)."""
        return all(self.confirmed_for(target, primary) for target in self.scope(primary))

    def failures_for(self, target: str) -> int:
        """Failed attempts on ``target`` (all of them for a job restored from an older snapshot)."""
        found = getattr(self, "failures_on", None)
        return self.failures if found is None else int(found.get(target, 0))

    class IndexPushAttempted(Event):
        """A push and what the pusher reported about it: recorded, never trusted."""

        TOPIC: ClassVar[str] = "ledger:IndexPushAttempted"
        remote: str
        branch: str
        commit: str | None
        parent: str | None
        reported: str
        message: str | None
        worker: str
        batch: int
        target: str

    @event(IndexPushAttempted)
    def attempted(
        self,
        remote: str,
        branch: str,
        commit: str | None,
        parent: str | None,
        reported: str,
        message: str | None,
        worker: str,
        batch: int,
        target: str,
    ) -> None:
        self.attempts += 1
        self.held_for = None

    class IndexPushConfirmed(Event):
        """The remote was read back and holds the crate's file as written."""

        TOPIC: ClassVar[str] = "ledger:IndexPushConfirmed"
        crate: str
        commit: str
        remote_head: str
        method: str
        path: str
        target: str
        entries: list[list[Any]]

    @event(IndexPushConfirmed)
    def confirmed(
        self,
        crate: str,
        commit: str,
        remote_head: str,
        method: str,
        path: str,
        target: str,
        entries: list[list[Any]],
    ) -> None:
        confirmed = getattr(self, "confirmed_on", None)
        if confirmed is not None and target not in confirmed:
            confirmed.append(target)

    class IndexPushFailed(Event):
        """Why a push did not count: rejected, no_status, unconfirmed, timeout, unreachable."""

        TOPIC: ClassVar[str] = "ledger:IndexPushFailed"
        reason: str
        detail: str | None
        remote_head: str | None
        next_retry: float | None
        target: str

    @event(IndexPushFailed)
    def failed(
        self, reason: str, detail: str | None, remote_head: str | None, next_retry: float | None, target: str
    ) -> None:
        self.failures += 1
        found = getattr(self, "failures_on", None)
        if found is not None:
            found[target] = found.get(target, 0) + 1

    class IndexSyncHeld(Event):
        """The remote's file for the crate holds lines the ledger has no record of: not pushed over.

        ``foreign`` labels those lines (their versions, or ``line N`` for a line whose version
        cannot be read); ``entries`` is the whole file as read at ``remote_head``, each entry
        ``[version, key, yanked, digest]``; ``reason`` tells the operator what to do. The job
        stays open; ``next_retry`` is when the worker looks at the file again.
        """

        TOPIC: ClassVar[str] = "ledger:IndexSyncHeld"
        crate: str
        path: str
        remote_head: str
        foreign: list[str]
        entries: list[list[Any]]
        reason: str
        next_retry: float | None
        target: str

    @event(IndexSyncHeld)
    def held(
        self,
        crate: str,
        path: str,
        remote_head: str,
        foreign: list[str],
        entries: list[list[Any]],
        reason: str,
        next_retry: float | None,
        target: str,
    ) -> None:
        self.holds = self.hold_count() + 1
        self.held_for = list(foreign)

    def hold_count(self) -> int:
        """How many holds were recorded (0 for a job restored from a snapshot taken before any)."""
        return int(getattr(self, "holds", 0))

    def last_held_for(self) -> list[str] | None:
        """The foreign lines of the last hold, None when an attempt came after it (or none)."""
        return getattr(self, "held_for", None)

    class IndexSyncCompleted(Event):
        TOPIC: ClassVar[str] = "ledger:IndexSyncCompleted"
        commit: str

    @event(IndexSyncCompleted)
    def completed(self, commit: str) -> None:
        self.open = False

    class IndexSyncAbandoned(Event):
        TOPIC: ClassVar[str] = "ledger:IndexSyncAbandoned"
        reason: str

    @event(IndexSyncAbandoned)
    def abandoned(self, reason: str) -> None:
        self.open = False


class IndexRemote(Aggregate):
    """The real index remote, as scans saw it and repairs changed it."""

    TOPIC: ClassVar[str] = "ledger:IndexRemote"

    class Event(Aggregate.Event):
        TOPIC: ClassVar[str] = "ledger:IndexRemote.Event"

    @staticmethod
    def create_id(url: str) -> UUID:
        """The id of a remote: a UUID of its URL without credentials."""
        return uuid5(REMOTE_NAMESPACE, url)

    class Registered(Aggregate.Created):
        TOPIC: ClassVar[str] = "ledger:IndexRemoteRegistered"
        url: str

    @event(Registered)
    def __init__(self, url: str) -> None:
        self.url = url

    class IndexScanned(Event):
        """An audit of the real index at one commit.

        ``observed`` maps the collision key of each crate whose real file differed from what
        the ledger believed the index held to ``[crate, path, entries]``, each entry
        ``[version, key, yanked, digest]`` (no entries: the file is missing).
        ``base_position`` is the log position the comparison was made against.
        """

        TOPIC: ClassVar[str] = "ledger:IndexScanned"
        branch: str
        head: str | None
        base_position: int
        files: int
        changed_files: int
        observed: dict[str, list[Any]]
        discrepancies: list[dict[str, Any]]
        target: str

    @event(IndexScanned)
    def scanned(
        self,
        branch: str,
        head: str | None,
        base_position: int,
        files: int,
        changed_files: int,
        observed: dict[str, list[Any]],
        discrepancies: list[dict[str, Any]],
        target: str,
    ) -> None:
        self.last_head = head

    class RepairApplied(Event):
        """A repair commit: what it changed, and whether the remote was read back."""

        TOPIC: ClassVar[str] = "ledger:RepairApplied"
        branch: str
        commit: str | None
        parent: str | None
        changes: list[dict[str, Any]]
        reported: str
        confirmed: bool
        actor: str
        target: str

    @event(RepairApplied)
    def repaired(
        self,
        branch: str,
        commit: str | None,
        parent: str | None,
        changes: list[dict[str, Any]],
        reported: str,
        confirmed: bool,
        actor: str,
        target: str,
    ) -> None:
        pass


class ApiToken(Aggregate):
    """An API token of the registry: whose it is and the SHA-256 of its secret, never the secret.

    Its id derives from the token's public part (``token_id``), so a request's token is found in
    one read; it is revoked for good.
    """

    TOPIC: ClassVar[str] = "ledger:ApiToken"

    class Event(Aggregate.Event):
        TOPIC: ClassVar[str] = "ledger:ApiToken.Event"

    @staticmethod
    def create_id(token_id: str) -> UUID:
        return uuid5(TOKEN_NAMESPACE, token_id)

    class Created(Aggregate.Created):
        TOPIC: ClassVar[str] = "ledger:ApiTokenCreated"
        token_id: str
        user: str
        digest: str
        actor: str

    @event(Created)
    def __init__(self, token_id: str, user: str, digest: str, actor: str) -> None:
        self.token_id = token_id
        self.user = user
        self.digest = digest
        self.revoked = False

    class Revoked(Event):
        TOPIC: ClassVar[str] = "ledger:ApiTokenRevoked"
        actor: str

    @event(Revoked)
    def revoke(self, actor: str) -> None:
        self.revoked = True
