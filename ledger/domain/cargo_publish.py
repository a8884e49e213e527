"""The publish rule: a ``cargo publish`` request body turned into the index line it adds.

Cargo's body (``PUT /api/v1/crates/new``) is a 32-bit little-endian length, that many bytes of
JSON metadata, a 32-bit little-endian length, then that many bytes of the ``.crate`` file.
``parse_publish_body`` checks that framing and hashes the ``.crate``; ``index_line`` derives
the index line from the metadata as crates.io does:

- a dependency renamed in ``Cargo.toml`` (``explicit_name_in_toml``) is listed under that name,
  with ``package`` naming the real crate;
- ``req`` is the dependency's ``version_req`` in its normal SemVer form (``^1.0``, ``>=1, <2``);
- a missing ``kind`` is ``normal``; ``registry`` is kept when the dependency comes from another
  registry and left out otherwise (an empty string means the same registry);
- dependencies are sorted by name, kind (normal, build, dev), requirement, then the rest;
- features whose values use ``dep:`` or ``pkg?/feat``, and the features that enable them, go
  to ``features2`` and mark the line ``v: 2``;
- ``yanked`` is false, ``links`` and ``rust_version`` appear when given.

Every problem raises ``Invalid`` naming the field; a returned line is one ``parse_line`` accepts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.errors import Invalid, InvalidName, InvalidVersion
from ledger.domain.index_format import parse_line
from ledger.domain.names import validate_name
from ledger.domain.versions import parse_version

MAX_CRATE_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 1024 * 1024
_LENGTH_BYTES = 4

_KIND_ORDER = {"normal": 0, "build": 1, "dev": 2}
_FEATURES2_ROUNDS = 100
"""Rounds of moving the features that enable a ``features2`` feature there too (crates.io's bound)."""
_MAX_COMPARATORS = 32
_WILDCARDS = frozenset("*xX")
_IDENTIFIER_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
_OPERATORS = (">=", "<=", "=", ">", "<", "~", "^")
_RUST_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,2}")
_REGISTRY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s]+")


@dataclass(frozen=True)
class PublishRequest:
    """A well-framed publish request: the metadata object, the ``.crate`` bytes and their SHA-256."""

    metadata: dict[str, Any] = field(hash=False)
    crate: bytes = field(repr=False)
    cksum: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cksum", hashlib.sha256(self.crate).hexdigest())


# -- the body's framing


def _framing(problem: str) -> Invalid:
    return Invalid(f"invalid publish body: {problem}")


def _too_large(problem: str) -> Invalid:
    """A part over its size limit (``field`` says so: the web API answers 413)."""
    return Invalid(f"invalid publish body: {problem}", field="crate_size")


def _length(body: bytes, at: int, what: str) -> int:
    """The 32-bit little-endian length at ``at``, or Invalid when the body ends before it."""
    if len(body) < at + _LENGTH_BYTES:
        left = len(body) - at
        raise _framing(
            f"it is truncated: {left} byte(s) left where the 4-byte length of the {what} should be"
        )
    return int.from_bytes(body[at : at + _LENGTH_BYTES], "little")


def parse_publish_body(
    body: bytes, *, max_crate_bytes: int = MAX_CRATE_BYTES, max_metadata_bytes: int = MAX_METADATA_BYTES
) -> PublishRequest:
    """Split a ``cargo publish`` body into its metadata object and ``.crate``, or raise Invalid."""
    json_length = _length(body, 0, "metadata")
    if json_length > max_metadata_bytes:
        raise _too_large(f"the metadata is {json_length} bytes, more than the limit of {max_metadata_bytes}")
    json_end = _LENGTH_BYTES + json_length
    if json_end > len(body):
        raise _framing(
            f"the metadata length {json_length} runs past the end of the body "
            f"(only {len(body) - _LENGTH_BYTES} bytes follow it)"
        )
    metadata = _metadata(body[_LENGTH_BYTES:json_end])
    crate_length = _length(body, json_end, ".crate file")
    if crate_length > max_crate_bytes:
        raise _too_large(f"the .crate file is {crate_length} bytes, more than the limit of {max_crate_bytes}")
    crate_start = json_end + _LENGTH_BYTES
    crate_end = crate_start + crate_length
    if crate_end > len(body):
        raise _framing(
            f"the .crate length {crate_length} runs past the end of the body "
            f"(only {len(body) - crate_start} bytes follow it)"
        )
    if crate_end < len(body):
        raise _framing(f"{len(body) - crate_end} trailing byte(s) follow the .crate file")
    if crate_length == 0:
        raise _framing("the .crate file is empty")
    return PublishRequest(metadata=metadata, crate=body[crate_start:crate_end])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _framing(f"the metadata has the key {key!r} more than once")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise _framing(f"the metadata holds {name}, which is not a JSON number")


