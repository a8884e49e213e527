"""Crate names: cargo's rules, the collision key, and the registry index layout.

A crate name is 1 to 64 ASCII letters, digits, ``-`` and ``_``, starting with a
letter, and not a Windows device name. Two names collide when they are equal after lowercasing and folding
``-`` into ``_``. Each crate's index file lives at a path derived from its
lowercased name (``1/a``, ``2/ab``, ``3/a/abc``, ``ab/cd/abcdef``).
"""

from __future__ import annotations

import string

from ledger.domain.errors import InvalidName

MAX_NAME_LENGTH = 64

WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))]
)
"""Windows device names: a file so named cannot be checked out on Windows, so crates.io refuses
them as crate names, and so does the ledger (whatever the case)."""

_LETTERS = frozenset(string.ascii_letters)
_ALLOWED = frozenset(string.ascii_letters + string.digits + "-_")


def _problem(name: str) -> str | None:
    """What is wrong with ``name``, or None when it is a valid crate name."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long, more than {MAX_NAME_LENGTH}"
    if not name.isascii():
        bad = next(c for c in name if not c.isascii())
        return f"it contains the non-ASCII character {bad!r}"
    if name[0] not in _LETTERS:
        return f"it must start with an ASCII letter, not {name[0]!r}"
    if not _ALLOWED.issuperset(name):
        bad = next(c for c in name if c not in _ALLOWED)
        return f"it contains the character {bad!r}; only ASCII letters, digits, '-' and '_' are allowed"
    return _RESERVED if name.lower() in WINDOWS_RESERVED else None


_RESERVED = "it is a Windows device name (con, prn, aux, nul, com1-9, lpt1-9), reserved"


def validate_name(name: str) -> str:
    """Return ``name`` unchanged, or raise InvalidName saying what is wrong with it."""
    problem = _problem(name)
    if problem is not None:
        raise InvalidName(f"invalid crate name {name!r}: {problem}", name=name)
    return name


def collision_key(name: str) -> str:
    """The form two names are compared in: lowercase, with ``-`` folded into ``_``."""
    return name.lower().replace("-", "_")


def index_path(name: str) -> str:
    """The path of the crate's file in a cargo registry index, for a valid name."""
    return _layout(validate_name(name).lower())


def _layout(lower: str) -> str:
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[:2]}/{lower[2:4]}/{lower}"


def layout_problem(path: str) -> str | None:
    """For a path laid out as a crate file would be but whose name is not a valid crate name,
    what is wrong with the name; None for a crate file's path or any other path."""
    name = path.rpartition("/")[2]
    if not name or path != _layout(name.lower()):
        return None
    problem = _problem(name)
    return None if problem is None else f"invalid crate name {name!r}: {problem}"


def crate_from_path(path: str) -> str | None:
    """The crate name a well-formed index file path belongs to, or None for any other path."""
    name = path.rpartition("/")[2]
    if _problem(name) is not None or index_path(name) != path:
        return None
    return name
