"""An index the ledger did not write: its lines are never lost, the jobs say why they wait.

The scenario of a new operator: a live index (``config.json`` and serde 1.0.0) served over
git:// and http://, ``ledger init`` against it, ``ledger publish`` of serde 1.0.1 and ``ledger
worker --once``. On both stores and both protocols, serde 1.0.0 stays in the index byte for
byte, the job is held with a reason in its history, and after adoption (``import-index`` or
``worker --adopt-foreign``) the file holds 1.0.0 then 1.0.1, once each, and cargo resolves both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest
from typer.testing import CliRunner, Result

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.entrypoints.cli import app
from ledger.settings import Settings
from ledger.testing.cargo import cargo_available, resolve
from ledger.testing.remote import RemoteServer
from ledger.testing.tamper import push_straight
from tests.conftest import make_line

SERDE = index_path("serde")
CONFIG = b'{\n  "dl": "http://127.0.0.1/api/v1/crates",\n  "api": "http://127.0.0.1"\n}\n'
CLEAN_ENV = dict.fromkeys(
    ("LEDGER_STORE", "LEDGER_REMOTE", "LEDGER_BRANCH", "LEDGER_ACTOR", "LEDGER_INDEX_DIR")
)


def render(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


OLD = render(make_line("serde", "1.0.0"))
NEW = make_line("serde", "1.0.1")


def remote_file(bare: Path, path: str) -> bytes | None:
    repo = pygit2.Repository(str(bare))
    tree = repo.revparse_single("refs/heads/master").peel(pygit2.Commit).tree
    try:
        return bytes(repo[tree[path].id].peel(pygit2.Blob).data)
    except KeyError:
        return None


@pytest.fixture(params=["git", "http"])
def live_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RemoteServer]:
    """A live index the ledger never wrote: config.json and serde 1.0.0."""
    server = RemoteServer.start(tmp_path / "remote", protocol=request.param)
    push_straight(server.bare_path, {"config.json": CONFIG, SERDE: OLD + b"\n"}, message="the index")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli(store_url: str, live_index: RemoteServer, tmp_path: Path) -> Callable[..., Result]:
    runner = CliRunner(env=CLEAN_ENV)
    base = ["--store", store_url, "--remote", live_index.url, "--actor", "alice"]

    def invoke(*args: str, input: str | None = None) -> Result:
        env = {"LEDGER_INDEX_DIR": str(tmp_path / "clone.git")}
        return runner.invoke(app, [*base, *args], input=input, env=env)

    return invoke


def held_scenario(cli: Callable[..., Result], live_index: RemoteServer) -> dict[str, Any]:
    """init, publish serde 1.0.1, worker --once: the job is held and 1.0.0 is still there."""
    init = cli("init")
    assert init.exit_code == 0, init.stderr
    assert "the index is not adopted yet: 1 crate file(s) (se/rd/serde)" in init.stderr
    assert "ledger import-index" in init.stderr
    assert "--adopt-foreign" in init.stderr
    published = cli("--json", "publish", "-", input=json.dumps(NEW))
    assert published.exit_code == 0, published.stderr
    head = live_index.head()
    worker = cli("--json", "worker", "--once")
    assert worker.exit_code == 1, worker.stdout  # a job stayed open
    result = json.loads(worker.stdout)
    assert (result["held"], result["confirmed"], result["open"]) == (1, 0, 1)
    assert "serde" in result["holds"]
    assert "1.0.0" in result["holds"]["serde"]
    assert "held serde:" in worker.stderr
    assert live_index.head() == head  # nothing was pushed
    assert remote_file(live_index.bare_path, SERDE) == OLD + b"\n"  # byte for byte
    doc: dict[str, Any] = json.loads(published.stdout)
    return doc


class TestHeld:
    def test_the_worker_never_pushes_over_a_line_it_has_no_record_of(
        self, cli: Callable[..., Result], live_index: RemoteServer
    ) -> None:
        """serde 1.0.0 stays; the history says why the job waits; the audit names both versions."""
        published = held_scenario(cli, live_index)
        history = json.loads(cli("--json", "history", "serde@1.0.1").stdout)
        held = [e for e in history["events"] if e["event"] == "IndexSyncHeld"]
        assert len(held) == 1
        assert held[0]["job"] == published["job"]
        assert held[0]["foreign"] == ["1.0.0"]
        assert held[0]["remote_head"] == live_index.head()
        assert "has no record of (1.0.0)" in held[0]["reason"]
        assert "ledger import-index" in held[0]["reason"]

        audit = cli("--json", "audit")
        assert audit.exit_code == 1
        found = {(d["version"], d["class"]) for d in json.loads(audit.stdout)["discrepancies"]}
        assert found == {("1.0.0", "foreign"), ("1.0.1", "stuck")}

        again = cli("--json", "worker", "--once")  # the same finding is not recorded twice
        assert again.exit_code == 1
        history = json.loads(cli("--json", "history", "serde@1.0.1").stdout)
        assert [e["event"] for e in history["events"]].count("IndexSyncHeld") == 1
        assert remote_file(live_index.bare_path, SERDE) == OLD + b"\n"

    def test_import_index_first_then_the_file_holds_both_in_order(
        self, cli: Callable[..., Result], live_index: RemoteServer
    ) -> None:
        held_scenario(cli, live_index)
        imported = cli("--json", "import-index", live_index.url)
        assert imported.exit_code == 0, imported.stdout
        assert json.loads(imported.stdout)["accepted"] == 1
        worker = cli("--json", "worker", "--once")
        assert worker.exit_code == 0, worker.stdout
        assert remote_file(live_index.bare_path, SERDE) == OLD + b"\n" + render(NEW) + b"\n"
        assert cli("audit", "--scan").exit_code == 0
        history = json.loads(cli("--json", "history", "serde@1.0.0").stdout)["events"]
        published = [e for e in history if e["event"] == "VersionPublished"]
        assert [e["actor"] for e in published] == ["import"]
        if cargo_available():
            for version in ("1.0.0", "1.0.1"):
                found = resolve(live_index.url, "serde", f"={version}")
                assert found.ok, found.output

    def test_adopt_on_first_touch_records_the_lines_as_imported_before_the_new_version(
        self, cli: Callable[..., Result], live_index: RemoteServer
    ) -> None:
        held_scenario(cli, live_index)
        worker = cli("--json", "worker", "--once", "--adopt-foreign")
        assert worker.exit_code == 0, worker.stdout
        result = json.loads(worker.stdout)
        assert (result["adopted"], result["confirmed"], result["held"]) == (1, 1, 0)
        data = remote_file(live_index.bare_path, SERDE)
        assert data == OLD + b"\n" + render(NEW) + b"\n"  # 1.0.0 then 1.0.1, once each
        events = json.loads(cli("--json", "history", "serde").stdout)["events"]
        published = [(e["version"], e["actor"]) for e in events if e["event"] == "VersionPublished"]
        assert published == [("1.0.1", "alice"), ("1.0.0", "import")]
        assert cli("audit", "--scan").exit_code == 0
        if cargo_available():
            for version in ("1.0.0", "1.0.1"):
                found = resolve(live_index.url, "serde", f"={version}")
                assert found.ok, found.output
                assert f'name = "serde"\nversion = "{version}"' in found.output


class TestLibrary:
    def test_a_line_written_behind_the_ledgers_back_is_kept_and_reported(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """A version pushed straight to the remote between two publishes is never pushed over."""
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        try:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                ledger.publish(make_line("kaze", "0.1.0"), "alice")
                assert ledger.sync().confirmed == 1
                before = remote_file(server.bare_path, index_path("kaze"))
                assert before is not None
                sneaked = render(make_line("kaze", "0.1.1"))
                push_straight(server.bare_path, {index_path("kaze"): before + sneaked + b"\n"})
                ledger.publish(make_line("kaze", "0.2.0"), "alice")
                result = ledger.sync()
                assert (result.held, result.confirmed) == (1, 0)
                assert remote_file(server.bare_path, index_path("kaze")) == before + sneaked + b"\n"
                report = ledger.audit()
                assert {(d.version, d.cls) for d in report.discrepancies} == {
                    ("0.1.1", "foreign"),
                    ("0.2.0", "stuck"),
                }
        finally:
            server.stop()

    def test_a_line_that_cannot_be_kept_byte_for_byte_is_not_adopted(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """A foreign line in another JSON spelling would change if rewritten: the job stays held."""
        from ledger.services.sync import WorkerOptions

        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        spaced = json.dumps(make_line("serde", "1.0.0")).encode()  # ", " and ": " separators
        push_straight(server.bare_path, {SERDE: spaced + b"\nnot json\n"})
        try:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                ledger.publish(NEW, "alice")
                result = ledger.sync(WorkerOptions(adopt_foreign=True))
                assert (result.held, result.adopted) == (1, 0)
                reason = result.holds["serde"]
                assert "1.0.0 cannot be adopted as it stands: not in the compact form" in reason
                assert "line 2 cannot be adopted as it stands: not a valid index line" in reason
                assert remote_file(server.bare_path, SERDE) == spaced + b"\nnot json\n"
        finally:
            server.stop()


class TestRestoreFromHistory:
    def test_a_line_an_earlier_worker_pushed_over_comes_back_from_the_history(
        self, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The incident as it happened before the worker compared files: found, dry run, restored."""
        from ledger.services.sync import SyncWorker

        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        push_straight(server.bare_path, {"config.json": CONFIG, SERDE: OLD + b"\n"}, message="the index")
        try:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                ledger.publish(NEW, "alice")
                with monkeypatch.context() as patch:  # the worker as it was: no look at the file
                    patch.setattr(SyncWorker, "_guard", lambda *_: None)
                    assert ledger.sync().confirmed == 1
                assert remote_file(server.bare_path, SERDE) == render(NEW) + b"\n"  # 1.0.0 is gone
                assert ledger.audit().consistent  # and nothing says so: the incident

                position = ledger.views.catch_up()
                shown = CliRunner(env=CLEAN_ENV).invoke(
                    app,
                    ["--store", store_url, "--remote", server.url, "repair", "--dry-run", "--restore-lost"],
                    env={"LEDGER_INDEX_DIR": str(tmp_path / "clone.git")},
                )
                assert shown.exit_code == 0, shown.stderr
                assert "would restore serde 1.0.0 in se/rd/serde, removed by" in shown.stdout
                plan = ledger.repair(dry_run=True, restore_lost=True)
                assert [(r["crate"], r["version"], r["restorable"]) for r in plan.restored] == [
                    ("serde", "1.0.0", True)
                ]
                assert plan.restored[0]["line"] == OLD.decode()
                assert ledger.views.catch_up() == position  # the dry run recorded nothing
                assert remote_file(server.bare_path, SERDE) == render(NEW) + b"\n"

                done = ledger.repair(restore_lost=True)
                assert done.confirmed
                assert [r["version"] for r in done.restored] == ["1.0.0"]
                assert remote_file(server.bare_path, SERDE) == OLD + b"\n" + render(NEW) + b"\n"
                assert ledger.sync().confirmed == 1  # the adoption's job: the index holds it
                assert ledger.audit_scan().consistent
                assert ledger.repair(dry_run=True, restore_lost=True).restored == []  # idempotent
                history = ledger.history("serde", "1.0.0")
                assert [(e["event"], e.get("actor")) for e in history][-1] == ("IndexSyncCompleted", None)
                assert ("VersionPublished", "import") in [(e["event"], e.get("actor")) for e in history]
        finally:
            server.stop()


