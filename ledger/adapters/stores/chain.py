"""The hash chain over stored events: each event's link hashes the one before it.

``link(n) = sha256(link(n-1) || canonical(event n))`` where the canonical bytes are the
position, the aggregate id, its version, the topic and the stored state, each
length-prefixed. Editing, deleting, inserting or reordering a row breaks the chain at the
first position touched; :func:`verify_chain` names it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from uuid import UUID

from ledger.ports import Break, ChainReport

GENESIS = "0" * 64


_HEAD = struct.Struct(">qqI").pack
_LENGTH = struct.Struct(">I").pack


def canonical(position: int, originator_id: UUID | str, version: int, topic: str, state: bytes) -> bytes:
    """The bytes of one stored event that the chain covers.

    The position and the version (8 bytes each, big-endian), then the aggregate id (hex), the
    topic and the state, each after its length (4 bytes, big-endian).
    """
    oid = (originator_id.hex if isinstance(originator_id, UUID) else str(originator_id)).encode()
    name = topic.encode()
    data = bytes(state)
    return _HEAD(position, version, len(oid)) + oid + _LENGTH(len(name)) + name + _LENGTH(len(data)) + data


def next_link(previous: str, payload: bytes) -> str:
    """The link that follows ``previous`` for an event with these canonical bytes."""
    return hashlib.sha256(bytes.fromhex(previous) + payload).hexdigest()


def verify_chain(
    rows: Iterable[tuple[int | None, bytes | None, int | None, str | None]],
) -> ChainReport:
    """Walk rows of ``(event_position, canonical_bytes, link_position, link)`` joined on position.

    Rows come in position order; an event without a link was inserted behind the ledger's
    back, a link without an event was deleted, a link that does not follow was edited or
    reordered.
    """
    previous = GENESIS
    count = 0
    for event_pos, payload, link_pos, link in rows:
        if event_pos is None:
            assert link_pos is not None
            return ChainReport(count, previous, Break(link_pos, "event deleted: its link remains"))
        if link_pos is None or link is None:
            return ChainReport(count, previous, Break(event_pos, "event inserted: no link recorded"))
        assert payload is not None
        expected = next_link(previous, payload)
        if expected != link:
            problem = "event edited, reordered or removed before it: its link does not follow"
            return ChainReport(count, previous, Break(event_pos, problem))
        previous = link
        count += 1
    return ChainReport(count, previous, None)
