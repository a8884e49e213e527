"""Settings: which store, which index remote, which branch; read from options and environment.

A store URL is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
``postgresql://user:password@host:port/dbname?schema=name``. Credentials in either URL are kept
for connecting and never shown: :func:`redact` is what every message, log line and event uses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ledger.domain.errors import Invalid

DEFAULT_STORE = "sqlite:///ledger.db"
DEFAULT_BRANCH = "master"
DEFAULT_MAX_CRATE_BYTES = 10 * 1024 * 1024

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/?#\s]*)@")


def redact(text: str) -> str:
    """Text with every ``user:password@`` in a URL replaced by ``***@``."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL."""

    kind: Literal["sqlite", "postgresql"]
    raw: str = field(repr=False)
    path: Path | None = None
    host: str = ""
    port: int = 5432
    dbname: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    schema: str = ""

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        """Parse a store URL, or raise Invalid naming what is wrong (never the password)."""
        shown = redact(url)
        if url.startswith("sqlite:///"):
            raw_path = url[len("sqlite:///") :]
            if not raw_path or raw_path.endswith("/"):
                msg = f"store URL {shown!r} names no SQLite file"
                raise Invalid(msg, store=shown)
            return cls(kind="sqlite", raw=url, path=Path(unquote(raw_path)))
        if url.startswith(("postgresql://", "postgres://")):
            return cls._parse_postgres(url, shown)
        msg = (
            f"store URL {shown!r} is not understood: use sqlite:///path/to/file.db "
            "or postgresql://user@host:port/dbname"
        )
        raise Invalid(msg, store=shown)

    @classmethod
    def _parse_postgres(cls, url: str, shown: str) -> StoreURL:
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError as exc:
            msg = f"store URL {shown!r} is malformed: {redact(str(exc))}"
            raise Invalid(msg, store=shown) from None
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname:
            msg = f"store URL {shown!r} needs a host and a database name"
            raise Invalid(msg, store=shown)
        query = parse_qs(parts.query)
        schema = query.get("schema", [""])[0]
        if schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            msg = f"store URL {shown!r}: schema {schema!r} must be a lowercase SQL identifier"
            raise Invalid(msg, store=shown)
        return cls(
            kind="postgresql",
            raw=url,
            host=parts.hostname,
            port=port,
            dbname=dbname,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            schema=schema,
        )


_REMOTE_SCHEMES = ("file://", "git://", "http://", "https://", "ssh://")


def check_remote_url(url: str) -> str:
    """Accept a path or a file://, git://, http(s):// or ssh:// URL; Invalid names anything else."""
    shown = redact(url)
    if "://" in url:
        if not url.startswith(_REMOTE_SCHEMES):
            msg = f"remote URL {shown!r} is not understood: use a path, file://, git://, http(s)://"
            raise Invalid(msg, remote=shown)
        rest = url.split("://", 1)[1]
        if not rest or (not url.startswith("file://") and not urlsplit(url).hostname):
            msg = f"remote URL {shown!r} names no host"
            raise Invalid(msg, remote=shown)
    elif not url.strip():
        msg = "the remote is empty"
        raise Invalid(msg, remote=shown)
    return url


TARGET_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
DEFAULT_TARGET = "git"
"""The name of the one index target a ledger configured with ``--remote`` alone has."""


@dataclass(frozen=True)
class TargetSpec:
    """One index target: the git remote (``url``), or a sparse index read at its public ``url``
    and written to its ``origin`` (a folder, or ``s3://bucket/prefix``)."""

    name: str
    kind: Literal["git", "sparse"]
    url: str = field(repr=False)
    origin: str | None = None
    invalidate_url: str | None = None
    """Sparse: where a CDN is told which files changed (POST of their paths), when there is one."""
    endpoint_url: str | None = None
    """Sparse on S3: the object store's endpoint (else the AWS defaults, or AWS_ENDPOINT_URL)."""

    @property
    def shown(self) -> str:
        """The target as every message, log line and event names it (no credentials)."""
        return redact(self.url) if self.kind == "git" else "sparse+" + redact(self.url)

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """``NAME=URL``: a git remote URL, or ``sparse+http(s)://public/url/?origin=ORIGIN``
        (``&invalidate=URL``, ``&endpoint=URL`` optional); Invalid names what is wrong."""
        name, sep, spec = text.strip().partition("=")
        shown = redact(text.strip())
        if not sep or not spec:
            msg = (
                f"index target {shown!r} is not NAME=URL "
                "(e.g. sparse=sparse+http://host/index/?origin=/srv/index)"
            )
            raise Invalid(msg, target=shown)
        if not TARGET_NAME.fullmatch(name):
            msg = f"index target name {name!r} must be lowercase letters, digits and '-', at most 32"
            raise Invalid(msg, target=shown)
        if not spec.startswith("sparse+"):
            return cls(name, "git", check_remote_url(spec))
        return cls._sparse(name, spec.removeprefix("sparse+"), shown)

    @classmethod
    def _sparse(cls, name: str, spec: str, shown: str) -> TargetSpec:
        public, _, query = spec.partition("?")
        parts = urlsplit(public)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"sparse index target {shown!r}: the public URL must be http(s)://host/path/"
            raise Invalid(msg, target=shown)
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - {"origin", "invalidate", "endpoint"})
        if unknown:
            msg = (
                f"sparse index target {shown!r}: unknown option(s) {', '.join(unknown)} "
                "(origin, invalidate, endpoint)"
            )
            raise Invalid(msg, target=shown)
        origin = options.get("origin", [""])[-1]
        if not origin:
            msg = (
                f"sparse index target {shown!r} names no origin: "
                "add ?origin=/folder or ?origin=s3://bucket/prefix"
            )
            raise Invalid(msg, target=shown)
        if not (origin.startswith(("s3://", "file:///")) or origin.startswith("/")):
            msg = (
                f"sparse index target {shown!r}: origin {origin!r} must be an absolute folder, "
                "file:/// or s3://bucket"
            )
            raise Invalid(msg, target=shown)
        if origin.startswith("s3://") and not urlsplit(origin).hostname:
            msg = f"sparse index target {shown!r}: origin {origin!r} names no bucket"
            raise Invalid(msg, target=shown)
        return cls(
            name,
            "sparse",
            public if public.endswith("/") else public + "/",
            origin=origin,
            invalidate_url=options.get("invalidate", [None])[-1] or None,
            endpoint_url=options.get("endpoint", [None])[-1] or None,
        )


