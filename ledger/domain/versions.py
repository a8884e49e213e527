"""Versions: strict SemVer 2.0.0 parsing and precedence.

``parse_version`` accepts exactly ``MAJOR.MINOR.PATCH[-PRE][+BUILD]`` as the
SemVer 2.0.0 grammar defines it, and additionally requires MAJOR, MINOR and
PATCH to fit in 64 bits, as cargo does. Precedence ignores build metadata, and
so does ``Version.key``, the form under which a version is unique in a crate.
Equality (``==``) compares the whole version, build metadata included.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TypeAlias

from ledger.domain.errors import InvalidVersion

_U64_MAX = 2**64 - 1
_DIGITS = frozenset(string.digits)
_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "-")

# A pre-release identifier's sort key: numeric ones first, compared as numbers
# (no leading zeros, so length then text), then alphanumeric ones, compared as ASCII.
_IdentKey: TypeAlias = tuple[int, int, str]


def _ident_key(ident: str) -> _IdentKey:
    if _is_numeric(ident):
        return (0, len(ident), ident)
    return (1, 0, ident)


def _is_numeric(ident: str) -> bool:
    return bool(ident) and all(c in _DIGITS for c in ident)


@dataclass(frozen=True, order=False)
class Version:
    """A parsed SemVer 2.0.0 version; ``text`` is the string it was parsed from."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...]
    build: tuple[str, ...]
    text: str

    @property
    def key(self) -> str:
        """The version without build metadata: ``1.0.7`` and ``1.0.7+x`` share a key."""
        return self.text.partition("+")[0]

    def _precedence(self) -> tuple[int, int, int, tuple[int, tuple[_IdentKey, ...]]]:
        # A release sorts after every pre-release of the same MAJOR.MINOR.PATCH.
        pre = (1, ()) if not self.pre else (0, tuple(_ident_key(i) for i in self.pre))
        return (self.major, self.minor, self.patch, pre)

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: Version) -> bool:
        return self._precedence() < other._precedence()

    def __le__(self, other: Version) -> bool:
        return self._precedence() <= other._precedence()

    def __gt__(self, other: Version) -> bool:
        return self._precedence() > other._precedence()

    def __ge__(self, other: Version) -> bool:
        return self._precedence() >= other._precedence()


def _fail(text: str, rule: str) -> InvalidVersion:
    return InvalidVersion(f"invalid version {text!r}: {rule}", version=text)


def _identifiers(text: str, part: str, what: str) -> tuple[str, ...]:
    """Split a pre-release or build part into its identifiers, checking each one."""
    idents = tuple(part.split("."))
    for ident in idents:
        if not ident:
            raise _fail(text, f"{what} identifiers must not be empty")
        bad = next((c for c in ident if c not in _IDENT_CHARS), None)
        if bad is not None:
            raise _fail(text, f"{what} identifier {ident!r} contains {bad!r}; only [0-9A-Za-z-] is allowed")
    return idents


def _core_number(text: str, label: str, digits: str) -> int:
    if not _is_numeric(digits):
        raise _fail(text, f"{label} must be a non-empty run of digits, not {digits!r}")
    if len(digits) > 1 and digits[0] == "0":
        raise _fail(text, f"{label} {digits!r} has a leading zero")
    # Checked on length first so that huge digit runs are never converted to int.
    if len(digits) > 20 or int(digits) > _U64_MAX:
        raise _fail(text, f"{label} {digits!r} does not fit in 64 bits")
    return int(digits)


def parse_version(text: str) -> Version:
    """Parse a strict SemVer 2.0.0 version, or raise InvalidVersion naming the rule broken."""
    if not text:
        raise _fail(text, "it is empty")
    if not text.isascii():
        raise _fail(text, "it contains non-ASCII characters")
    if any(c.isspace() for c in text):
        raise _fail(text, "it contains whitespace")
    if text[0] in "vV=":
        raise _fail(text, f"it starts with {text[0]!r}: a version is MAJOR.MINOR.PATCH, with no prefix")
    rest, plus, build_part = text.partition("+")
    core, dash, pre_part = rest.partition("-")
    parts = core.split(".")
    if len(parts) != 3:
        raise _fail(text, f"it must be MAJOR.MINOR.PATCH, but {core!r} has {len(parts)} part(s)")
    major, minor, patch = (
        _core_number(text, label, digits)
        for label, digits in zip(("major", "minor", "patch"), parts, strict=True)
    )
    pre = _identifiers(text, pre_part, "pre-release") if dash else ()
    for ident in pre:
        if _is_numeric(ident) and len(ident) > 1 and ident[0] == "0":
            raise _fail(text, f"numeric pre-release identifier {ident!r} has a leading zero")
    build = _identifiers(text, build_part, "build") if plus else ()
    return Version(major, minor, patch, pre, build, text)