def _metadata(raw: bytes) -> dict[str, Any]:
    """The metadata bytes as a JSON object, or Invalid."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _framing(f"the metadata is not valid UTF-8 (byte {exc.start})") from exc
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError as exc:
        raise _framing("the metadata nests JSON arrays or objects too deeply") from exc
    except ValueError as exc:
        raise _framing(f"the metadata is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _framing(f"the metadata must be a JSON object, not {type(obj).__name__}")
    return obj


# -- the metadata's fields


def _invalid(where: str, problem: str) -> Invalid:
    return Invalid(f"invalid publish metadata: {where} {problem}", field=where)


def _get(obj: Mapping[str, Any], key: str, where: str, kind: type, *, required: bool) -> Any:
    """``obj[key]`` checked to be a ``kind`` (None allowed when not required)."""
    if key not in obj or obj[key] is None:
        if required:
            raise _invalid(where, "is missing (or null)")
        return None
    value = obj[key]
    if not isinstance(value, kind):
        raise _invalid(where, f"must be {_KIND_WORDS[kind]}, not {type(value).__name__}")
    return value


_KIND_WORDS: dict[type, str] = {str: "a string", bool: "a boolean", list: "a list", dict: "an object"}


def _crate_name(value: str, where: str) -> str:
    try:
        return validate_name(value)
    except InvalidName as exc:
        raise _invalid(where, f"is not a valid crate name: {exc.message}") from exc


def _strings(value: list[Any], where: str) -> list[str]:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid(f"{where}[{i}]", f"must be a string, not {type(item).__name__}")
    return list(value)


# -- feature names and values, as crates.io accepts them


def _feature_name_problem(name: str) -> str | None:
    """What is wrong with a feature name (the ``x`` of ``x``, ``dep/x``), or None."""
    if not name:
        return "a feature name is empty"
    first = name[0]
    if not (first.isidentifier() or first in "0123456789"):
        return f"the feature name {name!r} starts with {first!r}, not a letter, digit or '_'"
    bad = next((c for c in name[1:] if not (f"_{c}".isidentifier() or c in "+-.")), None)
    if bad is not None:
        return f"the feature name {name!r} contains {bad!r}; only letters, digits, '_', '+', '-' and '.'"
    return None


def _dependency_name_problem(name: str) -> str | None:
    """What is wrong with the dependency named in a feature value, or None."""
    if not name:
        return "a dependency name is empty"
    if len(name) > 64:
        return f"the dependency name {name[:40]!r}... is longer than 64 characters"
    if not (name[0].isascii() and (name[0].isalpha() or name[0] == "_")):
        return f"the dependency name {name!r} must start with an ASCII letter or '_'"
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        return f"the dependency name {name!r} may hold only ASCII letters, digits, '-' and '_'"
    return None


def _feature_value_problem(value: str) -> str | None:
    """What is wrong with a feature value (``x``, ``dep:x``, ``x/y``, ``x?/y``), or None."""
    if "/" in value:
        dependency, _, feature = value.partition("/")
        return _dependency_name_problem(dependency.removesuffix("?")) or _feature_name_problem(feature)
    if value.startswith("dep:"):
        return _dependency_name_problem(value.removeprefix("dep:"))
    return _feature_name_problem(value)


def _feature_values(value: list[Any], where: str) -> list[str]:
    values = _strings(value, where)
    for i, item in enumerate(values):
        problem = _feature_value_problem(item)
        if problem is not None:
            raise _invalid(f"{where}[{i}]", f"is not a feature value: {problem}")
    return values


def _features(obj: Mapping[str, Any]) -> dict[str, list[str]]:
    """The crate's features, keys sorted, each name and value checked."""
    features = _get(obj, "features", "features", dict, required=True)
    checked: dict[str, list[str]] = {}
    for name in sorted(features):
        problem = _feature_name_problem(name)
        if problem is not None:
            raise _invalid(f"features[{name!r}]", f"is not a feature: {problem}")
        where = f"features[{name!r}]"
        values = features[name]
        if not isinstance(values, list):
            raise _invalid(where, f"must be a list of strings, not {type(values).__name__}")
        checked[name] = _feature_values(values, where)
    return checked


def _uses_features2_syntax(value: str) -> bool:
    return value.startswith("dep:") or "?/" in value