def parse_targets(text: str) -> tuple[TargetSpec, ...]:
    """Targets separated by ``;`` or whitespace (``LEDGER_TARGETS``)."""
    return tuple(TargetSpec.parse(part) for part in re.split(r"[;\s]+", text) if part)


def check_index_url(url: str) -> str:
    """An index to read: a git remote (see :func:`check_remote_url`) or a sparse index given as
    ``sparse+http(s)://public/url/?origin=...`` (its files are listed at the origin: the sparse
    protocol itself has no listing)."""
    if url.startswith("sparse+"):
        TargetSpec.parse(f"source={url}")
        return url
    return check_remote_url(url)


PushClient = Literal["auto", "git", "libgit2"]
"""Who pushes to the index remote: ``git`` (the git executable), ``libgit2``, or ``auto``."""


@dataclass(frozen=True)
class Settings:
    """Everything the composition root needs to open a ledger."""

    store: str = DEFAULT_STORE
    remote: str | None = None
    branch: str = DEFAULT_BRANCH
    index_dir: Path | None = None
    connect_timeout_ms: int = 5000
    timeout_ms: int = 15000
    push_with: PushClient = "auto"
    """Who pushes to the index remote (see ``ledger.adapters.git.index``)."""
    crate_dir: Path | None = None
    """Where the registry keeps its ``.crate`` files (``ledger serve``); by default beside a SQLite
    store (``<store>.crates``), else none until given."""
    max_crate_bytes: int = DEFAULT_MAX_CRATE_BYTES
    """The largest ``.crate`` file a publish may carry (crates.io's limit: 10 MiB)."""
    targets: tuple[TargetSpec, ...] = ()
    """Index targets besides (or instead of) ``remote``, which is the target named ``git``."""

    def index_targets(self) -> tuple[TargetSpec, ...]:
        """Every index target, the first one first: ``remote`` (as ``git``), then ``targets``."""
        found = ((TargetSpec(DEFAULT_TARGET, "git", self.remote),) if self.remote else ()) + self.targets
        names = [t.name for t in found]
        for name in names:
            if names.count(name) > 1:
                msg = f"two index targets are named {name!r}" + (
                    " (--remote is the target named git)" if name == DEFAULT_TARGET and self.remote else ""
                )
                raise Invalid(msg, target=name)
        return found

    @property
    def target_names(self) -> tuple[str, ...]:
        """The names of the index targets, the first one first (``git`` when none is given)."""
        return tuple(t.name for t in self.index_targets()) or (DEFAULT_TARGET,)

    def target(self, name: str | None) -> TargetSpec:
        """The target of that name (None: the first one); Invalid when there is none."""
        found = self.index_targets()
        if not found:
            msg = "no index target: give --remote URL (or --target NAME=URL), or set LEDGER_REMOTE"
            raise Invalid(msg, field="remote")
        if name is None:
            return found[0]
        for spec in found:
            if spec.name == name:
                return spec
        msg = f"no index target named {name!r} (configured: {', '.join(t.name for t in found)})"
        raise Invalid(msg, target=name)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from LEDGER_STORE, LEDGER_REMOTE, LEDGER_BRANCH, LEDGER_INDEX_DIR,
        LEDGER_CRATE_DIR and LEDGER_MAX_CRATE_BYTES; options win."""
        values: dict[str, object] = {
            "store": os.environ.get("LEDGER_STORE") or DEFAULT_STORE,
            "remote": os.environ.get("LEDGER_REMOTE") or None,
            "branch": os.environ.get("LEDGER_BRANCH") or DEFAULT_BRANCH,
        }
        if os.environ.get("LEDGER_TARGETS"):
            values["targets"] = parse_targets(os.environ["LEDGER_TARGETS"])
        if os.environ.get("LEDGER_INDEX_DIR"):
            values["index_dir"] = Path(os.environ["LEDGER_INDEX_DIR"])
        if os.environ.get("LEDGER_CRATE_DIR"):
            values["crate_dir"] = Path(os.environ["LEDGER_CRATE_DIR"])
        if os.environ.get("LEDGER_MAX_CRATE_BYTES"):
            raw = os.environ["LEDGER_MAX_CRATE_BYTES"]
            if not raw.isdigit() or int(raw) <= 0:
                msg = f"LEDGER_MAX_CRATE_BYTES must be a positive number of bytes, not {raw!r}"
                raise Invalid(msg, field="max_crate_bytes")
            values["max_crate_bytes"] = int(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def store_url(self) -> StoreURL:
        return StoreURL.parse(self.store)
