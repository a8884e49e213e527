"""The command line: every command's output, its --json document, and the exit code contract."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from ledger.adapters.stores.events import EVENTS_TABLE, POSITION
from ledger.bootstrap import open_ledger
from ledger.domain.errors import Invalid
from ledger.entrypoints.cli import app
from ledger.entrypoints.timeparse import parse_duration, parse_moment, parse_time
from ledger.services.ledger import Ledger
from ledger.settings import Settings, StoreURL
from projections.consistency import CLASSES

LineFactory = Callable[..., dict[str, Any]]
CLEAN_ENV = dict.fromkeys(
    ("LEDGER_STORE", "LEDGER_REMOTE", "LEDGER_TARGETS", "LEDGER_BRANCH", "LEDGER_ACTOR", "LEDGER_INDEX_DIR")
)
UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/x"


@pytest.fixture
def cli(store_url: str) -> Callable[..., Result]:
    """Run ``ledger --store STORE ARGS...`` in-process, with no LEDGER_* variables around."""
    runner = CliRunner(env=CLEAN_ENV)

    def invoke(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, ["--store", store_url, *args], input=input, env=env)

    return invoke


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with open_ledger(Settings(store=store_url)) as opened:
        yield opened


def document(result: Result) -> Any:
    """The one JSON document on stdout (json.loads refuses anything more)."""
    return json.loads(result.stdout)


def published(cli: Callable[..., Result], line: dict[str, Any]) -> dict[str, Any]:
    result = cli("--json", "publish", "-", input=json.dumps(line))
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = document(result)
    return doc


def abandon(ledger: Ledger, job: str) -> None:
    """Record a job given up, as the 2020-02-20 queue did: its change never reaches the index."""
    sync_job = ledger.app.get_job(UUID(job))
    sync_job.abandoned(reason="deleted from the queue by hand")
    ledger.app.save_jobs([sync_job])


def fail(ledger: Ledger, job: str) -> None:
    """Record a push that reported success but was not confirmed."""
    sync_job = ledger.app.get_job(UUID(job))
    sync_job.failed(
        reason="unconfirmed",
        detail="no status from the server",
        remote_head=None,
        next_retry=None,
        target="git",
    )
    ledger.app.save_jobs([sync_job])


class TestInit:
    def test_init_reports_the_ready_store(self, cli: Callable[..., Result]) -> None:
        """init creates the store and says so on stdout, exit 0, nothing on stderr."""
        result = cli("init")
        assert result.exit_code == 0
        assert "is ready: views at log position 0" in result.stdout
        assert result.stderr == ""

    def test_init_twice_is_safe(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """A second init keeps what the first store recorded."""
        assert document(cli("init", "--json"))["position"] == 0
        receipt = published(cli, line())
        again = cli("init", "--json")
        assert again.exit_code == 0
        assert document(again) == {
            "ok": True,
            "store": document(again)["store"],
            "position": receipt["position"],
            "index_clone": None,
        }

    def test_init_with_a_remote_creates_the_local_clone(
        self, cli: Callable[..., Result], tmp_path: Path
    ) -> None:
        """With a remote, init also creates the bare local clone of the index, and a second run keeps it."""
        remote = tmp_path / "remote.git"
        for _ in range(2):
            doc = document(cli("--remote", str(remote), "init", "--json"))
            assert doc["index_clone"] is not None
            assert (Path(doc["index_clone"]) / "HEAD").exists()

    def test_init_never_shows_the_user_of_a_store_url(
        self, store_url: str, cli: Callable[..., Result]
    ) -> None:
        """The store named in init's output has its credentials replaced by ***."""
        shown = document(cli("init", "--json"))["store"]
        if StoreURL.parse(store_url).user:
            assert "***@" in shown
            assert f"{StoreURL.parse(store_url).user}@" not in shown