def split_features(features: Mapping[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``features`` and ``features2`` as crates.io splits them: a feature using ``dep:`` or
    ``pkg?/feat``, or enabling a feature that does, goes to the second; both keep key order."""
    moved = {name for name, values in features.items() if any(map(_uses_features2_syntax, values))}
    for _ in range(_FEATURES2_ROUNDS):
        enabling = {
            name for name, values in features.items() if name not in moved and any(v in moved for v in values)
        }
        if not enabling:
            break
        moved |= enabling
    old = {name: values for name, values in features.items() if name not in moved}
    new = {name: values for name, values in features.items() if name in moved}
    return old, new


# -- version requirements, in SemVer's (and cargo's) grammar


def _number(text: str, part: str) -> tuple[int, str]:
    """A version number at the start of ``text`` (no leading zero, 64 bits) and what follows."""
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0:
        found = f"{text[0]!r}" if text else "the end"
        raise ValueError(f"expected the {part} version number, found {found}")
    if digits > 1 and text[0] == "0":
        raise ValueError(f"the {part} version number {text[:digits]!r} has a leading zero")
    if digits > 20 or int(text[:digits]) >= 2**64:
        raise ValueError(f"the {part} version number {text[:digits]!r} does not fit in 64 bits")
    return int(text[:digits]), text[digits:]


def _identifiers(text: str, part: str) -> tuple[str, str]:
    """The dot-separated pre-release or build identifiers at the start of ``text``, and the rest."""
    end = 0
    while end < len(text) and (text[end] in _IDENTIFIER_CHARS or text[end] == "."):
        end += 1
    found = text[:end]
    idents = found.split(".")
    if not found or any(not ident for ident in idents):
        raise ValueError(f"a {part} identifier is empty")
    if part == "pre-release":
        zero = next((i for i in idents if i.isdigit() and len(i) > 1 and i[0] == "0"), None)
        if zero is not None:
            raise ValueError(f"the pre-release identifier {zero!r} has a leading zero")
    return found, text[end:]


def _comparator(text: str) -> tuple[str, str]:
    """One comparator at the start of ``text``, in its normal form, and what follows it."""
    op = next((o for o in _OPERATORS if text.startswith(o)), "")
    wildcard = False
    rest = text[len(op) :].lstrip(" ")
    major, rest = _number(rest, "major")
    shown = f"{op or '^'}{major}"
    if rest.startswith("."):
        if rest[1:2] and rest[1] in _WILDCARDS:
            wildcard, rest = True, rest[2:]
            if rest.startswith(".") and rest[1:2] and rest[1] in _WILDCARDS:
                rest = rest[2:]
            elif rest.startswith("."):
                raise ValueError("a version number follows a wildcard")
        else:
            minor, rest = _number(rest[1:], "minor")
            shown += f".{minor}"
            if rest.startswith(".") and rest[1:2] and rest[1] in _WILDCARDS:
                wildcard, rest = True, rest[2:]
            elif rest.startswith("."):
                patch, rest = _number(rest[1:], "patch")
                shown += f".{patch}"
                if rest.startswith("-"):
                    pre, rest = _identifiers(rest[1:], "pre-release")
                    shown += f"-{pre}"
                if rest.startswith("+"):
                    _, rest = _identifiers(rest[1:], "build")  # build metadata never counts
    if wildcard and not op:
        shown = shown.removeprefix("^") + ".*"
    return shown, rest.lstrip(" ")


def normalize_requirement(text: str) -> str:
    """A version requirement in the form SemVer prints it (``1.2`` is ``^1.2``, ``>= 1`` is
    ``>=1``), or ValueError saying why it is not one."""
    rest = text.lstrip(" ")
    if rest[:1] and rest[0] in _WILDCARDS:
        after = rest[1:].lstrip(" ")
        if not after:
            return "*"
        if after.startswith(","):
            raise ValueError(f"the wildcard {rest[0]!r} must be the only comparator")
        raise ValueError(f"unexpected {after[0]!r} after the wildcard {rest[0]!r}")
    comparators: list[str] = []
    while True:
        shown, rest = _comparator(rest)
        comparators.append(shown)
        if not rest:
            return ", ".join(comparators)
        if rest[0] != ",":
            raise ValueError(f"expected ',' between comparators, found {rest[0]!r}")
        if len(comparators) == _MAX_COMPARATORS:
            raise ValueError(f"more than {_MAX_COMPARATORS} comparators")
        rest = rest[1:].lstrip(" ")


def _requirement(value: str, where: str) -> str:
    try:
        return normalize_requirement(value)
    except ValueError as exc:
        raise _invalid(where, f"{value[:60]!r} is not a version requirement: {exc}") from exc


# -- a dependency


def _target(value: str | None, where: str) -> str | None:
    """A ``cfg(...)`` expression or a target name, as cargo reads back ``target``."""
    if value is None:
        return None
    if value.startswith("cfg(") and value.endswith(")"):
        if not _balanced(value[4:-1]):
            raise _invalid(where, f"{value[:60]!r} is not a cfg expression: unbalanced parentheses or quotes")
        return value
    if not value or not all(c.isalnum() or c in "_-." for c in value):
        raise _invalid(where, f"{value[:60]!r} is neither cfg(...) nor a target name")
    return value


def _balanced(text: str) -> bool:
    depth, quoted = 0, False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "()":
            depth += 1 if c == "(" else -1
            if depth < 0:
                return False
    return bool(text.strip()) and depth == 0 and not quoted


def _registry(value: str | None, where: str) -> str | None:
    if not value:  # absent, null or "": the registry being published to
        return None
    if not _REGISTRY_URL.fullmatch(value):
        raise _invalid(where, f"{value[:60]!r} is not a registry index URL")
    return value


_ARTIFACT_FIELDS = ("artifact", "bindep_target", "lib")


def _dependency(raw: Any, where: str) -> dict[str, Any]:
    """One of cargo's ``deps`` as the index lists it."""
    if not isinstance(raw, dict):
        raise _invalid(where, f"must be an object, not {type(raw).__name__}")

    def get(key: str, kind: type, *, required: bool) -> Any:
        return _get(raw, key, f"{where}.{key}", kind, required=required)

    crate = _crate_name(get("name", str, required=True), f"{where}.name")
    req = _requirement(get("version_req", str, required=True), f"{where}.version_req")
    features = _feature_values(get("features", list, required=True), f"{where}.features")
    optional = get("optional", bool, required=True)
    default_features = get("default_features", bool, required=True)
    target = _target(get("target", str, required=False), f"{where}.target")
    kind = get("kind", str, required=False)
    kind = "normal" if kind is None else kind
    if kind not in _KIND_ORDER:
        raise _invalid(f"{where}.kind", f'is {kind[:20]!r}, not "normal", "dev" or "build"')
    registry = _registry(get("registry", str, required=False), f"{where}.registry")
    renamed = get("explicit_name_in_toml", str, required=False)
    for key in _ARTIFACT_FIELDS:
        if raw.get(key) not in (None, False):
            raise _invalid(f"{where}.{key}", "is set: an index line cannot describe an artifact dependency")
    entry: dict[str, Any] = {
        "name": crate if renamed is None else _crate_name(renamed, f"{where}.explicit_name_in_toml"),
        "req": req,
        "features": features,
        "optional": optional,
        "default_features": default_features,
        "target": target,
        "kind": kind,
    }
    if registry is not None:
        entry["registry"] = registry
    if renamed is not None:
        entry["package"] = crate
    return entry


def _dependency_order(dep: dict[str, Any]) -> tuple[Any, ...]:
    """crates.io's order: name, kind (normal, build, dev), req, optional, default_features,
    target, package, features (a missing value before any present one)."""
    target, package = dep["target"], dep.get("package")
    return (
        dep["name"],
        _KIND_ORDER[dep["kind"]],
        dep["req"],
        dep["optional"],
        dep["default_features"],
        (target is not None, target or ""),
        (package is not None, package or ""),
        dep["features"],
    )


# -- the line


def _version(obj: Mapping[str, Any]) -> str:
    vers: str = _get(obj, "vers", "vers", str, required=True)
    try:
        parse_version(vers)
    except InvalidVersion as exc:
        raise _invalid("vers", f"is not a valid version: {exc.message}") from exc
    return vers


def _links(obj: Mapping[str, Any]) -> str | None:
    links: str | None = _get(obj, "links", "links", str, required=False)
    if links is not None and (not links or links != links.strip()):
        raise _invalid("links", f"{links[:60]!r} does not name a native library")
    return links


def _rust_version(obj: Mapping[str, Any]) -> str | None:
    rust_version: str | None = _get(obj, "rust_version", "rust_version", str, required=False)
    if rust_version is None:
        return None
    problem = None if _RUST_VERSION.fullmatch(rust_version) else "only digits and up to two dots"
    if problem is None:
        try:
            normalize_requirement(rust_version)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        shown = rust_version[:60]
        raise _invalid("rust_version", f"{shown!r} is not a Rust version such as 1.70 or 1.70.0: {problem}")
    return rust_version


def index_line(request: PublishRequest) -> dict[str, Any]:
    """The index line crates.io writes for this publish request (fields in its order), or Invalid."""
    meta = request.metadata
    name = _crate_name(_get(meta, "name", "name", str, required=True), "name")
    vers = _version(meta)
    raw_deps = _get(meta, "deps", "deps", list, required=True)
    deps = sorted((_dependency(dep, f"deps[{i}]") for i, dep in enumerate(raw_deps)), key=_dependency_order)
    features, features2 = split_features(_features(meta))
    links, rust_version = _links(meta), _rust_version(meta)
    line: dict[str, Any] = {"name": name, "vers": vers, "deps": deps, "cksum": request.cksum}
    line["features"] = features
    if features2:
        line["features2"] = features2
    line["yanked"] = False
    if links is not None:
        line["links"] = links
    if rust_version is not None:
        line["rust_version"] = rust_version
    if features2:
        line["v"] = 2
    parse_line(line)
    return line
