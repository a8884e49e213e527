"""The CLI's index commands: worker, audit --scan, repair and import-index, with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
from typer.testing import CliRunner, Result

from ledger.adapters.git.index import GitIndex
from ledger.entrypoints.cli import app
from tests.conftest import make_line


def bare(path: Path) -> Path:
    pygit2.init_repository(str(path), bare=True)
    return path


@pytest.fixture
def run(store_url: str, tmp_path: Path) -> Any:
    """Run the CLI against this test's store and a fresh bare remote."""
    remote = bare(tmp_path / "remote.git")
    runner = CliRunner()

    def invoke(*args: str, remote_url: str | None = None, stdin: str | None = None) -> Result:
        base = ["--store", store_url, "--remote", remote_url or str(remote), "--actor", "ops"]
        return runner.invoke(app, [*base, *args], input=stdin)

    invoke.remote = remote  # type: ignore[attr-defined]
    return invoke


def doc(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


class TestWorker:
    def test_once_exits_zero_when_every_job_is_confirmed(self, run: Any) -> None:
        """worker --once confirms every open job and exits 0."""
        run("publish", "-", stdin=json.dumps(make_line("kaze", "0.1.6")))
        result = run("worker", "--once", "--json")
        assert result.exit_code == 0, result.stderr
        assert doc(result)["confirmed"] == 1
        assert doc(result)["open"] == 0

    def test_once_exits_one_when_jobs_stay_open(self, run: Any) -> None:
        """worker --once against an unreachable remote records the failure and exits 1."""
        run("publish", "-", stdin=json.dumps(make_line("kaze", "0.1.6")))
        result = run("worker", "--once", "--json", remote_url="git://127.0.0.1:1/index.git")
        assert result.exit_code == 1
        assert doc(result)["open"] == 1
        history = doc(run("history", "kaze", "--json"))["events"]
        assert [e["reason"] for e in history if e["event"] == "IndexPushFailed"] == ["unreachable"]


class TestAuditScanAndRepair:
    def test_scan_finds_a_dropped_line_and_repair_restores_it(self, run: Any, tmp_path: Path) -> None:
        """audit --scan exits 1 on a line dropped behind the ledger's back; repair fixes it; audit then exits 0."""
        for version in ("0.1.5", "0.1.6"):
            run("publish", "-", stdin=json.dumps(make_line("kaze", version)))
        assert run("worker", "--once").exit_code == 0
        from ledger.testing.tamper import force_push

        force_push(
            run.remote,
            "master",
            {"ka/ze/kaze": lambda data: (data or b"").splitlines(keepends=True)[0]},
            "oops",
        )

        scanned = run("audit", "--scan", "--json")
        assert scanned.exit_code == 1
        assert [(d["crate"], d["version"], d["class"]) for d in doc(scanned)["discrepancies"]] == [
            ("kaze", "0.1.6", "lost")
        ]
        assert doc(scanned)["scan"] is not None

        head_before = str(pygit2.Repository(str(run.remote)).head.target)
        planned = run("repair", "--dry-run", "--json")
        assert planned.exit_code == 0
        assert doc(planned)["changed"] == 1
        assert doc(planned)["changes"][0]["added"] == ["0.1.6"]
        assert str(pygit2.Repository(str(run.remote)).head.target) == head_before

        repaired = run("repair")
        assert repaired.exit_code == 0, repaired.stderr
        assert "confirmed by read-back" in repaired.stdout
        assert run("audit", "--scan").exit_code == 0
        assert "nothing to do" in run("repair").stdout

    def test_scan_without_a_remote_is_a_usage_error(self, store_url: str) -> None:
        """audit --scan with no remote configured exits 2 naming the missing option."""
        result = CliRunner().invoke(app, ["--store", store_url, "audit", "--scan"])
        assert result.exit_code == 2
        assert "--remote" in result.stderr


class TestImportIndex:
    def test_adopts_an_index_and_reports_refused_lines(self, run: Any, tmp_path: Path) -> None:
        """import-index records every good line, names each refused one, and a second run adds nothing."""
        source = bare(tmp_path / "source.git")
        good = json.dumps(make_line("serde", "1.0.0"), separators=(",", ":")).encode()
        yanked = json.dumps(make_line("serde", "1.0.1", yanked=True), separators=(",", ":")).encode()
        index = GitIndex.open(tmp_path / "build.git", str(source))
        commit = index.build_commit(
            [("se/rd/serde", good + b"\n" + yanked + b"\nnot json\n"), ("config.json", b"{}")], "seed"
        )
        assert index.push(commit).status == "ok"
        index.close()

        first = run("import-index", str(source), "--json")
        assert first.exit_code == 1
        assert doc(first)["accepted"] == 2
        assert [(r["path"], r["line"]) for r in doc(first)["refused"]] == [("se/rd/serde", 3)]
        second = run("import-index", str(source), "--json")
        assert doc(second)["accepted"] == 0
        assert doc(second)["present"] == 2
        audit = run("audit", "--json")
        assert audit.exit_code == 0
        versions = doc(run("history", "serde", "--json"))["events"]
        assert [e["event"] for e in versions if e.get("version") == "1.0.1"] == ["VersionPublished"]


class TestRemoteInput:
    @pytest.mark.parametrize(
        "remote",
        [
            pytest.param("ftp://127.0.0.1/index.git", id="unknown-scheme"),
            pytest.param("http://", id="no-host"),
            pytest.param("git://:9418/index.git", id="empty-host"),
        ],
    )
    def test_malformed_remote_is_bad_input(self, run: Any, remote: str) -> None:
        """A malformed remote URL is refused with exit 2, naming the URL, before anything is written."""
        run("publish", "-", stdin=json.dumps(make_line("kaze", "0.1.6")))
        before = doc(run("timeline", "--json"))["events"]
        for command in (["worker", "--once", "--json"], ["audit", "--scan", "--json"], ["repair", "--json"]):
            result = run(*command, remote_url=remote)
            assert result.exit_code == 2, (command, result.stderr)
            assert "remote URL" in doc(result)["error"]["message"]
        assert doc(run("timeline", "--json"))["events"] == before

    def test_unreachable_remote_is_unavailable(self, run: Any) -> None:
        """An unreachable remote makes audit --scan and repair exit 3, with nothing recorded."""
        run("publish", "-", stdin=json.dumps(make_line("kaze", "0.1.6")))
        before = doc(run("timeline", "--json"))["events"]
        for command in (["audit", "--scan", "--json"], ["repair", "--json"]):
            result = run(*command, remote_url="git://127.0.0.1:1/index.git")
            assert result.exit_code == 3, (command, result.stderr)
            assert "127.0.0.1:1" in doc(result)["error"]["message"]
        assert doc(run("timeline", "--json"))["events"] == before


class TestExistingIndex:
    def test_worker_leaves_config_and_other_crates_untouched(self, run: Any, tmp_path: Path) -> None:
        """Against an existing index the worker fetches first and changes only the files of its own jobs."""
        config = b'{"dl":"https://static.crates.io/crates","api":"https://crates.io"}\n'
        other = json.dumps(make_line("rand", "0.8.5"), separators=(",", ":")).encode() + b"\n"
        seed = GitIndex.open(tmp_path / "seed.git", str(run.remote))
        assert (
            seed.push(seed.build_commit([("config.json", config), ("ra/nd/rand", other)], "existing")).status
            == "ok"
        )
        seed.close()

        run("publish", "-", stdin=json.dumps(make_line("kaze", "0.1.6")))
        assert run("worker", "--once").exit_code == 0
        repo = pygit2.Repository(str(run.remote))
        tree = repo.head.peel(pygit2.Commit).tree
        assert bytes(repo[tree["config.json"].id].data) == config
        assert bytes(repo[tree["ra/nd/rand"].id].data) == other
        assert json.loads(bytes(repo[tree["ka/ze/kaze"].id].data))["vers"] == "0.1.6"
        assert len(repo.head.peel(pygit2.Commit).parents) == 1
