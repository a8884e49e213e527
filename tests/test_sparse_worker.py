"""The sparse index as an index target, end to end: the worker uploads to the origin (a folder,
or an S3-compatible bucket on a real server) and confirms only by reading the public URL back
through a real CDN front that plays every fault a CDN has (``ledger.testing.cdn``).

For each fault the public URL serves the wrong thing: no confirmation, the job stays open and
the audit shows it stuck, the history says what each read-back saw; once the front behaves, the
next pass confirms. With the git remote as a second target, a failing sparse target leaves the
job open and stuck for the sparse target alone.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.crate_files import crate_file
from ledger.domain.names import index_path
from ledger.services.ledger import Ledger
from ledger.settings import Settings, TargetSpec
from ledger.testing.cdn import CdnFront
from ledger.testing.remote import RemoteServer
from ledger.testing.s3 import S3Server
from tests.conftest import make_line


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    folder = tmp_path / "origin"
    folder.mkdir()
    return folder


@pytest.fixture
def front(origin: Path) -> Iterator[CdnFront]:
    with CdnFront(origin) as served:
        yield served


def sparse_spec(front: CdnFront, origin: str, name: str = "sparse") -> TargetSpec:
    return TargetSpec.parse(f"{name}=sparse+{front.url}?origin={origin}&invalidate={front.invalidate_url}")


@pytest.fixture
def ledger(store_url: str, tmp_path: Path, front: CdnFront, origin: Path) -> Iterator[Ledger]:
    settings = Settings(
        store=store_url,
        targets=(sparse_spec(front, str(origin)),),
        index_dir=tmp_path / "shadow.git",
        connect_timeout_ms=1000,
        timeout_ms=1500,
    )
    with open_ledger(settings) as opened:
        yield opened


def public(front: CdnFront, path: str) -> bytes:
    with urllib.request.urlopen(front.url + path, timeout=5) as response:
        return bytes(response.read())


def failures(ledger: Ledger, crate: str) -> list[dict[str, Any]]:
    return [e for e in ledger.history(crate) if e["event"] == "IndexPushFailed"]


class TestConfirmedThroughThePublicURL:
    def test_a_publish_is_uploaded_and_confirmed_by_reading_the_public_url(
        self, ledger: Ledger, front: CdnFront, origin: Path
    ) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        ledger.publish(make_line("kaze", "0.2.0"), "alice")
        result = ledger.sync()
        assert (result.confirmed, result.open_left) == (2, 0)
        path = index_path("kaze")
        served = public(front, path)
        assert (origin / path).read_bytes() == served
        assert [json.loads(raw)["vers"] for raw in served.splitlines()] == ["0.1.6", "0.2.0"]
        assert json.loads(public(front, "config.json"))["dl"]
        confirmed = [e for e in ledger.history("kaze") if e["event"] == "IndexPushConfirmed"]
        assert {(e["target"], e["method"]) for e in confirmed} == {("sparse", "sparse-http-get")}
        gets = [(m, p) for m, p, status in front.requests if status == 200]
        assert ("GET", "/index/" + path) in gets, "the read-back went through the public URL"
        assert ledger.audit().consistent

    def test_the_file_equals_the_one_the_ledger_generates(self, ledger: Ledger, origin: Path) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        ledger.yank("kaze", "0.1.6", "alice")
        assert ledger.sync().open_left == 0
        data = (origin / index_path("kaze")).read_bytes()
        assert json.loads(data)["yanked"] is True
        from projections.queries import live_versions_of

        rows = live_versions_of(ledger.db, ["kaze"], with_deleted=False)["kaze"]
        assert data == crate_file(rows)


FAULTS = [
    pytest.param("unavailable", {}, "HTTP 503", id="503"),
    pytest.param("truncated", {}, "truncated", id="truncated"),
    pytest.param("wrong_crate", {}, "serves the file of crate", id="wrong-crate"),
    pytest.param("missing_new", {}, "HTTP 404", id="404-for-a-new-file"),
]


class TestEveryCdnFaultLeavesTheJobOpen:
    @pytest.mark.parametrize(("kind", "params", "seen"), FAULTS)
    def test_a_fault_is_recorded_then_the_next_read_back_confirms(
        self, ledger: Ledger, front: CdnFront, kind: str, params: dict[str, Any], seen: str
    ) -> None:
        ledger.publish(make_line("tokio", "1.0.0"), "alice")
        assert ledger.sync().confirmed == 1  # config.json and another crate, cached at the edge
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        front.fault(kind, paths=[index_path("kaze")], **params)
        result = ledger.sync()
        assert (result.confirmed, result.failed, result.open_left) == (0, 1, 1)
        report = ledger.audit(grace=0)
        assert report.counts["stuck"] == 1
        assert [d.crate for d in report.discrepancies] == ["kaze"]
        (failed,) = failures(ledger, "kaze")
        assert failed["target"] == "sparse"
        assert failed["reason"] == "unconfirmed"
        assert seen in failed["detail"], failed["detail"]

        front.heal()
        assert ledger.sync().confirmed == 1
        assert ledger.audit().consistent

    def test_a_stale_edge_confirms_once_it_turns_fresh(self, ledger: Ledger, front: CdnFront) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert ledger.sync().confirmed == 1
        front.fault("stale", seconds=0.4)
        public(front, index_path("kaze"))  # the edge caches the file as it is
        ledger.publish(make_line("kaze", "0.2.0"), "alice")
        assert ledger.sync().confirmed == 0
        (failed,) = failures(ledger, "kaze")
        assert "stale or different content" in failed["detail"]
        assert ledger.audit(grace=0).counts["stuck"] == 1
        deadline = time.monotonic() + 10
        while ledger.sync().confirmed == 0:  # no heal: the edge revalidates by itself
            assert time.monotonic() < deadline, "the stale file never turned fresh"
            time.sleep(0.1)
        assert ledger.audit().consistent

    def test_an_ignored_invalidation_stays_stale_until_the_edge_behaves(
        self, ledger: Ledger, front: CdnFront
    ) -> None:
        front.ttl = 3600.0  # an edge that caches for an hour, and relies on invalidations
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        assert ledger.sync().confirmed == 1
        front.fault("ignore_invalidation")
        ledger.publish(make_line("kaze", "0.2.0"), "alice")
        for _ in range(3):
            assert ledger.sync().confirmed == 0
        assert len(failures(ledger, "kaze")) == 3
        assert ledger.audit(grace=0).counts["stuck"] == 1
        front.heal()
        invalidations = sum(1 for m, p, _ in front.requests if (m, p) == ("POST", "/_invalidate"))
        # The edge still holds the old copy: the failed read-back asks for an invalidation again,
        # the edge honours it now, and the next read-back confirms.
        assert ledger.sync().confirmed == 0
        assert sum(1 for m, p, _ in front.requests if (m, p) == ("POST", "/_invalidate")) == invalidations + 1
        assert ledger.sync().confirmed == 1
        assert [json.loads(raw)["vers"] for raw in public(front, index_path("kaze")).splitlines()] == [
            "0.1.6",
            "0.2.0",
        ]

    def test_an_unreachable_public_url_records_unreachable(self, ledger: Ledger, front: CdnFront) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        front.stop()
        result = ledger.sync()
        assert (result.confirmed, result.open_left) == (0, 1)
        (failed,) = failures(ledger, "kaze")
        assert failed["reason"] == "unreachable"


class TestAnEdgeThatHangs:
    def test_a_read_back_that_times_out_records_timeout(self, ledger: Ledger, front: CdnFront) -> None:
        ledger.publish(make_line("kaze", "0.1.6"), "alice")
        front.fault("hang", paths=[index_path("kaze")], seconds=5)
        result = ledger.sync()
        assert (result.confirmed, result.open_left) == (0, 1)
        (failed,) = failures(ledger, "kaze")
        assert failed["reason"] == "timeout", failed
        front.heal()
        assert ledger.sync().confirmed == 1


class TestScanAndRepair:
    def test_a_file_removed_from_the_origin_is_lost_then_restored(
        self, ledger: Ledger, front: CdnFront, origin: Path
    ) -> None:
        for name in ("kaze", "tokio"):
            ledger.publish(make_line(name, "1.0.0"), "alice")
        assert ledger.sync().confirmed == 2
        (origin / index_path("kaze")).unlink()
        report = ledger.audit_scan(grace=0)
        assert report.counts["lost"] == 1
        assert report.scan is not None
        first = report.scan
        again = ledger.audit_scan(grace=0).scan
        assert again is not None
        assert again["examined"] <= first["examined"], "a second scan reads only what changed"
        result = ledger.repair(actor="operator")
        assert result.confirmed
        assert (origin / index_path("kaze")).exists()
        assert ledger.audit_scan(grace=0).consistent


class TestBothTargets:
    def test_git_healthy_and_sparse_failing_is_stuck_for_sparse_only(
        self, store_url: str, tmp_path: Path, front: CdnFront, origin: Path
    ) -> None:
        with RemoteServer.start(tmp_path / "git-server", protocol="http") as server:
            settings = Settings(
                store=store_url,
                remote=server.url,
                targets=(sparse_spec(front, str(origin)),),
                index_dir=tmp_path / "clone.git",
                connect_timeout_ms=1000,
                timeout_ms=1500,
            )
            front.fault("unavailable")
            with open_ledger(settings) as ledger:
                receipt = ledger.publish(make_line("kaze", "0.1.6"), "alice")
                assert ledger.sync().confirmed == 1
                assert ledger.on("sparse").sync().confirmed == 0
                assert ledger.app.get_job(receipt.job).open
                git, sparse = (core.audit(grace=0) for core in ledger.each_target())
                assert git.consistent
                assert sparse.counts["stuck"] == 1
                events = [(e["event"], e.get("target")) for e in ledger.history("kaze")]
                assert ("IndexPushConfirmed", "git") in events
                assert ("IndexPushFailed", "sparse") in events
                assert ("IndexSyncCompleted", None) not in events

                front.heal()
                assert ledger.on("sparse").sync().confirmed == 1
                assert not ledger.app.get_job(receipt.job).open
                assert public(front, index_path("kaze")) == server_file(server, "kaze")


def server_file(server: RemoteServer, crate: str) -> bytes:
    import pygit2

    repo = pygit2.Repository(str(server.bare_path))
    head = server.head()
    assert head is not None
    return bytes(repo[head].peel(pygit2.Commit).tree[index_path(crate)].data)


class TestOnAnS3Bucket:
    def test_a_bucket_behind_the_front_confirms_and_an_empty_bucket_is_recovered(
        self, sqlite_url: str, tmp_path: Path
    ) -> None:
        with S3Server() as s3:
            s3.create_bucket("index")
            with pytest.MonkeyPatch.context() as env, CdnFront(s3.public_url("index", "crates/")) as cdn:
                for key, value in s3.env().items():
                    env.setenv(key, value)
                settings = Settings(
                    store=sqlite_url,
                    targets=(
                        TargetSpec.parse(
                            f"sparse=sparse+{cdn.url}?origin=s3://index/crates&endpoint={s3.endpoint_url}"
                        ),
                    ),
                    index_dir=tmp_path / "shadow.git",
                )
                with open_ledger(settings) as ledger:
                    for n in range(5):
                        ledger.publish(make_line(f"crate{n}", "1.0.0"), "alice")
                    assert ledger.sync().confirmed == 5
                    expected = public(cdn, index_path("crate3"))
                    cdn.fault("unavailable")
                    ledger.publish(make_line("crate9", "1.0.0"), "alice")
                    assert ledger.sync().confirmed == 0
                    cdn.heal()
                    assert ledger.sync().confirmed == 1

                    client = s3.client()  # the bucket emptied by mistake
                    for page in client.get_paginator("list_objects_v2").paginate(Bucket="index"):
                        for item in page.get("Contents", []):
                            client.delete_object(Bucket="index", Key=item["Key"])
                    assert ledger.audit_scan(grace=0).counts["lost"] == 6
                    assert ledger.repair(actor="operator").confirmed
                    assert ledger.audit_scan(grace=0).consistent
                    assert public(cdn, index_path("crate3")) == expected


class TestImport:
    def test_a_sparse_index_is_adopted_by_its_url_and_origin(
        self, ledger: Ledger, front: CdnFront, origin: Path, tmp_path: Path
    ) -> None:
        """Another registry's sparse index, adopted by a new ledger whose target it becomes."""
        for name in ("kaze", "tokio", "serde"):
            ledger.publish(make_line(name, "1.0.0"), "alice")
        ledger.yank("tokio", "1.0.0", "alice")
        assert ledger.sync().open_left == 0
        url = f"sparse+{front.url}?origin={origin}"
        settings = Settings(
            store=f"sqlite:///{tmp_path / 'adopting.db'}",
            targets=(TargetSpec.parse(f"sparse={url}"),),
            index_dir=tmp_path / "adopting-shadow.git",
        )
        with open_ledger(settings) as adopting:
            result = adopting.import_index(url)
            assert (result.files, result.accepted, result.refused) == (3, 3, [])
            assert adopting.audit().consistent
            assert adopting.audit_scan(grace=0).consistent
            state = adopting.db.query("SELECT state FROM view_versions WHERE crate = 'tokio'")
            assert state == [("yanked",)], "the yanked flag is adopted as the index holds it"
            confirmed = [e for e in adopting.history("tokio") if e["event"] == "IndexPushConfirmed"]
            assert [e["target"] for e in confirmed] == ["sparse"]

    def test_a_sparse_url_without_an_origin_is_refused(self, ledger: Ledger, front: CdnFront) -> None:
        from ledger.domain.errors import Invalid

        with pytest.raises(Invalid, match="names no origin"):
            ledger.import_index(f"sparse+{front.url}")