class TestPublishCommand:
    def test_publish_from_a_file_prints_the_receipt(
        self, cli: Callable[..., Result], line: LineFactory, tmp_path: Path
    ) -> None:
        """publish FILE records the line and prints crate, version, log position and job."""
        path = tmp_path / "kaze.json"
        path.write_text(json.dumps(line("kaze", "0.1.6")) + "\n")
        result = cli("publish", str(path))
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("published kaze 0.1.6: log position 3, index job ")
        assert result.stderr == ""

    def test_publish_json_is_the_receipt_with_ok(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """publish --json prints the receipt's fields and ok: true, as one JSON document."""
        result = cli("publish", "-", "--json", input=json.dumps(line()) + "\r\n")
        assert result.exit_code == 0
        doc = document(result)
        assert set(doc) == {"ok", "crate", "version", "event", "job", "position"}
        assert (doc["ok"], doc["crate"], doc["version"], doc["event"]) == (
            True,
            "kaze",
            "0.1.6",
            "VersionPublished",
        )
        assert doc["position"] == 3

    def test_global_and_command_json_flags_agree(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """--json before the command and after it give documents of the same shape."""
        before = document(cli("--json", "publish", "-", input=json.dumps(line("a", "1.0.0"))))
        after = document(cli("publish", "-", "--json", input=json.dumps(line("b", "1.0.0"))))
        assert set(before) == set(after)

    def test_a_missing_file_is_bad_input(self, cli: Callable[..., Result], tmp_path: Path) -> None:
        """A file that cannot be read exits 2 naming it, with nothing on stdout."""
        missing = tmp_path / "nope.json"
        result = cli("publish", str(missing))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr == f"error: cannot read file {str(missing)!r}: No such file or directory\n"

    def test_a_directory_is_bad_input(self, cli: Callable[..., Result], tmp_path: Path) -> None:
        """A folder given as FILE exits 2 with an error document."""
        result = cli("--json", "publish", str(tmp_path))
        assert result.exit_code == 2
        assert document(result)["error"]["type"] == "Invalid"

    def test_the_actor_comes_from_the_option_the_environment_or_the_login(
        self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory
    ) -> None:
        """--actor wins over LEDGER_ACTOR, which wins over the login name."""
        cli(
            "--actor",
            "bob",
            "publish",
            "-",
            input=json.dumps(line("a", "1.0.0")),
            env={"LEDGER_ACTOR": "eve"},
        )
        cli("publish", "-", input=json.dumps(line("b", "1.0.0")), env={"LEDGER_ACTOR": "eve"})
        cli("publish", "-", input=json.dumps(line("c", "1.0.0")))
        actors = [r["actor"] for r in ledger.timeline() if r["event"] == "VersionPublished"]
        assert actors == ["bob", "eve", getpass.getuser()]


class TestRegistryChanges:
    def test_yank_unyank_delete_print_their_receipts(
        self, cli: Callable[..., Result], line: LineFactory
    ) -> None:
        """yank, unyank and delete exit 0 and print what they recorded."""
        published(cli, line("kaze", "0.1.6"))
        for args, text in [
            (("yank", "kaze", "0.1.6"), "yanked kaze 0.1.6: log position 5"),
            (("unyank", "kaze", "0.1.6"), "unyanked kaze 0.1.6: log position 7"),
            (("delete", "kaze", "0.1.6", "--reason", "malware"), "deleted kaze 0.1.6: log position 9"),
        ]:
            result = cli(*args)
            assert result.exit_code == 0, result.stderr
            assert result.stdout.startswith(text)

    def test_changes_in_json(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """Each change's --json document names its event and job."""
        published(cli, line("kaze", "0.1.6"))
        doc = document(cli("--json", "yank", "kaze", "0.1.6"))
        assert (doc["ok"], doc["event"], doc["position"]) == (True, "VersionYanked", 5)
        assert doc["job"]

    @pytest.mark.parametrize(
        ("args", "error", "code"),
        [
            pytest.param(("unyank", "kaze", "0.1.6"), "Conflict", 1, id="unyank-live"),
            pytest.param(("yank", "kaze", "9.9.9"), "NotFound", 1, id="yank-unknown-version"),
            pytest.param(("yank", "wasmer", "0.14.0"), "NotFound", 1, id="yank-unknown-crate"),
            pytest.param(("yank", "Kaze", "0.1.6"), "NameCollision", 2, id="yank-colliding-name"),
            pytest.param(("yank", "kaze", "1.0"), "InvalidVersion", 2, id="yank-bad-version"),
            pytest.param(
                ("delete", "kaze", "0.1.6", "--reason", " "), "Invalid", 2, id="delete-blank-reason"
            ),
        ],
    )
    def test_refusals_and_bad_requests(
        self, cli: Callable[..., Result], line: LineFactory, args: tuple[str, ...], error: str, code: int
    ) -> None:
        """A refused change exits 1, a malformed one exits 2, each with one JSON error document."""
        published(cli, line("kaze", "0.1.6"))
        result = cli("--json", *args)
        assert result.exit_code == code
        doc = document(result)
        assert doc["ok"] is False
        assert doc["error"]["type"] == error
        assert doc["error"]["kind"] == ("refused" if code == 1 else "invalid")
        assert result.stderr == f"error: {doc['error']['message']}\n"

    def test_delete_without_reason_is_a_usage_error(
        self, cli: Callable[..., Result], line: LineFactory
    ) -> None:
        """delete without --reason is typer's own usage error: exit 2, nothing on stdout."""
        published(cli, line("kaze", "0.1.6"))
        result = cli("delete", "kaze", "0.1.6")
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "--reason" in result.stderr


class TestHistory:
    def test_history_of_a_crate_lists_every_event(
        self, cli: Callable[..., Result], line: LineFactory
    ) -> None:
        """history CRATE lists the crate's registration and every version's events and jobs."""
        first = published(cli, line("kaze", "0.1.5"))
        published(cli, line("kaze", "0.1.6"))
        result = cli("history", "kaze", "--json")
        assert result.exit_code == 0
        events = document(result)["events"]
        assert [e["event"] for e in events] == [
            "IndexSyncEnqueued",
            "CrateRegistered",
            "VersionPublished",
            "IndexSyncEnqueued",
            "VersionPublished",
        ]
        assert events[0]["job"] == events[2]["job"] == first["job"]
        human = cli("history", "kaze")
        assert len(human.stdout.splitlines()) == 5

    def test_history_of_one_version(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """history CRATE@VERSION lists only that version's events and their jobs."""
        published(cli, line("kaze", "0.1.5"))
        published(cli, line("kaze", "0.1.6"))
        cli("yank", "kaze", "0.1.6")
        events = document(cli("--json", "history", "kaze@0.1.6"))["events"]
        assert [e["event"] for e in events] == [
            "IndexSyncEnqueued",
            "VersionPublished",
            "IndexSyncEnqueued",
            "VersionYanked",
        ]
        assert {e.get("version") for e in events} == {"0.1.6", None}
        human = cli("history", "kaze@0.1.6").stdout.splitlines()
        assert "VersionYanked" in human[3]
        assert "kaze 0.1.6" in human[3]

    @pytest.mark.parametrize(
        ("subject", "error", "code"),
        [
            pytest.param("wasmer", "NotFound", 1, id="unknown-crate"),
            pytest.param("kaze@9.9.9", "NotFound", 1, id="unknown-version"),
            pytest.param("kaze@1.0", "InvalidVersion", 2, id="bad-version"),
            pytest.param("../x", "InvalidName", 2, id="bad-name"),
        ],
    )
    def test_history_errors(
        self, cli: Callable[..., Result], line: LineFactory, subject: str, error: str, code: int
    ) -> None:
        """history of something unknown exits 1, of something malformed exits 2."""
        published(cli, line("kaze", "0.1.6"))
        result = cli("history", subject, "--json")
        assert result.exit_code == code
        assert document(result)["error"]["type"] == error


class TestTimeline:
    def test_timeline_lists_every_event(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """timeline without bounds lists every event in log order."""
        published(cli, line("a", "1.0.0"))
        published(cli, line("b", "1.0.0"))
        events = document(cli("timeline", "--json"))["events"]
        assert [e["position"] for e in events] == [1, 2, 3, 4, 5, 6]

    def test_since_and_until_bound_the_timeline(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """--since keeps events at or after a time, --until those at or before it."""
        published(cli, line("a", "1.0.0"))
        time.sleep(0.02)
        middle = datetime.now(UTC)
        time.sleep(0.02)
        published(cli, line("b", "1.0.0"))
        stamp = middle.isoformat().replace("+00:00", "Z")
        later = document(cli("timeline", "--since", stamp, "--json"))["events"]
        earlier = document(cli("timeline", "--until", stamp, "--json"))["events"]
        assert [e["position"] for e in earlier] == [1, 2, 3]
        assert [e["position"] for e in later] == [4, 5, 6]
        assert {e.get("crate") for e in later} == {"b", None}  # a crate's registration names no crate
        naive = middle.replace(tzinfo=None).isoformat()  # no offset means UTC
        assert document(cli("timeline", "--since", naive, "--json"))["events"] == later
        window = cli("timeline", "--since", "2020-02-20T21:40:00Z", "--until", "2020-02-20T23:11:00Z")
        assert (window.exit_code, window.stdout, window.stderr) == (0, "", "no events\n")

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            pytest.param(("--since", "yesterday"), "--since 'yesterday' is not an ISO 8601 time", id="since"),
            pytest.param(
                ("--until", "2020-13-01"), "--until '2020-13-01' is not an ISO 8601 time", id="until"
            ),
            pytest.param(
                ("--since", "2021-01-01", "--until", "2020-01-01"),
                "--since '2021-01-01' is after --until '2020-01-01'",
                id="reversed",
            ),
        ],
    )
    def test_bad_times_are_usage_errors(
        self, cli: Callable[..., Result], args: tuple[str, ...], fragment: str
    ) -> None:
        """A TIME that is not ISO 8601, or a window that ends before it starts, exits 2 naming the value."""
        result = cli("timeline", *args, "--json")
        assert result.exit_code == 2
        assert fragment in document(result)["error"]["message"]


class TestAudit:
    def test_pending_jobs_are_in_sync(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """A version whose job is younger than the grace period is pending: exit 0."""
        receipt = published(cli, line("kaze", "0.1.6"))
        result = cli("audit")
        assert result.exit_code == 0, result.stdout
        summary, *rows = result.stdout.splitlines()
        assert summary.startswith("in sync at log position 3")
        assert (
            "pending 1, stuck 0, lost 0, foreign 0, phantom 0, yank_mismatch 0, content_mismatch 0" in summary
        )
        assert len(rows) == 1
        assert rows[0].split()[:3] == ["pending", "kaze", "0.1.6"]
        assert rows[0].endswith(f"job {receipt['job']}")

    def test_no_grace_makes_open_jobs_stuck(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """With --grace 0s every open job is older than the grace period: stuck, exit 1."""
        published(cli, line("kaze", "0.1.6"))
        time.sleep(0.01)
        result = cli("audit", "--grace", "0s")
        assert result.exit_code == 1
        assert result.stdout.startswith("OUT OF SYNC")
        assert result.stdout.splitlines()[1].startswith("stuck ")

    def test_failing_jobs_are_stuck_within_the_grace_period(
        self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory
    ) -> None:
        """A job whose push failed counts as stuck however young it is."""
        receipt = published(cli, line("kaze", "0.1.6"))
        fail(ledger, receipt["job"])
        result = cli("audit", "--grace", "1d", "--json")
        assert result.exit_code == 1
        assert document(result)["counts"]["stuck"] == 1

    def test_audit_json_shape(self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory) -> None:
        """audit --json names consistency, time, position, a count per class and each discrepancy."""
        receipt = published(cli, line("kaze", "0.1.6"))
        abandon(ledger, receipt["job"])
        result = cli("--json", "audit")
        assert result.exit_code == 1
        doc = document(result)
        assert {"consistent", "as_of", "position", "counts", "discrepancies"} <= set(doc)
        assert doc["consistent"] is False
        assert doc["position"] == 4
        assert doc["as_of"].endswith("Z")
        assert doc["counts"] == {**dict.fromkeys(CLASSES, 0), "lost": 1}
        (found,) = doc["discrepancies"]
        assert {"crate", "version", "class", "since", "job"} <= set(found)
        assert (found["crate"], found["version"], found["class"], found["job"]) == (
            "kaze",
            "0.1.6",
            "lost",
            receipt["job"],
        )

    def test_audit_at_a_past_position(
        self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory
    ) -> None:
        """audit --at POSITION answers as the ledger knew it then: pending before the job was dropped."""
        receipt = published(cli, line("kaze", "0.1.6"))
        abandon(ledger, receipt["job"])
        result = cli("audit", "--at", str(receipt["position"]), "--json")
        assert result.exit_code == 0
        doc = document(result)
        assert doc["position"] == receipt["position"]
        assert [(d["class"], d["job"]) for d in doc["discrepancies"]] == [("pending", receipt["job"])]

    def test_audit_at_a_past_time(
        self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory
    ) -> None:
        """audit --at TIME answers as of that time; before the first event nothing was known."""
        receipt = published(cli, line("kaze", "0.1.6"))
        time.sleep(0.02)
        between = datetime.now(UTC)
        time.sleep(0.02)
        abandon(ledger, receipt["job"])
        at = between.isoformat().replace("+00:00", "Z")
        doc = document(cli("audit", "--at", at, "--json"))
        assert (doc["position"], doc["counts"]["pending"], doc["counts"]["lost"]) == (3, 1, 0)
        long_ago = (between - timedelta(days=1)).isoformat()
        early = document(cli("audit", "--at", long_ago, "--json"))
        assert (early["position"], early["discrepancies"]) == (0, [])

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            pytest.param(("--grace", "15"), "--grace '15' is not a duration", id="grace-no-unit"),
            pytest.param(("--grace", "-5m"), "--grace '-5m' is not a duration", id="grace-negative"),
            pytest.param(("--at", "yesterday"), "--at 'yesterday' is neither a log position", id="at-word"),
            pytest.param(("--at", "-1"), "--at '-1' is neither a log position", id="at-negative"),
        ],
    )
    def test_bad_durations_and_moments_exit_2(
        self, cli: Callable[..., Result], args: tuple[str, ...], fragment: str
    ) -> None:
        """A DURATION or TIME|POSITION that cannot be read exits 2 naming the value."""
        result = cli("audit", *args, "--json")
        assert result.exit_code == 2
        assert fragment in document(result)["error"]["message"]
        human = cli("audit", *args)
        assert (human.exit_code, human.stdout) == (2, "")
        assert fragment in human.stderr


class TestAuditScan:
    def test_scan_needs_a_remote(self, cli: Callable[..., Result]) -> None:
        """audit --scan without an index remote exits 2 saying how to name one."""
        result = cli("audit", "--scan", "--json")
        assert result.exit_code == 2
        message = "audit --scan needs an index remote (--remote, --target or LEDGER_REMOTE)"
        assert document(result)["error"]["message"] == message
        assert result.stderr == f"error: {message}\n"

    def test_scan_uses_the_ledgers_scanner(
        self, cli: Callable[..., Result], line: LineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a remote (here from LEDGER_REMOTE), audit --scan scans, then audits with the scan's summary."""
        scans: list[Ledger] = []

        class Scanned:
            def to_dict(self) -> dict[str, Any]:
                return {"head": "abc", "discrepancies": 0}

        def scan_index(self: Ledger) -> Scanned:
            scans.append(self)
            return Scanned()

        monkeypatch.setattr(Ledger, "scan_index", scan_index, raising=False)
        published(cli, line("kaze", "0.1.6"))
        result = cli("audit", "--scan", "--json", env={"LEDGER_REMOTE": "git://127.0.0.1:1/index.git"})
        assert result.exit_code == 0, result.stderr
        doc = document(result)
        assert len(scans) == 1
        assert doc["scan"] == {"head": "abc", "discrepancies": 0}
        assert (doc["position"], doc["counts"]["pending"]) == (3, 1)
        human = cli("--remote", "git://127.0.0.1:1/index.git", "audit", "--scan")
        assert human.stdout.splitlines()[-1] == 'scan: {"head": "abc", "discrepancies": 0}'

    def test_scan_cannot_look_into_the_past(self, cli: Callable[..., Result]) -> None:
        """audit --scan --at is refused: the real index can only be read as it is now."""
        result = cli("--remote", "git://127.0.0.1:1/index.git", "audit", "--scan", "--at", "3")
        assert result.exit_code == 2
        assert "cannot be combined with --at" in result.stderr


class TestMaintenance:
    def test_rebuild_reports_the_position(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """rebuild replays every event and reports the log position reached."""
        published(cli, line("kaze", "0.1.6"))
        assert document(cli("rebuild", "--json")) == {"ok": True, "position": 3}
        human = cli("rebuild")
        assert (human.exit_code, human.stdout) == (0, "rebuilt every view up to log position 3\n")

    def test_verify_an_intact_chain(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """verify exits 0 on an untouched ledger and counts its events."""
        published(cli, line("kaze", "0.1.6"))
        result = cli("verify", "--json")
        assert result.exit_code == 0
        doc = document(result)
        assert (doc["ok"], doc["events"], doc["broken"]) == (True, 3, None)
        assert cli("verify").stdout.startswith("chain holds: 3 events")

    def test_verify_names_the_first_broken_position(
        self, cli: Callable[..., Result], ledger: Ledger, line: LineFactory, store_url: str
    ) -> None:
        """After one stored event is edited, verify exits 1 naming its position and the problem."""
        published(cli, line("kaze", "0.1.6"))
        url = StoreURL.parse(store_url)
        table = f"{url.schema}.{EVENTS_TABLE[url.kind]}" if url.schema else EVENTS_TABLE[url.kind]
        with ledger.db.transaction() as cur:
            cur.execute(f"UPDATE {table} SET state = ? WHERE {POSITION[url.kind]} = 3", (b"{}",))
        result = cli("verify", "--json")
        assert result.exit_code == 1
        assert document(result)["broken"]["position"] == 3
        human = cli("verify")
        assert human.exit_code == 1
        assert human.stdout.startswith("chain broken at log position 3: event edited")

    def test_metrics_prints_prometheus_text(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """metrics prints the exposition format on stdout; --json gives the same figures."""
        published(cli, line("kaze", "0.1.6"))
        result = cli("metrics")
        assert result.exit_code == 0
        assert "# TYPE ledger_queue_depth gauge\nledger_queue_depth 1.0\n" in result.stdout
        assert 'ledger_versions_out_of_sync{class="pending"} 1.0' in result.stdout
        metrics = {m["name"]: m for m in document(cli("metrics", "--json"))["metrics"]}
        assert metrics["ledger_queue_depth"]["samples"] == [{"labels": {}, "value": 1}]


class TestErrors:
    def test_an_unreachable_store_exits_3_without_credentials(self) -> None:
        """A store that cannot be reached exits 3 with one error line, the password never shown."""
        runner = CliRunner(env=CLEAN_ENV)
        human = runner.invoke(app, ["--store", UNREACHABLE, "verify"])
        assert human.exit_code == 3
        assert human.stdout == ""
        assert human.stderr.startswith(
            "error: cannot reach the PostgreSQL store postgresql://***@127.0.0.1:1/x"
        )
        assert len(human.stderr.splitlines()) == 1
        as_json = runner.invoke(app, ["--json", "audit"], env={"LEDGER_STORE": UNREACHABLE})
        assert as_json.exit_code == 3
        error = document(as_json)["error"]
        assert (error["type"], error["kind"]) == ("StoreUnavailable", "unavailable")
        for result in (human, as_json):
            assert "secret" not in result.stdout + result.stderr

    @pytest.mark.postgres
    def test_a_refused_login_exits_3_without_credentials(self, pg_url: str) -> None:
        """A server that refuses the login exits 3 and never prints the password given."""
        url = StoreURL.parse(pg_url)
        store = f"postgresql://nobody:secret@{url.host}:{url.port}/{url.dbname}?schema={url.schema}"
        result = CliRunner(env=CLEAN_ENV).invoke(app, ["--store", store, "--json", "init"])
        assert result.exit_code == 3
        assert "nobody" in document(result)["error"]["message"]
        assert "secret" not in result.stdout + result.stderr

    @pytest.mark.parametrize(
        "store",
        ["postgresql://u:secret@127.0.0.1:port/x", "mysql://u:secret@127.0.0.1/x", "sqlite:///"],
        ids=["bad-port", "unknown-scheme", "no-file"],
    )
    def test_a_malformed_store_url_exits_2(self, store: str) -> None:
        """A store URL that cannot be parsed is bad input: exit 2, the password never shown."""
        result = CliRunner(env=CLEAN_ENV).invoke(app, ["--store", store, "--json", "verify"])
        assert result.exit_code == 2
        assert document(result)["error"]["type"] == "Invalid"
        assert "secret" not in result.stdout + result.stderr

    def test_a_sqlite_file_in_a_missing_folder_exits_3(self, tmp_path: Path) -> None:
        """A SQLite store whose folder does not exist is unavailable: exit 3."""
        store = f"sqlite:///{tmp_path / 'missing' / 'ledger.db'}"
        result = CliRunner(env=CLEAN_ENV).invoke(app, ["--store", store, "verify"])
        assert result.exit_code == 3
        assert "does not exist" in result.stderr

    def test_an_unexpected_error_is_one_redacted_line(
        self, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception the ledger did not expect exits 1 with one redacted line and no traceback."""

        def explode(self: Ledger) -> None:
            msg = "lost the connection to\npostgresql://admin:secret@db.internal/ledger"
            raise RuntimeError(msg)

        monkeypatch.setattr(Ledger, "verify", explode)
        human = cli("verify")
        assert human.exit_code == 1
        assert human.stderr == (
            "error: unexpected RuntimeError: lost the connection to postgresql://***@db.internal/ledger\n"
        )
        as_json = cli("verify", "--json")
        assert as_json.exit_code == 1
        assert document(as_json)["error"]["kind"] == "unexpected"
        for result in (human, as_json):
            assert "secret" not in result.stdout + result.stderr
            assert "Traceback" not in result.stdout + result.stderr

    def test_unknown_commands_are_usage_errors(self, cli: Callable[..., Result]) -> None:
        """typer's own usage errors exit 2."""
        result = cli("publsh", "-")
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "No such command" in result.stderr


class TestLogging:
    def test_verbose_logs_json_lines_on_stderr(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """With -v each step is a JSON line on stderr, and stdout still holds one JSON document."""
        result = cli("-v", "--json", "publish", "-", input=json.dumps(line("kaze", "0.1.6")))
        assert result.exit_code == 0
        steps = [json.loads(s) for s in result.stderr.splitlines()]
        assert [(s["step"], s["crate"], s["version"]) for s in steps] == [
            ("VersionPublished", "kaze", "0.1.6")
        ]
        assert steps[0]["job"] == document(result)["job"]

    def test_quiet_by_default(self, cli: Callable[..., Result], line: LineFactory) -> None:
        """Without -v a successful command writes nothing on stderr."""
        result = cli("--json", "publish", "-", input=json.dumps(line("kaze", "0.1.6")))
        assert (result.exit_code, result.stderr) == (0, "")


class TestEntryPoint:
    def test_python_dash_m_ledger_runs_the_cli(self, store_url: str) -> None:
        """python -m ledger runs the same command line, with its exit code."""
        result = subprocess.run(
            [sys.executable, "-m", "ledger", "--store", store_url, "--json", "verify"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True


class TestTimeParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2020-02-20T21:40:00Z", datetime(2020, 2, 20, 21, 40, tzinfo=UTC)),
            ("2020-02-20T21:40:00", datetime(2020, 2, 20, 21, 40, tzinfo=UTC)),
            ("2020-02-20T22:40:00+01:00", datetime(2020, 2, 20, 21, 40, tzinfo=UTC)),
            ("2020-02-20", datetime(2020, 2, 20, tzinfo=UTC)),
        ],
    )
    def test_times_are_utc(self, text: str, expected: datetime) -> None:
        """ISO 8601 times become aware UTC datetimes; no offset means UTC."""
        assert parse_time(text) == expected

    @pytest.mark.parametrize("text", ["", "now", "20/02/2020", "2020-02-30T00:00:00Z", "1582235000"])
    def test_bad_times_name_the_value(self, text: str) -> None:
        """Text that is not an ISO 8601 time raises Invalid naming the option and the value."""
        with pytest.raises(Invalid, match=f"--since {text!r} is not an ISO 8601 time"):
            parse_time(text, option="--since")

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0s", 0)],
    )
    def test_durations(self, text: str, seconds: float) -> None:
        """Durations are seconds, minutes, hours or days, alone or in a row."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "15", "m", "-5m", "1.5h", "5x", "15 minutes"])
    def test_bad_durations_name_the_value(self, text: str) -> None:
        """A duration without a known unit raises Invalid naming the value."""
        with pytest.raises(Invalid, match=f"--grace {text!r} is not a duration"):
            parse_duration(text, option="--grace")

    def test_moments_are_positions_or_times(self) -> None:
        """A plain integer is a log position; anything else must be a time."""
        assert parse_moment("42") == 42
        assert parse_moment("2020-02-20T21:40:00Z") == datetime(2020, 2, 20, 21, 40, tzinfo=UTC)
        with pytest.raises(Invalid, match="neither a log position nor an ISO 8601 time"):
            parse_moment("-1")
