"""The architecture's rules hold, and the check that enforces them fails when one is broken.

``lint-imports`` (contracts in pyproject.toml, run by .ci/run) forbids import circles, imports
against the layers, and git or SQL drivers outside the adapters. These tests break each rule
in a copy of the tree and see the check fail; SQL text outside the adapters and the views is
found by reading the source.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "DROP ", "ALTER ", "ANALYZE ", "WITH ")
NO_SQL = ["ledger/domain", "ledger/services", "ledger/entrypoints", "ledger/ports.py", "ledger/bootstrap.py"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None, "lint-imports is installed with the project's dev extra"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's packages and contracts."""
    for name in ("ledger", "projections"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(path: Path, line: str) -> None:
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.replace("0 broken", "")


def test_an_import_circle_breaks_the_check(tree: Path) -> None:
    """importing importing sync, which imports importing: a circle of two use cases."""
    add_line(tree / "ledger/services/importing.py", "import ledger.services.sync  # noqa: F401")
    result = lint(tree)
    assert result.returncode == 1
    assert "No import circles inside a package BROKEN" in result.stdout
    assert "No cycles are allowed in ledger.services" in result.stdout


def test_the_domain_importing_an_adapter_breaks_the_check(tree: Path) -> None:
    add_line(tree / "ledger/domain/names.py", "import ledger.adapters.git.index  # noqa: F401")
    result = lint(tree)
    assert result.returncode == 1
    assert "ledger.domain is not allowed to import ledger.adapters" in result.stdout


def test_a_use_case_importing_git_breaks_the_check(tree: Path) -> None:
    add_line(tree / "ledger/services/scan.py", "import pygit2  # noqa: F401")
    result = lint(tree)
    assert result.returncode == 1
    assert "ledger.services is not allowed to import pygit2" in result.stdout


def _sql_literals(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(SQL_WORDS)
        ):
            found.append((node.lineno, node.value[:60]))
    return found


def test_sql_is_written_only_in_the_adapters_and_the_views() -> None:
    """The domain, the use cases, the ports and the entry points hold no SQL text: they ask the
    views (projections/) and the store's adapters (ledger/adapters/stores/)."""
    files = [p for name in NO_SQL for p in sorted((ROOT / name).rglob("*.py")) or [ROOT / name]]
    assert len(files) > 20
    offenders = {str(p.relative_to(ROOT)): _sql_literals(p) for p in files}
    assert {path: hits for path, hits in offenders.items() if hits} == {}


def test_the_sql_scan_finds_sql(tmp_path: Path) -> None:
    """The scan above would see a query if one were written."""
    sample = tmp_path / "sample.py"
    sample.write_text('ROWS = db.query(f"SELECT crate_key FROM view_versions WHERE x = {1}")\n')
    assert _sql_literals(sample) == [(1, "SELECT crate_key FROM view_versions WHERE x = ")]