class TestNotAFile:
    @pytest.mark.parametrize("kind", ["directory", "symlink"])
    def test_a_crate_path_that_is_not_a_file_is_never_written_over(
        self, store_url: str, tmp_path: Path, kind: str
    ) -> None:
        """A directory or a symbolic link where the crate's file would go: held, left as it is."""
        server = RemoteServer.start(tmp_path / "remote", protocol="git")
        repo = pygit2.Repository(str(server.bare_path))
        index = pygit2.Index()
        if kind == "directory":
            index.add(pygit2.IndexEntry(f"{SERDE}/inner", repo.create_blob(OLD), pygit2.enums.FileMode.BLOB))
        else:
            index.add(pygit2.IndexEntry(SERDE, repo.create_blob(b"/etc/passwd"), pygit2.enums.FileMode.LINK))
        sig = pygit2.Signature("someone", "someone@localhost")
        head = repo.create_commit("refs/heads/master", sig, sig, "odd", index.write_tree(repo), [])
        try:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                ledger.publish(NEW, "alice")
                result = ledger.sync()
                assert (result.held, result.confirmed) == (1, 0)
                assert f"{SERDE} at {str(head)[:12]} is a {kind}, not a crate file" in result.holds["serde"]
                assert server.head() == str(head)
                repaired = ledger.repair()  # it writes the missing config.json, and leaves the path alone
                assert repaired.changes == []
                reasons = [p["reason"] for p in repaired.phantoms]
                assert f"{SERDE} is a {kind} in the index, not a crate file: left alone" in reasons
                after = (
                    pygit2.Repository(str(server.bare_path))
                    .revparse_single("refs/heads/master")
                    .peel(pygit2.Commit)
                )
                before = repo[head].peel(pygit2.Commit)
                assert after.tree[SERDE.split("/")[0]].id == before.tree[SERDE.split("/")[0]].id
        finally:
            server.stop()


