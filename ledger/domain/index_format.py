"""Cargo registry index lines: strict validation, rendering and lenient file reading.

Each crate's index file holds one compact JSON object per published version.
``parse_line`` accepts a line only if every field is one cargo knows, of the
type cargo expects; ``IndexLine.render`` writes it back byte for byte in the
same key order, optionally with ``yanked`` replaced. ``parse_file`` reads a
whole file without stopping at bad lines, for scanning an existing index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.errors import InvalidLine, InvalidName, InvalidVersion
from ledger.domain.names import validate_name
from ledger.domain.versions import Version, parse_version

MAX_LINE_BYTES = 1024 * 1024
MAX_DEPS = 2000
"""Dependencies one line may list: far beyond any published crate's, and a bound on the work
one line makes every reader of the index do."""
_RUST_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")

_CKSUM = re.compile(r"[0-9a-f]{64}")
_PUBTIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DEP_KINDS = (None, "normal", "dev", "build")


@dataclass(frozen=True)
class IndexLine:
    """One validated index line; ``fields`` is the whole JSON object in its given key order."""

    name: str
    vers: str
    version: Version
    cksum: str
    yanked: bool
    fields: dict[str, Any] = field(hash=False)
    text: bytes = field(hash=False, compare=False, repr=False)
    """``fields`` rendered (``_dump``): the line as validated, kept so it is rendered once."""

    @property
    def key(self) -> str:
        """The version key, build metadata ignored."""
        return self.version.key

    def render(self, *, yanked: bool | None = None) -> bytes:
        """The compact JSON line, without newline, with ``yanked`` replaced when given."""
        if yanked is None or yanked is self.yanked:
            return self.text  # replacing a value by itself keeps the key order: the same bytes
        return _dump({**self.fields, "yanked": yanked})

    def content_digest(self) -> str:
        """SHA-256 hex of the line as if not yanked: a yank leaves it unchanged."""
        return hashlib.sha256(self.render(yanked=False)).hexdigest()


def render_fields(fields: dict[str, Any], *, yanked: bool) -> bytes:
    """The compact JSON line of already-validated fields, with ``yanked`` set."""
    return _dump({**fields, "yanked": yanked})


def fields_digest(fields: dict[str, Any]) -> str:
    """SHA-256 hex of already-validated fields rendered as not yanked."""
    return hashlib.sha256(render_fields(fields, yanked=False)).hexdigest()


def _dump(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fail(message: str, where: str | None = None) -> InvalidLine:
    return InvalidLine(message) if where is None else InvalidLine(message, field=where)


# -- field checks: each returns if ``value`` is acceptable, else raises InvalidLine naming ``where``


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{where} must be a string", where)
    return value


def _non_empty_string(value: Any, where: str) -> None:
    if not _string(value, where):
        raise _fail(f"{where} must not be empty", where)


def _optional_string(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, str):
        raise _fail(f"{where} must be a string or null", where)


def _links(value: Any, where: str) -> None:
    _optional_string(value, where)
    if value is not None and (not value or value != value.strip()):
        raise _fail(
            f"{where} must name a native library (a non-empty string without spaces around it)", where
        )


def _rust_version(value: Any, where: str) -> None:
    _optional_string(value, where)
    if value is not None and not _RUST_VERSION.fullmatch(value):
        raise _fail(f"{where} must be a Rust version such as 1.70 or 1.70.0, not {value[:40]!r}", where)


def _bool(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise _fail(f"{where} must be a boolean", where)


def _string_list(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise _fail(f"{where} must be a list of strings", where)
    for i, item in enumerate(value):
        _string(item, f"{where}[{i}]")


def _feature_map(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object mapping feature names to lists of strings", where)
    for key, item in value.items():
        _string(key, f"{where} key {key!r}")
        _string_list(item, f"{where}[{key!r}]")


def _crate_name(value: Any, where: str) -> None:
    try:
        validate_name(_string(value, where))
    except InvalidName as exc:
        raise _fail(f"{where} is not a valid crate name: {exc.message}", where) from exc


def _optional_crate_name(value: Any, where: str) -> None:
    if value is not None:
        _crate_name(value, where)


# The line's version is parsed when checked and again for the IndexLine: remember the last few.
_parse_version = functools.lru_cache(maxsize=64)(parse_version)


def _version(value: Any, where: str) -> None:
    try:
        _parse_version(_string(value, where))
    except InvalidVersion as exc:
        raise _fail(f"{where} is not a valid version: {exc.message}", where) from exc


def _cksum(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _CKSUM.fullmatch(value):
        raise _fail(f"{where} must be 64 lowercase hexadecimal characters", where)


def _schema_version(value: Any, where: str) -> None:
    if type(value) is not int:  # bool is an int subclass, and is refused here
        raise _fail(f"{where} must be an integer", where)
    if value not in (1, 2):
        shown = value if value.bit_length() < 64 else "out of range"
        raise _fail(f"{where} is {shown}, a `v` the ledger does not know (1 or 2)", where)


def _pubtime(value: Any, where: str) -> None:
    text = _string(value, where)
    try:
        if not _PUBTIME.fullmatch(text):
            raise ValueError(text)
        datetime.fromisoformat(text)
    except ValueError as exc:
        message = f"{where} must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z"
        raise _fail(message, where) from exc


def _dep_kind(value: Any, where: str) -> None:
    if value not in _DEP_KINDS:
        raise _fail(f'{where} must be "normal", "dev", "build" or null', where)


_Check = Callable[[Any, str], object]


class _Spec:
    """The fields an object may have: name -> (required, check)."""

    def __init__(self, fields: dict[str, tuple[bool, _Check]]) -> None:
        self.fields = fields
        self._named: dict[str, tuple[tuple[str, bool, _Check, str], ...]] = {}

    def named(self, prefix: str) -> tuple[tuple[str, bool, _Check, str], ...]:
        """Each field with its name as messages give it after ``prefix`` (``deps[3].name``),
        made once per prefix rather than once per object checked. The prefixes are bounded:
        the line's own (``""``) and one per dependency, at most ``MAX_DEPS``."""
        found = self._named.get(prefix)
        if found is None:
            found = tuple((name, req, check, f"{prefix}{name}") for name, (req, check) in self.fields.items())
            self._named[prefix] = found
        return found


