"""A table of hostile inputs, run through every entry point that takes input.

Each input goes through the library (``Ledger.publish``), the CLI (``ledger publish FILE``) and the
import (``ledger import-index`` of a git repository holding it as a crate file); the file-level
inputs (symbolic links pointing outside, a crate path that is a directory, a config.json that is
not JSON, a folder that is not a repository) go through the CLI and the import. Each must be
refused with a clear error naming the problem and its exit code, and nothing written: the
store's log does not move. The test ids carry how many inputs each entry point was given; each
test prints how many were tried and how many passed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from typer.testing import CliRunner

from ledger.bootstrap import open_ledger
from ledger.domain.errors import Invalid
from ledger.domain.names import index_path
from ledger.entrypoints.cli import app
from ledger.settings import Settings

CLEAN_ENV = dict.fromkeys(
    ("LEDGER_STORE", "LEDGER_REMOTE", "LEDGER_BRANCH", "LEDGER_ACTOR", "LEDGER_INDEX_DIR")
)
CKSUM = hashlib.sha256(b"kaze").hexdigest()


def fields(**extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "name": "kaze",
        "vers": "0.1.6",
        "deps": [],
        "cksum": CKSUM,
        "features": {},
        "yanked": False,
    }
    line.update(extra)
    return line


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def raw_with(text: str) -> bytes:
    """A line whose last field is given as raw JSON text (for what json.dumps cannot write)."""
    return compact(fields())[:-1] + b"," + text.encode() + b"}"


DEP = {
    "name": "serde",
    "req": "^1",
    "features": [],
    "optional": False,
    "default_features": True,
    "target": None,
    "kind": "normal",
}


SMALL_DEP = {**DEP, "name": "a", "req": "*", "kind": None}
"""10,000 of them stay below the 1 MiB line limit: the count is what is refused."""


@dataclass(frozen=True)
class Hostile:
    """One hostile index line and the words its refusal must contain."""

    id: str
    data: bytes
    message: str
    path: str = index_path("kaze")
    """Where the import finds it."""


LINES = [
    *(
        Hostile(f"name-{n}", compact(fields(name=n)), "Windows device name", path=f"{len(n)}/{n[0]}/{n}")
        for n in ("con", "nul", "aux")
    ),
    Hostile("name-com1", compact(fields(name="com1")), "Windows device name", path="co/m1/com1"),
    Hostile("name-NUL-uppercase", compact(fields(name="NUL")), "Windows device name", path="3/n/nul"),
    Hostile(
        "duplicate-keys",
        compact(fields())[:-1] + b',"yanked":true}',
        "has the key 'yanked' more than once",
    ),
    Hostile(
        "duplicate-keys-in-dep",
        compact(fields(deps=[DEP])).replace(b'"kind"', b'"req":"2","kind"'),
        "more than once",
    ),
    Hostile("nan", raw_with('"v":NaN'), "holds NaN, which is not a JSON number"),
    Hostile("infinity", raw_with('"v":Infinity'), "holds Infinity, which is not a JSON number"),
    Hostile("minus-infinity", raw_with('"links":-Infinity'), "holds -Infinity"),
    Hostile("int-past-2^63-v", raw_with(f'"v":{2**63}'), "v is out of range"),
    Hostile("int-past-2^64-yanked", compact(fields(yanked=2**64)), "yanked must be a boolean"),
    Hostile("int-5000-digits", raw_with('"v":' + "9" * 5000), "not JSON"),
    Hostile(
        "deps-nested-100",
        compact(fields()).replace(b'"deps":[]', b'"deps":' + b"[" * 100 + b"]" * 100),
        "deps[0] must be an object",
    ),
    Hostile(
        "deps-nested-100000",
        compact(fields())[:-1] + b',"deps2":' + b"[" * 100_000 + b"}",
        "nests JSON arrays or objects too deeply",
    ),
    Hostile(
        "deps-10000-entries",
        compact(fields(deps=[SMALL_DEP] * 10_000)),
        "lists 10000 dependencies, more than the limit",
    ),
    Hostile(
        "features-int-value", compact(fields(features={"std": [1]})), "features['std'][0] must be a string"
    ),
    Hostile("features-string-value", compact(fields(features={"std": "alloc"})), "must be a list of strings"),
    Hostile("features-list", compact(fields(features=["std"])), "features must be an object"),
    Hostile(
        "features2-null-member", compact(fields(v=2, features2={"a": None})), "must be a list of strings"
    ),
    Hostile("links-int", compact(fields(links=7)), "links must be a string or null"),
    Hostile("links-list", compact(fields(links=["z"])), "links must be a string or null"),
    Hostile("links-empty", compact(fields(links="")), "links must name a native library"),
    Hostile("rust-version-number", raw_with('"rust_version":1.70'), "rust_version must be a string or null"),
    Hostile(
        "rust-version-word", compact(fields(rust_version="latest")), "must be a Rust version such as 1.70"
    ),
    Hostile(
        "rust-version-prerelease", compact(fields(rust_version="1.70.0-nightly")), "must be a Rust version"
    ),
    Hostile("v2-without-features2", compact(fields(v=2)), "v is 2 but the line has no features2"),
    Hostile(
        "features2-without-v2",
        compact(fields(features2={"x": ["dep:serde"]})),
        "features2 is present but v is not 2",
    ),
    Hostile("features2-with-v1", compact(fields(v=1, features2={})), "features2 is present but v is not 2"),
    Hostile("version-v-prefix", compact(fields(vers="v1.0.0")), "it starts with 'v'"),
    Hostile("version-major-past-2^64", compact(fields(vers=f"{2**64}.0.0")), "does not fit in 64 bits"),
    Hostile("version-patch-21-digits", compact(fields(vers="1.0." + "9" * 21)), "does not fit in 64 bits"),
    Hostile("binary-not-utf-8", b"\x89PNG\x1a\x00\xff\xfe\x00IHDR", "not valid UTF-8"),
    Hostile("binary-nul-bytes", b"\x00\x01\x02\x03", "not JSON"),
    Hostile("utf-16-line", compact(fields()).decode().encode("utf-16"), "not valid UTF-8"),
]


# -- the entry points -------------------------------------------------------------------------------


def log_head(store_url: str) -> int:
    with open_ledger(Settings(store=store_url)) as ledger:
        return ledger.views.head()


def commit_files(repo_path: Path, files: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    """A bare repository whose master holds ``files`` (and symbolic links ``links``: path -> target)."""
    repo = pygit2.init_repository(str(repo_path), bare=True)
    index = pygit2.Index()
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    for path, target in (links or {}).items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(target.encode()), pygit2.enums.FileMode.LINK))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("someone", "someone@localhost")
    repo.create_commit("refs/heads/master", sig, sig, "hostile", tree, [])
    return repo_path


def run_cli(store_url: str, *args: str, input: bytes | None = None) -> tuple[int, dict[str, Any], str]:
    result = CliRunner(env=CLEAN_ENV).invoke(app, ["--store", store_url, "--json", *args], input=input)
    return result.exit_code, json.loads(result.stdout), result.stderr


def library(store_url: str, case: Hostile, tmp: Path) -> str | None:
    """What went wrong (None: refused as it must be) when the library is given the line."""
    with open_ledger(Settings(store=store_url)) as ledger:
        before = ledger.views.head()
        try:
            ledger.publish(case.data, "alice")
        except Invalid as exc:
            if case.message not in exc.message:
                return f"refused with {exc.message!r}"
        else:
            return "accepted"
        if ledger.views.head() != before:
            return "wrote events"
    return None


def cli_file(store_url: str, case: Hostile, tmp: Path) -> str | None:
    source = tmp / f"{case.id}.json"
    source.write_bytes(case.data)
    before = log_head(store_url)
    code, document, stderr = run_cli(store_url, "publish", str(source))
    if code != 2 or document.get("ok") is not False:
        return f"exit {code}: {document}"
    if case.message not in document["error"]["message"]:
        return f"refused with {document['error']['message']!r}"
    if not stderr.startswith("error: "):
        return f"stderr {stderr!r}"
    return "wrote events" if log_head(store_url) != before else None


def import_index(store_url: str, case: Hostile, tmp: Path) -> str | None:
    repo = commit_files(tmp / f"{case.id}.git", {case.path: case.data + b"\n"})
    before = log_head(store_url)
    code, document, _ = run_cli(store_url, "import-index", str(repo))
    if code != 1 or document.get("ok") is not False:
        return f"exit {code}: {document}"
    errors = [r["error"] for r in document["refused"] if r["path"] == case.path]
    if not errors or not any(case.message in e for e in errors):
        return f"refused with {errors!r}"
    return "wrote events" if log_head(store_url) != before else None


ENTRY_POINTS: dict[str, Callable[[str, Hostile, Path], str | None]] = {
    "library": library,
    "cli": cli_file,
    "import": import_index,
}


class TestHostileLines:
    @pytest.mark.parametrize("entry", [pytest.param(e, id=f"{e}-{len(LINES)}-inputs") for e in ENTRY_POINTS])
    def test_every_hostile_line_is_refused_and_writes_nothing(
        self, store_url: str, tmp_path: Path, entry: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        failures = {}
        for case in LINES:
            problem = ENTRY_POINTS[entry](store_url, case, tmp_path)
            if problem is not None:
                failures[case.id] = problem
        with capsys.disabled():
            print(f"\nhostile lines via {entry}: {len(LINES)} tried, {len(LINES) - len(failures)} passed")
        assert not failures, failures


# -- inputs that are files, folders and repositories ----------------------------------------------


@dataclass(frozen=True)
class HostileSource:
    id: str
    make: Callable[[Path], Path]
    """Builds the input below the given folder and returns its path."""
    command: str
    code: int
    message: str


def directory_as_file(tmp: Path) -> Path:
    folder = tmp / "a-directory.json"
    folder.mkdir()
    return folder


def symlink_outside(tmp: Path) -> Path:
    return commit_files(
        tmp / "links.git",
        {"config.json": b'{"dl":"http://x"}\n'},
        links={index_path("serde"): "/etc/passwd", index_path("kaze"): "../../../../outside"},
    )


def working_tree_with_symlinks(tmp: Path) -> Path:
    """A checked-out index (not bare) whose commit holds a symbolic link pointing outside it."""
    outside = tmp / "secret"
    outside.write_text('{"name":"serde"}\n')
    tree = tmp / "checkout"
    repo = pygit2.init_repository(str(tree))
    os.makedirs(tree / "se" / "rd")
    os.symlink(outside, tree / "se" / "rd" / "serde")
    repo.index.add_all()
    repo.index.write()
    sig = pygit2.Signature("someone", "someone@localhost")
    repo.create_commit("HEAD", sig, sig, "links", repo.index.write_tree(), [])
    return tree


def crate_path_is_directory(tmp: Path) -> Path:
    return commit_files(
        tmp / "dir.git", {f"{index_path('serde')}/inner": compact(fields(name="serde")) + b"\n"}
    )


SOURCES = [
    HostileSource("cli-file-is-a-directory", directory_as_file, "publish", 2, "Is a directory"),
    HostileSource("cli-file-missing", lambda tmp: tmp / "missing.json", "publish", 2, "cannot read file"),
    HostileSource(
        "cli-file-binary",
        lambda tmp: (tmp / "binary.json").write_bytes(bytes(range(256)) * 4) and tmp / "binary.json",
        "publish",
        2,
        "holds",
    ),
    HostileSource(
        "cli-file-utf-16",
        lambda tmp: (
            (tmp / "u16.json").write_bytes(compact(fields()).decode().encode("utf-16")) and tmp / "u16.json"
        ),
        "publish",
        2,
        "not valid UTF-8",
    ),
    HostileSource("import-symlinks-pointing-outside", symlink_outside, "import-index", 1, "a symbolic link"),
    HostileSource(
        "import-checked-out-folder-with-symlinks",
        working_tree_with_symlinks,
        "import-index",
        1,
        "a symbolic link",
    ),
    HostileSource(
        "import-crate-path-is-a-directory", crate_path_is_directory, "import-index", 1, "a directory"
    ),
    HostileSource(
        "import-config-not-json",
        lambda tmp: commit_files(
            tmp / "conf.git", {"config.json": b"dl = 'x'\n", index_path("kaze"): compact(fields()) + b"\n"}
        ),
        "import-index",
        2,
        "config.json of",
    ),
    HostileSource(
        "import-config-array",
        lambda tmp: commit_files(
            tmp / "arr.git", {"config.json": b"[]\n", index_path("kaze"): compact(fields()) + b"\n"}
        ),
        "import-index",
        2,
        "must be a JSON object",
    ),
    HostileSource(
        "import-config-binary",
        lambda tmp: commit_files(
            tmp / "bin.git", {"config.json": b"\xff\xfe\x00", index_path("kaze"): compact(fields()) + b"\n"}
        ),
        "import-index",
        2,
        "is not JSON",
    ),
    HostileSource(
        "import-folder-not-a-repository",
        lambda tmp: (tmp / "plain").mkdir() or tmp / "plain",
        "import-index",
        2,
        "not a git repository",
    ),
    HostileSource("import-missing-folder", lambda tmp: tmp / "nowhere", "import-index", 2, "does not exist"),
]


class TestHostileSources:
    @pytest.mark.parametrize(
        "entry", [pytest.param("cli-and-import", id=f"cli-and-import-{len(SOURCES)}-inputs")]
    )
    def test_every_hostile_source_is_refused_and_writes_nothing(
        self, store_url: str, tmp_path: Path, entry: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        failures = {}
        for case in SOURCES:
            folder = tmp_path / case.id
            folder.mkdir()
            source = case.make(folder)
            before = log_head(store_url)
            code, document, _ = run_cli(store_url, case.command, str(source))
            shown = json.dumps(document)
            if code != case.code or document.get("ok") is not False:
                failures[case.id] = f"exit {code}: {shown[:300]}"
            elif case.message not in shown:
                failures[case.id] = f"no {case.message!r} in {shown[:300]}"
            elif log_head(store_url) != before:
                failures[case.id] = "wrote events"
        with capsys.disabled():
            print(
                f"\nhostile sources via {entry}: {len(SOURCES)} tried, {len(SOURCES) - len(failures)} passed"
            )
        assert not failures, failures
