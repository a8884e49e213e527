"""The CLI's small value parsers: times, durations and "as of" moments.

TIME is ISO 8601 (``2020-02-20T21:40:00Z``); a time without an offset is UTC. DURATION is a
number with a unit, or several in a row: ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``. A moment is
a TIME or a plain integer log position. Every parser raises :class:`~ledger.domain.errors.Invalid`
naming the value it could not read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ledger.domain.errors import Invalid

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:[0-9]+[smhd])+")
_PART = re.compile(r"([0-9]+)([smhd])")


def parse_time(text: str, *, option: str = "TIME") -> datetime:
    """An aware UTC datetime from ISO 8601 text; no offset means UTC."""
    value = text.strip()
    try:
        if not value or not value[0].isdigit():
            raise ValueError(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{option} {text!r} is not an ISO 8601 time such as 2020-02-20T21:40:00Z"
        raise Invalid(msg, option=option, value=text) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_duration(text: str, *, option: str = "DURATION") -> float:
    """Seconds from a duration such as ``90s``, ``15m``, ``2h``, ``1d`` or ``1h30m``."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        msg = f"{option} {text!r} is not a duration such as 90s, 15m, 2h or 1d"
        raise Invalid(msg, option=option, value=text)
    return float(sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value)))


def parse_moment(text: str, *, option: str = "--at") -> int | datetime:
    """A log position (a plain non-negative integer) or a time."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        return parse_time(value, option=option)
    except Invalid:
        msg = f"{option} {text!r} is neither a log position nor an ISO 8601 time such as 2020-02-20T21:40:00Z"
        raise Invalid(msg, option=option, value=text) from None