def _check_object(obj: dict[Any, Any], spec: _Spec, prefix: str) -> None:
    """Check an object's fields against ``spec``; ``prefix`` names the object in messages."""
    if not spec.fields.keys() >= obj.keys():
        unknown = [key for key in obj if key not in spec.fields]
        owner = prefix.rstrip(".") or "the line"
        names = ", ".join(repr(key) for key in unknown)
        raise _fail(f"{owner} has unknown field(s) {names}", f"{prefix}{unknown[0]}")
    for name, required, check, where in spec.named(prefix):
        if name in obj:
            check(obj[name], where)
        elif required:
            raise _fail(f"{where} is missing", where)


def _deps(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise _fail(f"{where} must be a list", where)
    if len(value) > MAX_DEPS:
        raise _fail(f"{where} lists {len(value)} dependencies, more than the limit of {MAX_DEPS}", where)
    for i, dep in enumerate(value):
        if not isinstance(dep, dict):
            raise _fail(f"{where}[{i}] must be an object", f"{where}[{i}]")
        _check_object(dep, _DEP_FIELDS, f"{where}[{i}].")


_FIELDS = _Spec(
    {
        "name": (True, _crate_name),
        "vers": (True, _version),
        "deps": (True, _deps),
        "cksum": (True, _cksum),
        "features": (True, _feature_map),
        "yanked": (True, _bool),
        "links": (False, _links),
        "v": (False, _schema_version),
        "features2": (False, _feature_map),
        "rust_version": (False, _rust_version),
        "pubtime": (False, _pubtime),
    }
)

_DEP_FIELDS = _Spec(
    {
        "name": (True, _crate_name),
        "req": (True, _non_empty_string),
        "features": (True, _string_list),
        "optional": (True, _bool),
        "default_features": (True, _bool),
        "target": (True, _optional_string),
        "kind": (True, _dep_kind),
        "registry": (False, _optional_string),
        "package": (False, _optional_crate_name),
    }
)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _fail(f"the JSON object has the key {key!r} more than once")
        obj[key] = value
    return obj


def _decode(raw: str | bytes, max_bytes: int) -> Any:
    """Size-check, decode and JSON-parse a raw line."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _fail("the line contains a lone surrogate and cannot be UTF-8") from exc
    if len(raw) > max_bytes:
        raise _fail(f"the line is {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"the line is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise _fail("the line nests JSON arrays or objects too deeply to be an index line") from exc
    except ValueError as exc:
        raise _fail(f"the line is not JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise _fail(f"the line holds {name}, which is not a JSON number")


def _check_schema(obj: dict[str, Any]) -> None:
    """``v: 2`` and ``features2`` go together: each without the other is refused."""
    if "features2" in obj and obj.get("v") != 2:
        raise _fail("features2 is present but v is not 2: cargo reads features2 only with v: 2", "v")
    if obj.get("v") == 2 and "features2" not in obj:
        raise _fail("v is 2 but the line has no features2: v: 2 marks a line with features2", "v")


def parse_line(raw: str | bytes | dict[str, Any], *, max_bytes: int = MAX_LINE_BYTES) -> IndexLine:
    """Validate one index line (raw text, bytes, or already-parsed JSON) or raise InvalidLine."""
    obj = raw if isinstance(raw, dict) else _decode(raw, max_bytes)
    if not isinstance(obj, dict):
        raise _fail(f"the line must be a JSON object, not {type(obj).__name__}")
    _check_object(obj, _FIELDS, "")
    _check_schema(obj)
    try:
        rendered = _dump(obj)
    except UnicodeEncodeError as exc:
        raise _fail("the line contains a lone surrogate escape and cannot be UTF-8") from exc
    if len(rendered) > max_bytes:
        raise _fail(f"the line is {len(rendered)} bytes, more than the limit of {max_bytes}")
    if obj is raw:
        obj = json.loads(rendered)  # a copy: only JSON values are left, and the caller keeps its own
    return IndexLine(
        name=obj["name"],
        vers=obj["vers"],
        version=_parse_version(obj["vers"]),
        cksum=obj["cksum"],
        yanked=obj["yanked"],
        fields=obj,
        text=rendered,
    )


def render_file(lines: Iterable[bytes]) -> bytes:
    """An index file's bytes: each line followed by a newline."""
    return b"".join(line + b"\n" for line in lines)


def parse_file(data: bytes) -> list[tuple[int, IndexLine | InvalidLine]]:
    """Every non-empty line of an index file, numbered from 1, parsed or with its error."""
    entries: list[tuple[int, IndexLine | InvalidLine]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            continue
        try:
            entries.append((number, parse_line(raw)))
        except InvalidLine as exc:
            entries.append((number, exc))
    return entries
