"""What one batch of events changes in the views, merged: the rows every view's handlers fill
and its writer empties (the handlers and writers live beside their tables, the routing in
``batch``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class IndexFile:
    crate: str
    path: str
    commit: str | None
    source: str
    at: float
    pos: int
    text: str
    """The entries as JSON (as ``_LINE_JSON`` writes them): ``[[version, key, yanked, digest], ...]``."""


@dataclass(frozen=True)
class TargetScope:
    """Which index target a set of views is of: the first (``primary``) or another one.

    Events that name a target (attempts, confirmations, failures, holds, scans, repairs) are
    folded only into the views of that target; events from before targets had names belong to
    the first. Every target's views hold every job; a job is open in another target's views
    only once it is scoped to that target (``IndexSyncScoped``).
    """

    name: str
    primary: bool = True

    def holds(self, e: dict[str, Any]) -> bool:
        """Whether an event naming (or not naming) a target belongs to these views."""
        target = e.get("target")
        return self.primary if target is None else bool(target == self.name)

    @property
    def new_job_state(self) -> str:
        """The state of a job just enqueued: open for the first target, else until scoped."""
        return "open" if self.primary else "unscoped"


PRIMARY = TargetScope("git")
"""The views of a ledger that names no targets: its one target's."""


@dataclass
class BatchRows:
    """The row changes of one batch of events, merged."""

    new_versions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version_updates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    new_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    scope: TargetScope = PRIMARY
    """The index target these views are of."""
    index_files: dict[str, list[IndexFile]] = field(default_factory=dict)
    """The files the batch saw replace each crate's, in order (folded when the batch is written)."""
    scans: list[tuple[Any, ...]] = field(default_factory=list)
    last_position: int = 0
    track_unsynced: bool = True
    """Keep ``view_unsynced`` (False while it does not exist)."""
    dialect: str = "sqlite"
    """The store's SQL dialect, for the way rows of many crates are read and deleted."""
