"""Structured log lines: one JSON object per step, naming crate, version, actor, job, commit."""

from __future__ import annotations

import json
import logging
from typing import Any

from ledger.settings import redact

logger = logging.getLogger("ledger")


def log_step(step: str, /, **fields: Any) -> None:
    """Log one step as a JSON line on the ``ledger`` logger (credentials redacted)."""
    _log(logging.INFO, step, fields)


def warn_step(step: str, /, **fields: Any) -> None:
    """Log a step that needs attention (a failed push, an unreachable store) at WARNING."""
    _log(logging.WARNING, step, fields)


def _log(level: int, step: str, fields: dict[str, Any]) -> None:
    if logger.isEnabledFor(level):
        payload = {"step": step, **{k: v for k, v in fields.items() if v is not None}}
        logger.log(
            level, redact(json.dumps(payload, default=str, sort_keys=False)), extra={"ledger_step": payload}
        )


class TextFormatter(logging.Formatter):
    """``LEVEL step key=value ...`` for people reading a terminal (``LEDGER_LOG_FORMAT=text``)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = getattr(record, "ledger_step", None)
        if not isinstance(payload, dict):
            return f"{record.levelname.lower()} {record.getMessage()}"
        step = payload.get("step", "")
        rest = " ".join(f"{k}={_text(v)}" for k, v in payload.items() if k != "step")
        return redact(f"{record.levelname.lower()} {step} {rest}".rstrip())


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text
