"""Fixtures shared by the tests: a store per backend, lines, and the PostgreSQL policy.

Every test that takes ``store_url`` runs twice: on a SQLite file and on PostgreSQL in a schema
of its own (dropped afterwards). Without a PostgreSQL server the PostgreSQL half skips on a
laptop, and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_DSN = os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin() -> Any:
    """An autocommit connection to the test database, outside any test's schema."""
    import psycopg

    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)


def postgres_or_skip() -> None:
    """Skip when PostgreSQL is unreachable, except under CI=true where that is a failure."""
    try:
        pg_admin().close()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must be reachable under CI=true: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")


def _pg_schema_url() -> Iterator[str]:
    postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{PG_DSN}?schema={schema}"
    with pg_admin() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        # the views of the ledger's other index targets, each in a schema of its own
        found = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}_views_%",)
        ).fetchall()
        for (name,) in found:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL with a fresh schema, dropped after the test."""
    yield from _pg_schema_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from _pg_schema_url()


def make_line(name: str = "kaze", vers: str = "0.1.6", **extra: Any) -> dict[str, Any]:
    """A valid cargo index line for ``name`` ``vers``."""
    import hashlib

    line: dict[str, Any] = {
        "name": name,
        "vers": vers,
        "deps": [],
        "cksum": hashlib.sha256(f"{name}@{vers}".encode()).hexdigest(),
        "features": {},
        "yanked": False,
    }
    line.update(extra)
    return line


@pytest.fixture
def line() -> Callable[..., dict[str, Any]]:
    return make_line
