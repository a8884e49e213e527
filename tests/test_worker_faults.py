"""The sync worker against real remotes on 127.0.0.1 that play every fault mode.

For each mode: the worker never records a confirmation while the remote lacks the content,
records what the pusher said and why the push did not count, and once the fault clears the
next pass confirms; no version ever appears twice in a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pygit2
import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.services.sync import SyncWorker, WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import Mode, RemoteServer
from tests.conftest import make_line

FAST = WorkerOptions(max_batch=50, backoff_base=1.0, lease_ttl=5.0)

# mode -> (what the pusher reported, or None when the remote could not even be fetched;
#          the reason recorded for the failure)
EXPECTED: dict[Mode, tuple[str | None, set[str]]] = {
    Mode.REJECT: ("rejected", {"rejected"}),
    Mode.REFUSE: (None, {"unreachable"}),
    Mode.HANG: (None, {"timeout"}),
    Mode.HTTP_500: (None, {"unreachable"}),
    Mode.NO_STATUS: ("no_status", {"no_status"}),
    Mode.LIE: ("ok", {"unconfirmed"}),
    Mode.ROLLBACK: ("ok", {"unconfirmed"}),
}

CASES = [
    pytest.param(protocol, mode, id=f"{protocol}-{mode.value}")
    for protocol in ("http", "git")
    for mode in EXPECTED
    if protocol == "http" or mode in {Mode.REJECT, Mode.REFUSE, Mode.HANG, Mode.ROLLBACK}
]


def remote_file(server: RemoteServer, crate: str) -> bytes | None:
    """The crate's file at the remote branch head, read straight from the server's disk."""
    repo = pygit2.Repository(str(server.bare_path))
    head = server.head()
    if head is None:
        return None
    try:
        return bytes(repo[head].peel(pygit2.Commit).tree[index_path(crate)].data)
    except KeyError:
        return None


def versions_in(data: bytes | None) -> list[str]:
    import json

    return [json.loads(line)["vers"] for line in (data or b"").splitlines() if line.strip()]


@pytest.fixture
def settings_for(store_url: str, tmp_path: Path) -> Any:
    def build(server: RemoteServer) -> Settings:
        return Settings(
            store=store_url,
            remote=server.url,
            index_dir=tmp_path / "clone.git",
            connect_timeout_ms=1000,
            timeout_ms=1500,
        )

    return build


class TestFaultModes:
    @pytest.mark.parametrize(("protocol", "mode"), CASES)
    def test_no_confirmation_while_the_remote_lacks_the_content(
        self, protocol: str, mode: Mode, tmp_path: Path, settings_for: Any
    ) -> None:
        """Under each fault the job stays open with its attempt and failure recorded; after recovery it is confirmed once."""
        server = RemoteServer.start(tmp_path / "remote", protocol=protocol)  # type: ignore[arg-type]
        with server, open_ledger(settings_for(server)) as ledger:
            ledger.publish(make_line("serde", "1.0.0"), "alice")
            assert ledger.sync(FAST).confirmed == 1
            before = server.head()

            ledger.publish(make_line("serde", "1.0.1"), "alice")
            server.set_mode(mode)
            result = ledger.sync(FAST)
            server.set_mode(Mode.OK)

            assert result.confirmed == 0
            assert result.open_left == 1
            assert server.head() == before
            assert versions_in(remote_file(server, "serde")) == ["1.0.0"]
            events = ledger.history("serde", "1.0.1")
            names = [e["event"] for e in events]
            assert "IndexPushConfirmed" not in names
            assert "IndexSyncCompleted" not in names
            reported, reasons = EXPECTED[mode]
            failed = [e for e in events if e["event"] == "IndexPushFailed"]
            assert failed
            assert {e["reason"] for e in failed} <= reasons | {"unconfirmed"}
            assert failed[-1]["reason"] in reasons
            attempts = [e for e in events if e["event"] == "IndexPushAttempted"]
            if reported is None:
                assert attempts == []
            else:
                assert attempts[0]["reported"] == reported

            recovered = ledger.sync(FAST)
            assert recovered.confirmed == 1
            assert recovered.open_left == 0
            assert versions_in(remote_file(server, "serde")) == ["1.0.0", "1.0.1"]
            report = ledger.audit(grace=0)
            assert report.consistent, report.to_dict()


class TestRemoteMovedUnderneath:
    def test_non_fast_forward_rebuilds_on_top_of_the_new_head(
        self, tmp_path: Path, settings_for: Any
    ) -> None:
        """When someone else pushed meanwhile, the worker fetches, rebuilds on top and keeps their commit."""
        server = RemoteServer.start(tmp_path / "remote", protocol="http")
        with server, open_ledger(settings_for(server)) as ledger:
            ledger.publish(make_line("serde", "1.0.0"), "alice")
            ledger.sync(FAST)
            other = _push_foreign_file(server, tmp_path, "README", b"hello\n")
            ledger.publish(make_line("tokio", "1.0.0"), "alice")
            result = ledger.sync(FAST)
            assert result.confirmed == 1
            repo = pygit2.Repository(str(server.bare_path))
            head = repo[server.head()].peel(pygit2.Commit)
            assert repo.descendant_of(head.id, pygit2.Oid(hex=other))
            assert bytes(head.tree["README"].data) == b"hello\n"
            assert versions_in(remote_file(server, "tokio")) == ["1.0.0"]


class TestBuildingOnTheLastReadBack:
    @pytest.mark.parametrize("protocol", ["http", "git"])
    def test_a_pass_after_a_confirmed_one_builds_on_the_head_it_read_back(
        self, tmp_path: Path, settings_for: Any, protocol: str
    ) -> None:
        """No fetch before building when the last read-back saw the remote head; if someone else
        pushed since, the remote refuses the push, the attempt is recorded as rejected, and the
        next round rebuilds on top of their commit."""
        server = RemoteServer.start(tmp_path / "remote", protocol=protocol)  # type: ignore[arg-type]
        with server, open_ledger(settings_for(server)) as ledger:
            index = ledger.index()
            fetches: list[str | None] = []
            fetch = index.fetch

            def counted_fetch() -> str | None:
                fetches.append(head := fetch())
                return head

            index.fetch = counted_fetch  # type: ignore[method-assign]
            worker = SyncWorker(ledger, index, options=FAST)
            ledger.publish(make_line("serde", "1.0.0"), "alice")
            assert worker.run_once().confirmed == 1
            assert len(fetches) == 1  # the first attempt has no read-back to build on

            ledger.publish(make_line("serde", "1.0.1"), "alice")
            assert worker.run_once().confirmed == 1
            assert len(fetches) == 1  # built on the head the last read-back saw

            other = _push_foreign_file(server, tmp_path, "README", b"hello\n")
            ledger.publish(make_line("tokio", "1.0.0"), "alice")
            result = worker.run_once()
            assert (result.confirmed, result.open_left) == (1, 0)
            assert len(fetches) == 1  # the rejected push's read-back found the new head
            repo = pygit2.Repository(str(server.bare_path))
            head = repo[server.head()].peel(pygit2.Commit)
            assert repo.descendant_of(head.id, pygit2.Oid(hex=other))
            assert bytes(head.tree["README"].data) == b"hello\n"
            assert versions_in(remote_file(server, "tokio")) == ["1.0.0"]
            assert versions_in(remote_file(server, "serde")) == ["1.0.0", "1.0.1"]
            tokio = ledger.history("tokio", "1.0.0")
            attempts = [e for e in tokio if e["event"] == "IndexPushAttempted"]
            failures = [e for e in tokio if e["event"] == "IndexPushFailed"]
            assert len(attempts) == 2
            assert [f["reason"] for f in failures] == ["rejected"]
            assert ledger.audit(grace=0).consistent


def _push_foreign_file(server: RemoteServer, tmp_path: Path, path: str, data: bytes) -> str:
    """Commit a file straight into the server's repository, as another writer would."""
    repo = pygit2.Repository(str(server.bare_path))
    head = repo[server.head()].peel(pygit2.Commit)
    builder = repo.TreeBuilder(head.tree)
    builder.insert(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    sig = pygit2.Signature("other", "other@localhost")
    commit = repo.create_commit(
        f"refs/heads/{server.branch}", sig, sig, "foreign", builder.write(), [head.id]
    )
    return str(commit)


class TestGivingUp:
    def test_a_job_is_abandoned_after_max_attempts_even_when_the_remote_never_answers(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Failures that never reach a push (unreachable remote) still count towards max_attempts."""
        settings = Settings(
            store=store_url, remote="git://127.0.0.1:1/index.git", index_dir=tmp_path / "c.git"
        )
        options = WorkerOptions(max_attempts=2, backoff_base=1.0)
        with open_ledger(settings) as ledger:
            ledger.publish(make_line("kaze", "0.1.6"), "alice")
            first = ledger.sync(options)
            assert (first.failed, first.abandoned, first.open_left) == (1, 0, 1)
            second = ledger.sync(options)
            assert (second.failed, second.abandoned, second.open_left) == (0, 1, 0)
            events = [e["event"] for e in ledger.history("kaze", "0.1.6")]
            assert events.count("IndexPushFailed") == 2
            assert events[-1] == "IndexSyncAbandoned"
            report = ledger.audit()
            assert [(d.crate, d.version, d.cls) for d in report.discrepancies] == [("kaze", "0.1.6", "lost")]
