"""The progress display of long work, checked under a pseudo-terminal without a screenshot.

``ledger import-index`` of a 5,000-file index runs with stderr on a pseudo-terminal: progress
lines appear there, stdout (a pipe) carries only the result; with ``--json`` stdout is exactly
the one JSON document and no progress is drawn; with ``--quiet`` nothing is drawn either.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from ledger.adapters.git.index import GitIndex
from ledger.domain.names import index_path
from ledger.progress import TerminalProgress, report, reporting
from tests.conftest import make_line

FILES = 5000


@pytest.fixture(scope="module")
def index_5000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index") / "index.git"
    pygit2.init_repository(str(folder), bare=True)
    files = [
        (
            index_path(f"crate-{n:05d}"),
            json.dumps(make_line(f"crate-{n:05d}", "0.1.0"), separators=(",", ":")).encode() + b"\n",
        )
        for n in range(FILES)
    ]
    with GitIndex.open(folder, str(folder), branch="master") as index:
        commit = index.build_commit(files, "5,000 crates")
    repo = pygit2.Repository(str(folder))
    repo.references.create("refs/heads/master", commit, force=True)
    return folder


def run_under_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pseudo-terminal and stdout on a pipe: (code, stdout, stderr)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ledger"), *args], stdout=subprocess.PIPE, stderr=slave, env=env
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    code = process.wait(timeout=120)
    os.close(master)
    return code, out, seen


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_") and k != "NO_COLOR"}
    return {**clean, "LEDGER_STORE": f"sqlite:///{tmp_path / 'ledger.db'}", "TERM": "xterm"}


class TestImportUnderATerminal:
    def test_progress_goes_to_stderr_and_stdout_keeps_the_result(
        self, index_5000: Path, env: dict[str, str]
    ) -> None:
        code, out, err = run_under_pty(["import-index", str(index_5000)], env)
        assert code == 0, err.decode(errors="replace")
        progress = [part for part in err.split(b"\r") if part.startswith(b"import: crate files: ")]
        assert len(progress) >= 2, err
        assert b"5,000/5,000" in progress[-1]
        assert b"left" in progress[-1]
        assert b"\x1b[K" in err  # a terminal line rewritten in place
        assert out.decode().startswith(f"imported {index_5000} at ")
        assert b"\r" not in out
        assert b"crate files:" not in out

    def test_json_keeps_stdout_exactly_the_document_and_draws_nothing(
        self, index_5000: Path, env: dict[str, str]
    ) -> None:
        code, out, err = run_under_pty(["--json", "import-index", str(index_5000)], env)
        assert code == 0, err.decode(errors="replace")
        document = json.loads(out)  # exactly one JSON document, nothing else
        assert (document["files"], document["accepted"]) == (FILES, FILES)
        assert b"crate files:" not in err

    def test_quiet_draws_nothing(self, index_5000: Path, env: dict[str, str]) -> None:
        code, _, err = run_under_pty(["--quiet", "import-index", str(index_5000)], env)
        assert code == 0
        assert b"crate files:" not in err


class TestTerminalProgress:
    def test_no_color_uses_no_escape_sequences(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NO_COLOR", "1")
        stream = io.StringIO()
        with reporting(TerminalProgress(stream)):
            for done in range(1, 4):
                report("scan: crate files", done, 3)
        text = stream.getvalue()
        assert "\x1b" not in text
        assert text.endswith("\n")
        assert "scan: crate files: 3/3" in text

    def test_nothing_is_drawn_without_a_reporter(self, capsys: pytest.CaptureFixture[str]) -> None:
        report("import: crate files", 1, 2)
        assert capsys.readouterr() == ("", "")
