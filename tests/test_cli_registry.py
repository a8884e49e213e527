"""The registry's commands: API tokens (shown once, kept as a hash), owners, and their exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ledger.bootstrap import open_ledger
from ledger.entrypoints.cli import app
from ledger.services.publishing_access import token_digest
from ledger.settings import Settings
from tests.conftest import make_line

CLEAN_ENV = dict.fromkeys(
    ("LEDGER_STORE", "LEDGER_REMOTE", "LEDGER_BRANCH", "LEDGER_ACTOR", "LEDGER_CRATE_DIR")
)


@pytest.fixture
def cli(store_url: str) -> Callable[..., Result]:
    runner = CliRunner(env=CLEAN_ENV)

    def invoke(*args: str) -> Result:
        return runner.invoke(app, ["--store", store_url, "--actor", "operator", *args])

    return invoke


def document(result: Result) -> Any:
    return json.loads(result.stdout)


def test_a_token_is_shown_once_and_only_its_hash_is_recorded(
    cli: Callable[..., Result], store_url: str
) -> None:
    created = cli("--json", "token", "create", "--user", "alice")
    assert created.exit_code == 0, created.stderr
    doc = document(created)
    token, token_id = doc["token"], doc["token_id"]
    assert token.startswith(f"ldg_{token_id}_")
    with open_ledger(Settings(store=store_url)) as ledger:
        assert ledger.app.authenticate(token) == "alice"
        stored = b"".join(n.state for n in ledger.log.notifications_with_topic("ledger:ApiTokenCreated"))
    assert token.encode() not in stored  # the secret is nowhere in the log
    assert token_digest(token).encode() in stored

    revoked = cli("token", "revoke", token_id)
    assert revoked.exit_code == 0, revoked.stderr
    assert f"revoked token {token_id} of alice" in revoked.stdout
    again = cli("token", "revoke", token_id)
    assert again.exit_code == 1
    assert "already revoked" in again.stderr
    unknown = cli("token", "revoke", "0123456789abcdef")
    assert unknown.exit_code == 1
    assert "no API token" in unknown.stderr


def test_an_invalid_user_name_is_refused_and_nothing_written(
    cli: Callable[..., Result], store_url: str
) -> None:
    result = cli("token", "create", "--user", "al ice!")
    assert result.exit_code == 2
    assert "user name" in result.stderr
    with open_ledger(Settings(store=store_url)) as ledger:
        assert ledger.views.head() == 0


def test_owners_are_added_listed_and_removed(cli: Callable[..., Result], store_url: str) -> None:
    with open_ledger(Settings(store=store_url)) as ledger:
        ledger.app.publish(make_line("kaze", "0.1.6"), "alice", owner="alice")
    assert cli("owner", "add", "kaze", "bob").exit_code == 0
    listed = cli("--json", "owner", "list", "kaze")
    assert document(listed)["owners"] == ["alice", "bob"]
    twice = cli("owner", "add", "kaze", "bob")
    assert twice.exit_code == 1
    assert "already owns" in twice.stderr
    assert cli("owner", "remove", "kaze", "alice").exit_code == 0
    assert cli("owner", "list", "kaze").stdout.strip() == "bob"
    missing = cli("owner", "remove", "kaze", "carol")
    assert missing.exit_code == 1
    assert "carol is not an owner of kaze" in missing.stderr
    no_crate = cli("owner", "add", "nope", "bob")
    assert no_crate.exit_code == 1
    assert "no crate named 'nope'" in no_crate.stderr
    with open_ledger(Settings(store=store_url)) as ledger:
        events = [
            (e["event"], e.get("user"), e["actor"]) for e in ledger.history("kaze") if "Owner" in e["event"]
        ]
    assert events == [
        ("CrateOwnerAdded", "alice", "alice"),
        ("CrateOwnerAdded", "bob", "operator"),
        ("CrateOwnerRemoved", "alice", "operator"),
    ]


def test_serve_without_a_folder_for_crate_files_is_a_usage_error(pg_url: str) -> None:
    """On PostgreSQL there is no default folder beside the store: --crate-dir is asked for."""
    result = CliRunner(env=CLEAN_ENV).invoke(app, ["--store", pg_url, "serve", "--port", "0"])
    assert result.exit_code == 2
    assert "--crate-dir" in result.stderr


def test_init_writes_the_registrys_config_into_a_new_index(store_url: str, tmp_path: Any) -> None:
    """``init --registry-url`` writes config.json (dl, api) once, confirmed by read-back; an
    existing one is kept; a URL that is not http(s) is a usage error."""
    import pygit2

    remote = tmp_path / "index.git"
    pygit2.init_repository(str(remote), bare=True)
    runner = CliRunner(env={**CLEAN_ENV, "LEDGER_INDEX_DIR": str(tmp_path / "clone.git")})

    def init(*extra: str) -> Result:
        return runner.invoke(app, ["--store", store_url, "--remote", str(remote), "init", *extra])

    first = init("--registry-url", "http://127.0.0.1:8000/")
    assert first.exit_code == 0, first.stderr
    assert "config.json written in the index" in first.stderr
    repo = pygit2.Repository(str(remote))
    head = repo.references["refs/heads/master"].peel(pygit2.Commit)
    config = json.loads(head.tree["config.json"].data)
    assert config == {"dl": "http://127.0.0.1:8000/api/v1/crates", "api": "http://127.0.0.1:8000"}

    again = init("--registry-url", "http://other.example")
    assert again.exit_code == 0
    assert "kept as it is" in again.stderr
    assert repo.references["refs/heads/master"].peel(pygit2.Commit).id == head.id

    wrong = init("--registry-url", "ftp://127.0.0.1/")
    assert wrong.exit_code == 2
    assert "http(s) URL" in wrong.stderr
