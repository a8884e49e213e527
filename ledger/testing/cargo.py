"""Drive the real cargo against a registry under test: the proof a registry's users care about.

``resolve`` asks whether an index serves a version: ``cargo generate-lockfile`` in a throwaway
project with its own ``CARGO_HOME`` whose only registry is the index under test.

The rest is a harness for a registry's web API. A ``CargoHome`` is an isolated folder whose
``config.toml`` names one registry, ``local`` (and any others asked for), at an index URL;
``write_package`` writes a package that depends on crates of that registry; ``publish``,
``yank``, ``generate_lockfile`` and ``fetch`` run cargo in it and return a ``CargoRun``.

What cargo 1.95 does, measured against a stub API on 127.0.0.1 and a bare git index:

- The index may be ``file:///path/index.git`` or ``git://127.0.0.1:PORT/index.git`` (a bare
  path is refused as a relative URL), fetched with or without ``net.git-fetch-with-cli``.
  cargo fetches the remote's ``HEAD`` (into ``refs/remotes/origin/HEAD``): the bare
  repository's ``HEAD`` must name the branch the index is written on. ``config.json`` needs
  ``"api"`` for publish and yank, and ``"dl"`` for downloads.
- The token comes from ``CARGO_REGISTRIES_LOCAL_TOKEN`` through the default credential
  provider (``cargo:token``); no ``credential-provider`` setting is needed. It is sent as the
  raw ``Authorization`` value, with no scheme. Without a token publish and yank exit 101
  before sending anything.
- ``cargo publish`` sends ``PUT /api/v1/crates/new``: a little-endian u32 length, the metadata
  JSON, a u32 length, the ``.crate`` file (no ``Content-Type``; ``Expect: 100-continue`` for a
  3 MB body, not for a 1 KB one). Any 200 answer whose body is empty or a JSON object without
  ``errors`` succeeds (``warnings`` are printed); an ``{"errors":[{"detail":...}]}`` answer,
  whatever its status, fails with exit 101 and
  ``the remote server responded with an error (status 400 Bad Request): DETAIL`` (details
  joined by ", "; without the status part for a 200).
- After a successful upload cargo polls the index until the version appears: a fetch at
  once, then one about every second, for 60 s; then it prints the warning "timed out
  waiting for NAME vVERSION to be available in registry `local`" and still exits 0.
  "Published NAME vVERSION at registry `local`" is printed only when the version was seen
  (``PublishRun.published``).
  The 60 s can only be changed with the unstable ``-Zpublish-timeout``
  (``publish(..., wait=N)``; ``wait=0`` does not wait at all).
- ``cargo yank`` sends ``DELETE /api/v1/crates/NAME/VERSION/yank``, ``--undo``
  ``PUT /api/v1/crates/NAME/VERSION/unyank`` (empty body); both need ``{"ok":true}`` back
  (``{"ok":false}`` makes cargo panic, exit 101) and do not wait for the index.
- Downloads are ``GET`` on the ``dl`` template, ``{crate}``, ``{version}``, ``{prefix}``,
  ``{lowerprefix}`` and ``{sha256-checksum}`` replaced; a template without markers gets
  ``/{crate}/{version}/download`` appended. No token is sent (``auth-required`` is not set).
  ``cargo fetch`` compares the file's SHA-256 with the line's ``cksum``: a mismatch fails with
  "failed to verify the checksum of `NAME vVERSION (registry `local`)`".
- ``--no-verify`` only skips building the packaged crate (which needs no network unless a
  dependency comes from crates.io; a crates.io dependency needs the network even with it).
  ``--allow-dirty`` matters only inside a git work tree with uncommitted files.
- A dependency of the same registry is written with ``registry = "local"``; its metadata
  carries no ``registry`` key, while one of another registry carries that index's URL. A
  renamed dependency is sent under its real name with ``explicit_name_in_toml``; a path-only
  dev-dependency is left out; features (``dep:``, ``?/``) are sent in one ``features`` map.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REGISTRY = "local"
"""The name every harness command publishes to, yanks from and downloads from."""

# The environment a cargo run keeps from the caller's: no CARGO_*, GIT_*, proxy or user
# settings, so what runs is the same on every machine.
_KEPT = ("PATH", "TMPDIR", "LANG", "LC_ALL", "RUSTUP_TOOLCHAIN")


@dataclass(frozen=True)
class Resolution:
    ok: bool
    output: str


def cargo_available() -> bool:
    return shutil.which("cargo") is not None


def resolve(index_url: str, crate: str, requirement: str, *, timeout: float = 120.0) -> Resolution:
    """Resolve ``crate = requirement`` from the git index at ``index_url`` (file://, git://, http://)."""
    with tempfile.TemporaryDirectory(prefix="ledger-cargo-") as tmp:
        root = Path(tmp)
        home = root / "cargo-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[registries.local]\nindex = "{index_url}"\n[net]\ngit-fetch-with-cli = false\n'
        )
        project = root / "probe"
        (project / "src").mkdir(parents=True)
        (project / "src" / "lib.rs").write_text("")
        (project / "Cargo.toml").write_text(
            '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n\n'
            f'[dependencies]\n{crate} = {{ version = "{requirement}", registry = "local" }}\n'
        )
        done = subprocess.run(
            ["cargo", "generate-lockfile", "--quiet"],
            cwd=project,
            env={**os.environ, "CARGO_HOME": str(home), "PATH": _path()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        lock = project / "Cargo.lock"
        text = lock.read_text() if lock.exists() else ""
        return Resolution(done.returncode == 0, done.stderr + text)


@dataclass(frozen=True)
class CargoHome:
    """An isolated ``CARGO_HOME`` whose registry ``local`` is the index at ``index_url``.

    ``registries`` names further registries (name to index URL). ``token`` is handed to cargo
    through ``CARGO_REGISTRIES_LOCAL_TOKEN``; ``dataclasses.replace(home, token=...)`` gives
    the same folder with another token. ``offline`` sets ``CARGO_NET_OFFLINE``.
    """

    path: Path
    index_url: str
    token: str | None = None
    registries: Mapping[str, str] = field(default_factory=dict)
    offline: bool = False

    @classmethod
    def create(
        cls,
        path: Path,
        index_url: str,
        *,
        token: str | None = None,
        registries: Mapping[str, str] | None = None,
        offline: bool = False,
    ) -> CargoHome:
        """Make the folder (it may exist) and write its ``config.toml``."""
        home = cls(path, index_url, token, dict(registries or {}), offline)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.toml").write_text(home.config())
        return home

    def config(self) -> str:
        """The ``config.toml`` text: the registries, and cargo's own git (never the git CLI)."""
        lines: list[str] = []
        for name, url in {REGISTRY: self.index_url, **self.registries}.items():
            lines += [f"[registries.{_key(name)}]", f"index = {_string(url)}", ""]
        lines += ["[net]", "git-fetch-with-cli = false", ""]
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        """The whole environment to run cargo with (not merged into the caller's)."""
        env = {name: value for name in _KEPT if (value := os.environ.get(name))}
        env["PATH"] = _path()
        rustup = os.environ.get("RUSTUP_HOME") or str(Path.home() / ".rustup")
        if Path(rustup).is_dir():
            env["RUSTUP_HOME"] = rustup
        env["HOME"] = str(self.path)
        env["CARGO_HOME"] = str(self.path)
        env["CARGO_TERM_COLOR"] = "never"
        if self.token is not None:
            env[f"CARGO_REGISTRIES_{REGISTRY.upper()}_TOKEN"] = self.token
        if self.offline:
            env["CARGO_NET_OFFLINE"] = "true"
        return env

    def downloaded(self, crate: str, version: str) -> Path | None:
        """The ``.crate`` file cargo downloaded into this home, if any."""
        found = sorted((self.path / "registry" / "cache").glob(f"*/{crate}-{version}.crate"))
        return found[0] if found else None


@dataclass(frozen=True)
class ServerError:
    """What cargo printed of a registry's refusal: the HTTP status (None for a 200) and detail."""

    status: int | None
    detail: str


_SERVER_ERROR = re.compile(
    r"the remote server responded with an error(?: \(status (\d{3})[^)]*\))?: (.*)", re.MULTILINE
)


@dataclass(frozen=True)
class CargoRun:
    """One cargo command: its arguments, exit code (None when killed at the timeout) and output."""

    args: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def server_error(self) -> ServerError | None:
        """The registry's ``errors[].detail`` text as cargo printed it, if it did."""
        found = _SERVER_ERROR.search(self.stderr)
        if found is None:
            return None
        status = found.group(1)
        return ServerError(int(status) if status else None, found.group(2))


@dataclass(frozen=True)
class PublishRun(CargoRun):
    name: str = ""
    version: str = ""

    @property
    def uploaded(self) -> bool:
        """The API accepted the upload."""
        return f"Uploaded {self.name} v{self.version} to registry `{REGISTRY}`" in self.stderr

    @property
    def published(self) -> bool:
        """The API accepted it and cargo then saw the version in the index."""
        return f"Published {self.name} v{self.version} at registry `{REGISTRY}`" in self.stderr

    @property
    def wait_timed_out(self) -> bool:
        """Accepted, but the version did not reach the index before cargo stopped waiting."""
        return "timed out waiting for" in self.stderr


DependencyKind = Literal["normal", "dev", "build"]


@dataclass(frozen=True)
class Dependency:
    """One dependency as written in Cargo.toml.

    ``name`` is the key in the table; ``package`` the real crate name when renamed.
    ``registry`` None means crates.io (which needs the network). ``path`` alone (``req`` empty)
    is a path-only dependency, which cargo leaves out of what it publishes.
    """

    name: str
    req: str = ""
    registry: str | None = REGISTRY
    package: str | None = None
    optional: bool = False
    default_features: bool = True
    features: tuple[str, ...] = ()
    kind: DependencyKind = "normal"
    target: str | None = None
    path: str | None = None

    def inline(self) -> str:
        parts: list[str] = []
        if self.package is not None:
            parts.append(f"package = {_string(self.package)}")
        if self.req:
            parts.append(f"version = {_string(self.req)}")
        if self.path is not None:
            parts.append(f"path = {_string(self.path)}")
        elif self.registry is not None:
            parts.append(f"registry = {_string(self.registry)}")
        if self.optional:
            parts.append("optional = true")
        if not self.default_features:
            parts.append("default-features = false")
        if self.features:
            parts.append(f"features = {_array(self.features)}")
        return f"{_key(self.name)} = {{ {', '.join(parts)} }}"


_SECTIONS: Mapping[DependencyKind, str] = {
    "normal": "dependencies",
    "dev": "dev-dependencies",
    "build": "build-dependencies",
}


def write_package(
    folder: Path,
    name: str,
    version: str,
    *,
    dependencies: Sequence[Dependency] = (),
    features: Mapping[str, Sequence[str]] | None = None,
    lib_rs: str = "",
    edition: str = "2021",
    description: str | None = None,
    license: str | None = None,
    links: str | None = None,
    rust_version: str | None = None,
) -> Path:
    """Write a library package into ``folder`` (made if missing) and return ``folder``.

    ``links`` also writes an empty ``build.rs`` (cargo requires one).
    """
    package = [
        "[package]",
        f"name = {_string(name)}",
        f"version = {_string(version)}",
        f"edition = {_string(edition)}",
    ]
    for key, value in (
        ("description", description),
        ("license", license),
        ("links", links),
        ("rust-version", rust_version),
    ):
        if value is not None:
            package.append(f"{key} = {_string(value)}")
    if links is not None:
        package.append('build = "build.rs"')
    blocks = ["\n".join(package)]
    sections: dict[tuple[str | None, DependencyKind], list[str]] = {}
    for dep in dependencies:
        sections.setdefault((dep.target, dep.kind), []).append(dep.inline())
    for (target, kind), lines in sections.items():
        prefix = "" if target is None else f"target.{_key(target)}."
        blocks.append("\n".join([f"[{prefix}{_SECTIONS[kind]}]", *lines]))
    if features is not None:
        blocks.append("\n".join(["[features]", *(f"{_key(k)} = {_array(v)}" for k, v in features.items())]))
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "Cargo.toml").write_text("\n\n".join(blocks) + "\n")
    (folder / "src" / "lib.rs").write_text(lib_rs)
    if links is not None:
        (folder / "build.rs").write_text("fn main() {}\n")
    return folder


def run_cargo(
    home: CargoHome,
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> CargoRun:
    """Run ``cargo ARGS`` in ``cwd`` with ``home``'s environment (plus ``env``).

    At the timeout cargo and everything it started are killed; the run has no exit code.
    """
    command = ("cargo", *args)
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**home.env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return CargoRun(command, None, stdout, stderr)
    return CargoRun(command, process.returncode, stdout, stderr)


def publish(
    home: CargoHome,
    package: Path,
    *,
    verify: bool = False,
    allow_dirty: bool = True,
    wait: int | None = None,
    timeout: float = 120.0,
) -> PublishRun:
    """``cargo publish --registry local`` in ``package``.

    ``verify`` builds the packaged crate first (off by default: ``--no-verify``). ``wait``
    replaces cargo's fixed 60 s wait for the version to reach the index, through the unstable
    ``-Zpublish-timeout`` (with ``RUSTC_BOOTSTRAP=1``); 0 does not wait.
    """
    args = ["publish", "--registry", REGISTRY]
    if not verify:
        args.append("--no-verify")
    if allow_dirty:
        args.append("--allow-dirty")
    env: dict[str, str] = {}
    if wait is not None:
        args.append("-Zpublish-timeout")
        env = {"RUSTC_BOOTSTRAP": "1", "CARGO_PUBLISH_TIMEOUT": str(wait)}
    name, version = _name_and_version(package)
    run = run_cargo(home, args, cwd=package, timeout=timeout, env=env)
    return PublishRun(run.args, run.returncode, run.stdout, run.stderr, name, version)


def yank(
    home: CargoHome, crate: str, version: str, *, undo: bool = False, timeout: float = 120.0
) -> CargoRun:
    """``cargo yank CRATE@VERSION --registry local`` (``--undo`` to unyank)."""
    args = ["yank", f"{crate}@{version}", "--registry", REGISTRY]
    if undo:
        args.append("--undo")
    return run_cargo(home, args, cwd=home.path, timeout=timeout)


def generate_lockfile(home: CargoHome, package: Path, *, timeout: float = 120.0) -> CargoRun:
    """``cargo generate-lockfile`` in ``package`` (reads the index, downloads nothing)."""
    return run_cargo(home, ["generate-lockfile"], cwd=package, timeout=timeout)


def fetch(home: CargoHome, package: Path, *, timeout: float = 120.0) -> CargoRun:
    """``cargo fetch`` in ``package``: downloads every ``.crate`` and checks it against ``cksum``."""
    return run_cargo(home, ["fetch"], cwd=package, timeout=timeout)


def _name_and_version(package: Path) -> tuple[str, str]:
    manifest = tomllib.loads((package / "Cargo.toml").read_text())
    table = manifest.get("package", {})
    return str(table.get("name", "")), str(table.get("version", ""))


def _string(text: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else _string(text)


def _array(items: Sequence[str]) -> str:
    return "[" + ", ".join(_string(item) for item in items) + "]"


def _path() -> str:
    cargo = shutil.which("cargo")
    extra = str(Path(cargo).parent) if cargo else ""
    return os.pathsep.join(p for p in (extra, os.environ.get("PATH", "")) if p)
