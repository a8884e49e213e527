"""The README's promises: its embedded example runs, and the public API is what it exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ledger

README = Path(__file__).resolve().parent.parent / "README.md"


class TestReadme:
    def test_embedded_example_runs(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The python example in the README runs as written, its assertions included."""
        blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
        assert blocks, "the README has no python example"
        monkeypatch.chdir(tmp_path)
        exec(compile(blocks[0], str(README), "exec"), {})
        assert (tmp_path / "ledger.db").exists()

    def test_readme_names_the_two_commands(self) -> None:
        """The README gives the install-and-demo command and the test command that CI runs."""
        text = README.read_text()
        assert ".venv/bin/ledger demo" in text
        assert ".venv/bin/pytest -q" in text
        assert ".venv/bin/pytest -q" in (README.parent / ".ci" / "run").read_text()


class TestPublicApi:
    def test_all_names_exist(self) -> None:
        """Every name in ledger.__all__ is importable from the package."""
        for name in ledger.__all__:
            assert hasattr(ledger, name), name

    def test_all_is_complete(self) -> None:
        """Every public name the package module defines or imports is listed in __all__."""
        public = {n for n in vars(ledger) if not n.startswith("_")}
        modules = {n for n in public if type(getattr(ledger, n)).__name__ == "module"}
        assert public - modules == set(ledger.__all__)
