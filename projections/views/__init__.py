"""Events to view rows, a batch at a time.

:class:`ViewBatch` folds a batch of events into the row changes they imply (so a version
published and yanked in the same batch becomes one insert), then :meth:`ViewBatch.flush`
writes them with a few statements inside the caller's transaction, which also moves
the tracking position. Every event is thereby applied exactly once, and the views can be
dropped and rebuilt from position zero.

Events are folded from their stored state as JSON (see :func:`decode`), not from domain event
objects: the views need a few fields of each, and building the objects cost most of a rebuild.
A handler reads the fields it needs; the library's encoded values (times, UUIDs) are read with
:func:`~projections.views.common._epoch` and :func:`~projections.views.common._uuid_text`, to
the same values the domain events hold.

The batch, and the one table that routes each event topic to its handler, are in
:mod:`~projections.views.batch`; each view's handlers and writes are in a module of its own
(:mod:`~projections.views.versions`, :mod:`~projections.views.jobs`,
:mod:`~projections.views.index`, :mod:`~projections.views.scans`,
:mod:`~projections.views.unsynced`); what they share is in :mod:`~projections.views.common`.
"""

from __future__ import annotations

from projections.views.batch import Handler, ViewBatch, decode
from projections.views.common import ENTRIES_TEXT, LINE_TEXT, Event, compact_json, event_time
from projections.views.versions import ADOPTED_FIRST

__all__ = [
    "ADOPTED_FIRST",
    "ENTRIES_TEXT",
    "LINE_TEXT",
    "Event",
    "Handler",
    "ViewBatch",
    "compact_json",
    "decode",
    "event_time",
]
