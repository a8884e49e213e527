"""Ask cargo itself whether an index serves a version: the proof a registry's users care about.

``cargo generate-lockfile`` runs in a throwaway project with its own ``CARGO_HOME`` whose only
registry is the index under test, so nothing on the machine or the network is consulted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


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


def _path() -> str:
    cargo = shutil.which("cargo")
    extra = str(Path(cargo).parent) if cargo else ""
    return os.pathsep.join(p for p in (extra, os.environ.get("PATH", "")) if p)
