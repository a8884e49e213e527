"""The fault modes and the mode file: which protocol plays which mode, reading and writing it."""

from __future__ import annotations

import enum
import os
import threading
from pathlib import Path
from typing import Literal

POLL_SECONDS = 0.05

Protocol = Literal["http", "git"]

MODE_FILE = "mode"
APPLIED_FILE = "mode.applied"


class Mode(enum.StrEnum):
    """How the server answers the next connection or request."""

    OK = "ok"
    REJECT = "reject"
    REFUSE = "refuse"
    HANG = "hang"
    HTTP_500 = "http500"
    NO_STATUS = "no_status"
    LIE = "lie"
    ROLLBACK = "rollback"


SUPPORTED_MODES: dict[str, frozenset[Mode]] = {
    "http": frozenset(Mode),
    "git": frozenset({Mode.OK, Mode.REJECT, Mode.REFUSE, Mode.HANG, Mode.ROLLBACK}),
}


def check_supported(protocol: str, mode: Mode) -> None:
    if protocol not in SUPPORTED_MODES:
        raise ValueError(f"unknown protocol {protocol!r}: use 'http' or 'git'")
    if mode not in SUPPORTED_MODES[protocol]:
        raise ValueError(f"a {protocol}:// server cannot play mode {mode.value!r}")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_mode(base_dir: Path) -> Mode:
    """The mode recorded in ``base_dir``; a missing or unknown value reads as OK."""
    text = read_text(base_dir / MODE_FILE)
    try:
        return Mode(text) if text else Mode.OK
    except ValueError:
        return Mode.OK


def write_mode(base_dir: Path, mode: Mode) -> None:
    write_atomically(base_dir / MODE_FILE, f"{mode.value}\n")
