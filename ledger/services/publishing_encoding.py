"""The batched path's events written straight to their stored form, as the library's mapper writes them.

Each function gives the very bytes ``Mapper.to_stored_event`` gives for the same event; the
batched path compares both ways once per application before it uses them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.domain.aggregates import LIVE, YANKED, Crate, SyncJob
from ledger.services.publishing_terms import CheckedLine, Confirmation

_PUBLISHED_TOPIC = get_topic(Crate.VersionPublished)
_PUBLISHED_STATE = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"%s"},"crate":%s,"version":%s,"key":%s,'
    '"line":%s,"cksum":%s,"actor":%s,"job":{"_type_":"uuid_hex","_data_":"%s"}}'
)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ENQUEUED_TOPIC = get_topic(SyncJob.IndexSyncEnqueued)
_CONFIRMED_TOPIC = get_topic(SyncJob.IndexPushConfirmed)
_COMPLETED_TOPIC = get_topic(SyncJob.IndexSyncCompleted)
_JOB_TOPIC = get_topic(SyncJob)


def _stored(
    aggregate_id: UUID, version: int, topic: str, moment: datetime, fields: dict[str, Any]
) -> StoredEvent:
    """A stored event of ``fields`` (JSON values only, in the event's order) and its timestamp."""
    head = '{"timestamp":{"_type_":"datetime_iso","_data_":"' + moment.isoformat() + '"},'
    return StoredEvent(aggregate_id, version, topic, (head + _ENCODER.encode(fields)[1:]).encode())


def job_enqueued(
    job: UUID, crate: str, versions: list[str], actor: str, *, timestamp: datetime | None = None
) -> StoredEvent:
    """A new job's ``IndexSyncEnqueued`` (cause ``VersionPublished``), as the mapper stores it."""
    moment = SyncJob.IndexSyncEnqueued.create_timestamp() if timestamp is None else timestamp
    fields = {
        "originator_topic": _JOB_TOPIC,
        "crate": crate,
        "versions": versions,
        "cause": "VersionPublished",
        "actor": actor,
    }
    return _stored(job, 1, _ENQUEUED_TOPIC, moment, fields)


def job_done(
    job: UUID, crate: str, done: Confirmation, *, timestamps: Sequence[datetime] | None = None
) -> list[StoredEvent]:
    """A new job's ``IndexPushConfirmed`` then ``IndexSyncCompleted``, as the mapper stores them."""
    now = SyncJob.Event.create_timestamp
    confirmed, completed = timestamps if timestamps is not None else (now(), now())
    return [
        _stored(job, 2, _CONFIRMED_TOPIC, confirmed, {"crate": crate, **done._asdict()}),
        _stored(job, 3, _COMPLETED_TOPIC, completed, {"commit": done.commit}),
    ]


def published_events(
    crate: Crate,
    lines: Sequence[CheckedLine],
    actor_json: str,
    job: UUID,
    *,
    timestamps: Sequence[datetime] | None = None,
) -> list[StoredEvent]:
    """``Crate._published`` for each line, straight to the stored events the mapper would make.

    The crate changes as the events would change it (versions, spelling, version, modified
    time); ``PublicationLedger._direct_encoding_holds`` compares both ways before this is used.
    """
    stored: list[StoredEvent] = []
    version = crate.version
    versions, spelling = crate.versions, crate.spelling
    now = Crate.VersionPublished.create_timestamp
    job_hex = job.hex
    moment = crate.modified_on
    for place, ln in enumerate(lines):
        version += 1
        moment = now() if timestamps is None else timestamps[place]
        state = _PUBLISHED_STATE % (
            moment.isoformat(),
            json_string(ln.name),
            json_string(ln.vers),
            json_string(ln.key),
            ln.text,
            json_string(ln.cksum),
            actor_json,
            job_hex,
        )
        stored.append(StoredEvent(crate.id, version, _PUBLISHED_TOPIC, state.encode()))
        versions[ln.key] = YANKED if ln.yanked else LIVE
        spelling[ln.key] = ln.vers
    crate.version = version
    crate.modified_on = moment
    return stored


def json_string(text: str) -> str:
    """``text`` as a JSON string, as the mapper's encoder writes it (``ensure_ascii=False``)."""
    found: str = encode_basestring(text)
    return found