class TestBuildMetadataTwins:
    def test_a_second_line_for_a_version_is_never_dropped_by_a_rewrite(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """The real index holds 726 lines such as almel 1.3.1+1 beside 1.3.1: one version for the
        ledger, two lines in the index. The import refuses the second; no write drops it unasked."""
        twin = render(make_line("serde", "1.0.0+build.1"))
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        push_straight(server.bare_path, {"config.json": CONFIG, SERDE: OLD + b"\n" + twin + b"\n"})
        try:
            settings = Settings(store=store_url, remote=server.url, index_dir=tmp_path / "clone.git")
            with open_ledger(settings) as ledger:
                imported = ledger.import_index(server.url)
                assert [r.line for r in imported.refused] == [2]
                ledger.publish(NEW, "alice")
                result = ledger.sync()
                assert result.held == 1
                assert "the ledger has this version as 1.0.0" in result.holds["serde"]
                assert remote_file(server.bare_path, SERDE) == OLD + b"\n" + twin + b"\n"

                kept = ledger.repair()  # writes 1.0.1, keeps the twin
                assert (
                    remote_file(server.bare_path, SERDE) == OLD + b"\n" + render(NEW) + b"\n" + twin + b"\n"
                )
                assert [p["version"] for p in kept.phantoms] == ["1.0.0+build.1"]
                removed = ledger.repair(remove_phantoms=True)  # asked for, and recorded
                assert removed.changes[0].phantoms_removed == ["1.0.0+build.1"]
                assert remote_file(server.bare_path, SERDE) == OLD + b"\n" + render(NEW) + b"\n"
                assert ledger.sync().open_left == 0
                assert ledger.audit_scan().consistent
        finally:
            server.stop()
