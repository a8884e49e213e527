"""One batch of events: each event read and routed by its topic to its view's handler (the one
table of them is ``_HANDLERS``), and the merged rows of every view written in one pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from ledger.domain.aggregates import Crate, IndexRemote, SyncJob
from ledger.ports import Cursor, LogRow
from projections.views import index, jobs, scans, unsynced, versions
from projections.views.common import Event, _loads, _loads_entries
from projections.views.state import BatchRows
from projections.views.versions import _version_change


def decode(mapper: Mapper[Any], row: LogRow, *, compact: bool = False) -> Event:
    """A stored event's state as JSON, the library's encoded values (times, UUIDs) left encoded.

    Plain JSON when the state was stored as plain JSON by the current version of its class;
    otherwise (encrypted, compressed, or an older class version to upcast) through the
    library's domain event, encoded again into the same shape. A topic that names no event
    class fails here, like a state that is not JSON. ``compact``: the mapper writes JSON as
    ``_LINE_JSON`` does (see :func:`compact_json`), so a line's stored text is kept.
    """
    position, originator_id, topic, raw = row
    handler = _handler(topic)
    if mapper.cipher is None and mapper.compressor is None:
        text = raw.decode()
        state = _loads_entries(text) if compact and handler is jobs._confirmed else None
        if state is None:
            state = _loads(text, compact)
        if "class_version" not in state:
            return position, originator_id, topic, state
    stored = StoredEvent(originator_id=UUID(originator_id), originator_version=0, topic=topic, state=raw)
    event = vars(mapper.to_domain_event(stored)).copy()
    del event["originator_id"], event["originator_version"]
    return position, originator_id, topic, json.loads(mapper.transcoder.encode(event))


@dataclass
class ViewBatch(BatchRows):
    """One batch of events: each folded into the rows of its views, then all written at once."""

    def apply(self, event: Event, cursor: Cursor) -> None:
        """Fold one event into the batch (reads the cursor only for scans' race checks)."""
        handler = _handler(event[2])
        if handler is not None and (handler not in _TARGETED or self.scope.holds(event[3])):
            handler(self, event[0], event[1], event[3], cursor)
        self.last_position = event[0]

    def flush(self, cursor: Cursor) -> None:
        """Write the merged changes with the caller's cursor (inside its transaction)."""
        versions._flush_versions(self, cursor)
        jobs._flush_jobs(self, cursor)
        index._flush_index(self, cursor)
        if self.track_unsynced:
            unsynced._flush_unsynced(self, cursor)
        scans._flush_scans(self, cursor)


Handler = Callable[[ViewBatch, int, str, dict[str, Any], Cursor], None]


def _state_handler(state: str) -> Handler:
    def handle(batch: ViewBatch, pos: int, _: str, e: dict[str, Any], __: Cursor) -> None:
        _version_change(batch, pos, e, state)

    return handle


_HANDLERS: dict[type, Handler] = {
    Crate.VersionPublished: versions._published,
    Crate.VersionYanked: _state_handler("yanked"),
    Crate.VersionUnyanked: _state_handler("published"),
    Crate.VersionDeleted: _state_handler("deleted"),
    SyncJob.IndexSyncEnqueued: jobs._enqueued,
    SyncJob.IndexSyncScoped: jobs._scoped,
    SyncJob.IndexPushAttempted: jobs._attempted,
    SyncJob.IndexPushFailed: jobs._failed,
    SyncJob.IndexPushConfirmed: jobs._confirmed,
    SyncJob.IndexSyncHeld: jobs._held,
    SyncJob.IndexSyncCompleted: jobs._completed,
    SyncJob.IndexSyncAbandoned: jobs._abandoned,
    IndexRemote.IndexScanned: scans._scanned,
    IndexRemote.RepairApplied: index._repaired,
}
_TARGETED = frozenset(
    (jobs._attempted, jobs._failed, jobs._confirmed, jobs._held, scans._scanned, index._repaired)
)
"""Handlers of events that name the index target they are about."""
_BY_TOPIC: dict[str, Handler | None] = {}


def _handler(topic: str) -> Handler | None:
    """The handler of the event class a stored topic names (None: nothing in the views)."""
    try:
        return _BY_TOPIC[topic]
    except KeyError:
        handler = _BY_TOPIC[topic] = _HANDLERS.get(resolve_topic(topic))
        return handler
