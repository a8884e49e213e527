"""The command line with several index targets: ``--target NAME=URL`` (or LEDGER_TARGETS) adds
them, ``--on NAME`` picks one, and without it worker, audit and repair work on every target and
report each one apart. A git remote (the project's git server) and a sparse folder behind the
CDN front."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ledger.domain.names import index_path
from ledger.entrypoints.cli import app
from ledger.testing.cdn import CdnFront
from ledger.testing.remote import RemoteServer
from tests.conftest import make_line
from tests.test_cli import CLEAN_ENV

Cli = Callable[..., Result]


@pytest.fixture
def front(tmp_path: Path) -> Iterator[CdnFront]:
    (tmp_path / "origin").mkdir()
    with CdnFront(tmp_path / "origin") as served:
        yield served


@pytest.fixture
def cli(store_url: str, tmp_path: Path, front: CdnFront) -> Iterator[Cli]:
    runner = CliRunner(env=CLEAN_ENV)
    with RemoteServer.start(tmp_path / "git-server", protocol="http") as server:
        sparse = f"sparse=sparse+{front.url}?origin={tmp_path / 'origin'}"

        def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
            options = ["--store", store_url, "--remote", server.url, "--target", sparse]
            return runner.invoke(
                app,
                [*options, *args],
                input=input,
                env={"LEDGER_INDEX_DIR": str(tmp_path / "clone.git"), **(env or {})},
            )

        yield invoke


def doc(result: Result) -> Any:
    return json.loads(result.stdout)


def published(cli: Cli, name: str) -> None:
    result = cli("--json", "publish", "-", input=json.dumps(make_line(name, "1.0.0")))
    assert result.exit_code == 0, result.stderr


class TestEveryTarget:
    def test_the_worker_syncs_every_target_and_the_audit_reports_each(self, cli: Cli, tmp_path: Path) -> None:
        published(cli, "kaze")
        once = cli("worker", "--once", "--json")
        assert once.exit_code == 0, once.stderr
        targets = doc(once)["targets"]
        assert {name: t["confirmed"] for name, t in targets.items()} == {"git": 1, "sparse": 1}
        assert (tmp_path / "origin" / index_path("kaze")).is_file()

        audit = cli("audit", "--json")
        assert audit.exit_code == 0, audit.stdout
        assert set(doc(audit)["targets"]) == {"git", "sparse"}
        assert all(t["consistent"] for t in doc(audit)["targets"].values())
        text = cli("audit")
        assert "[git] in sync" in text.stdout
        assert "[sparse] in sync" in text.stdout

        history = cli("history", "kaze")
        assert "IndexPushConfirmed   [git] kaze" in history.stdout
        assert "IndexPushConfirmed   [sparse] kaze" in history.stdout

    def test_a_failing_target_is_stuck_there_only_and_exits_1(self, cli: Cli, front: CdnFront) -> None:
        published(cli, "kaze")
        front.fault("unavailable")
        once = cli("worker", "--once", "--json")
        assert once.exit_code == 1, "a job stayed open"
        targets = doc(once)["targets"]
        assert (targets["git"]["confirmed"], targets["sparse"]["failed"]) == (1, 1)
        audit = cli("audit", "--grace", "0s", "--json")
        assert audit.exit_code == 1
        reports = doc(audit)["targets"]
        assert reports["git"]["consistent"]
        assert reports["sparse"]["counts"]["stuck"] == 1
        only_git = cli("audit", "--on", "git", "--json")
        assert only_git.exit_code == 0
        assert list(doc(only_git)["targets"]) == ["git"]

        front.heal()
        again = cli("worker", "--once", "--on", "sparse", "--json")
        assert again.exit_code == 0, again.stdout
        assert doc(again)["targets"]["sparse"]["confirmed"] == 1

    def test_repair_on_one_target(self, cli: Cli, tmp_path: Path) -> None:
        published(cli, "kaze")
        assert cli("worker", "--once").exit_code == 0
        (tmp_path / "origin" / index_path("kaze")).unlink()
        scan = cli("audit", "--scan", "--on", "sparse", "--grace", "0s", "--json")
        assert scan.exit_code == 1
        assert doc(scan)["targets"]["sparse"]["counts"]["lost"] == 1
        repaired = cli("repair", "--on", "sparse", "--json")
        assert repaired.exit_code == 0, repaired.stdout
        assert doc(repaired)["targets"]["sparse"]["confirmed"]
        assert (tmp_path / "origin" / index_path("kaze")).is_file()
        assert cli("audit", "--scan").exit_code == 0


class TestBadTargets:
    @pytest.mark.parametrize(
        ("target", "says"),
        [
            ("sparse=sparse+http://h/i/", "names no origin"),
            ("git=git://h/x", "two index targets are named 'git'"),
            ("nothing", "is not NAME=URL"),
        ],
    )
    def test_a_bad_target_exits_2_naming_it(self, cli: Cli, target: str, says: str) -> None:
        result = cli("--target", target, "audit")
        assert result.exit_code == 2
        assert says in result.stderr

    def test_an_unknown_target_name(self, cli: Cli) -> None:
        result = cli("audit", "--on", "cdn")
        assert result.exit_code == 2
        assert "no index target named 'cdn'" in result.stderr

    def test_targets_from_the_environment(self, store_url: str, tmp_path: Path, front: CdnFront) -> None:
        runner = CliRunner(env=CLEAN_ENV)
        env = {"LEDGER_TARGETS": f"sparse=sparse+{front.url}?origin={tmp_path / 'origin'}"}
        published_run = runner.invoke(
            app, ["--store", store_url, "publish", "-"], input=json.dumps(make_line("kaze", "1.0.0")), env=env
        )
        assert published_run.exit_code == 0, published_run.stderr
        once = runner.invoke(app, ["--store", store_url, "--json", "worker", "--once"], env=env)
        assert once.exit_code == 0, once.stdout
        assert doc(once)["confirmed"] == 1, "one target: the document as it always was"
        assert (tmp_path / "origin" / index_path("kaze")).is_file()


class TestMetrics:
    def test_each_target_has_its_own_out_of_sync_series(self, cli: Cli, front: CdnFront) -> None:
        published(cli, "kaze")
        front.fault("unavailable")
        cli("worker", "--once")
        text = cli("metrics").stdout
        assert 'ledger_queue_depth{target="git"} 0.0' in text
        assert 'ledger_queue_depth{target="sparse"} 1.0' in text
        assert 'ledger_versions{state="published"} 1.0' in text
        assert text.count('ledger_versions{state="published"}') == 1


class TestRebuild:
    def test_rebuild_rebuilds_every_targets_views(self, cli: Cli, front: CdnFront) -> None:
        published(cli, "kaze")
        front.fault("unavailable")
        cli("worker", "--once")
        before = doc(cli("audit", "--grace", "0s", "--json"))["targets"]
        rebuilt = cli("rebuild")
        assert rebuilt.exit_code == 0
        assert "(git, sparse)" in rebuilt.stdout
        after = doc(cli("audit", "--grace", "0s", "--json"))["targets"]
        assert {n: r["counts"] for n, r in after.items()} == {n: r["counts"] for n, r in before.items()}
        assert after["sparse"]["counts"]["stuck"] == 1
