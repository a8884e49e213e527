"""The library API on both stores: publish, yank, unyank, delete, batched publishes, read-your-writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.errors import AlreadyPublished, Conflict, Invalid, NameCollision, NotFound
from ledger.services.ledger import Ledger
from ledger.settings import Settings
from projections.runner import ProjectionError

ACTOR = "alice"
LineFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with open_ledger(Settings(store=store_url)) as opened:
        yield opened


def state_of(ledger: Ledger, crate: str, version: str) -> str | None:
    ledger.views.catch_up()
    rows = ledger.db.query(
        "SELECT state FROM view_versions WHERE crate = ? AND version = ?", (crate, version)
    )
    return str(rows[0][0]) if rows else None


class TestPublish:
    def test_receipt_names_crate_version_job_and_position(self, ledger: Ledger, line: LineFactory) -> None:
        """A publish returns a receipt naming the crate, the version, its index job and its log position."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        assert (receipt.crate, receipt.version, receipt.event) == ("kaze", "0.1.6", "VersionPublished")
        assert receipt.position == ledger.views.head() == 3  # registered, published, enqueued
        assert receipt.to_dict()["job"] == str(receipt.job)

    def test_publish_and_its_job_are_saved_together(self, ledger: Ledger, line: LineFactory) -> None:
        """History shows the job enqueued, then VersionPublished, with the receipt's job, in one save."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        records = ledger.history("kaze", "0.1.6")
        assert sorted((r["event"], r["job"]) for r in records) == [
            ("IndexSyncEnqueued", str(receipt.job)),
            ("VersionPublished", str(receipt.job)),
        ]
        assert [r["event"] for r in records] == ["IndexSyncEnqueued", "VersionPublished"]
        assert records[-1]["position"] == receipt.position
        assert receipt.position - 2 <= records[0]["position"] < receipt.position  # CrateRegistered between
        assert all(r["actor"] == ACTOR for r in records)

    def test_a_failed_save_records_neither_the_publish_nor_its_job(
        self, ledger: Ledger, line: LineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the store fails after inserting the events but before committing, nothing is recorded."""
        recorder: Any = ledger.app.recorder
        insert = recorder._insert_events

        def insert_then_fail(*args: Any, **kwargs: Any) -> Any:
            insert(*args, **kwargs)
            raise RuntimeError("the disk is full")

        monkeypatch.setattr(recorder, "_insert_events", insert_then_fail)
        with pytest.raises(RuntimeError, match="disk is full"):
            ledger.publish(line("kaze", "0.1.6"), ACTOR)
        monkeypatch.undo()
        assert ledger.views.head() == 0
        assert ledger.app.find_crate("kaze") is None
        assert ledger.publish(line("kaze", "0.1.6"), ACTOR).position == 3

    def test_an_actor_is_required(self, ledger: Ledger, line: LineFactory) -> None:
        """A publish without an actor is refused as invalid and writes nothing."""
        with pytest.raises(Invalid, match="actor"):
            ledger.publish(line(), " ")
        assert ledger.views.head() == 0

    def test_a_line_already_yanked_is_refused(self, ledger: Ledger, line: LineFactory) -> None:
        """A new version cannot arrive already yanked."""
        with pytest.raises(Invalid, match="already yanked"):
            ledger.publish(line(yanked=True), ACTOR)


class TestStateMachine:
    def test_yank_unyank_delete_move_the_version_through_its_states(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """Yank, unyank and delete each record an event with its own job and change the version's state."""
        published = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        assert state_of(ledger, "kaze", "0.1.6") == "published"
        yanked = ledger.yank("kaze", "0.1.6", ACTOR)
        assert (yanked.event, state_of(ledger, "kaze", "0.1.6")) == ("VersionYanked", "yanked")
        unyanked = ledger.unyank("kaze", "0.1.6", ACTOR)
        assert (unyanked.event, state_of(ledger, "kaze", "0.1.6")) == ("VersionUnyanked", "published")
        deleted = ledger.delete("kaze", "0.1.6", ACTOR, "malware")
        assert (deleted.event, state_of(ledger, "kaze", "0.1.6")) == ("VersionDeleted", "deleted")
        jobs = {published.job, yanked.job, unyanked.job, deleted.job}
        assert len(jobs) == 4
        assert published.position < yanked.position < unyanked.position < deleted.position

    def test_a_yanked_version_can_be_deleted(self, ledger: Ledger, line: LineFactory) -> None:
        """Deletion applies to yanked versions as well as live ones."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        ledger.yank("kaze", "0.1.6", ACTOR)
        ledger.delete("kaze", "0.1.6", ACTOR, "license violation")
        assert state_of(ledger, "kaze", "0.1.6") == "deleted"

    @pytest.mark.parametrize(
        ("crate", "version", "message"),
        [
            pytest.param("kaze", "9.9.9", "has no version 9.9.9", id="unknown-version"),
            pytest.param("wasmer", "0.14.0", "no crate named 'wasmer'", id="unknown-crate"),
        ],
    )
    def test_yank_of_something_unknown_is_not_found(
        self, ledger: Ledger, line: LineFactory, crate: str, version: str, message: str
    ) -> None:
        """Yanking a version or crate the ledger never recorded raises NotFound and writes nothing."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        head = ledger.views.head()
        with pytest.raises(NotFound, match=message):
            ledger.yank(crate, version, ACTOR)
        assert ledger.views.head() == head

    def test_unyank_of_a_live_version_conflicts(self, ledger: Ledger, line: LineFactory) -> None:
        """Unyanking a version that is not yanked is a Conflict and writes nothing."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        head = ledger.views.head()
        with pytest.raises(Conflict, match="not yanked"):
            ledger.unyank("kaze", "0.1.6", ACTOR)
        assert ledger.views.head() == head

    def test_yank_twice_conflicts(self, ledger: Ledger, line: LineFactory) -> None:
        """Yanking an already yanked version is a Conflict."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        ledger.yank("kaze", "0.1.6", ACTOR)
        with pytest.raises(Conflict, match="nothing to yank"):
            ledger.yank("kaze", "0.1.6", ACTOR)

    def test_publish_after_delete_of_the_same_version_conflicts(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """A deleted version can never be published again, build metadata or not."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        ledger.delete("kaze", "0.1.6", ACTOR, "broken release")
        for vers in ("0.1.6", "0.1.6+rebuild"):
            with pytest.raises(Conflict, match="deleted"):
                ledger.publish(line("kaze", vers), ACTOR)

    def test_delete_twice_conflicts(self, ledger: Ledger, line: LineFactory) -> None:
        """Deleting a deleted version is a Conflict."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        ledger.delete("kaze", "0.1.6", ACTOR, "broken release")
        with pytest.raises(Conflict, match="already deleted"):
            ledger.delete("kaze", "0.1.6", ACTOR, "again")

    @pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
    def test_delete_without_a_reason_is_invalid(self, ledger: Ledger, line: LineFactory, reason: str) -> None:
        """A deletion needs a reason; without one it is Invalid and writes nothing."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        head = ledger.views.head()
        with pytest.raises(Invalid, match="reason"):
            ledger.delete("kaze", "0.1.6", ACTOR, reason)
        assert ledger.views.head() == head


class TestNamesAndVersions:
    @pytest.mark.parametrize(
        ("first", "second"),
        [
            pytest.param("kaze", "Kaze", id="case"),
            pytest.param("my-crate", "my_crate", id="dash-underscore"),
            pytest.param("My_Crate", "my-crate", id="both"),
        ],
    )
    def test_colliding_names_are_refused(
        self, ledger: Ledger, line: LineFactory, first: str, second: str
    ) -> None:
        """A name equal to an existing crate's after lowercasing and folding - into _ is a NameCollision."""
        ledger.publish(line(first, "1.0.0"), ACTOR)
        with pytest.raises(NameCollision, match=f"collides with the existing crate '{first}'"):
            ledger.publish(line(second, "2.0.0"), ACTOR)
        with pytest.raises(NameCollision):
            ledger.yank(second, "1.0.0", ACTOR)

    def test_build_metadata_does_not_make_a_new_version(self, ledger: Ledger, line: LineFactory) -> None:
        """1.0.0+x after 1.0.0 is AlreadyPublished, naming the version that exists."""
        ledger.publish(line("kaze", "1.0.0"), ACTOR)
        with pytest.raises(AlreadyPublished, match=r"already published \(as 1.0.0\)"):
            ledger.publish(line("kaze", "1.0.0+x"), ACTOR)

    def test_the_same_version_twice_is_already_published(self, ledger: Ledger, line: LineFactory) -> None:
        """Publishing the same version again is AlreadyPublished and writes nothing."""
        ledger.publish(line("kaze", "1.0.0"), ACTOR)
        head = ledger.views.head()
        with pytest.raises(AlreadyPublished):
            ledger.publish(line("kaze", "1.0.0"), ACTOR)
        assert ledger.views.head() == head


class TestPublishMany:
    @staticmethod
    def lines(line: LineFactory) -> list[tuple[int, Any]]:
        return [
            (1, line("alpha", "1.0.0")),
            (2, line("alpha", "1.1.0")),
            (3, line("beta", "0.1.0")),
            (4, line("bad name", "1.0.0")),
            (5, line("alpha", "1.0.0+again")),
            (6, line("gamma", "0.1")),
            (7, line("beta", "0.2.0")),
        ]

    def test_counts_accepted_present_and_refused(self, ledger: Ledger, line: LineFactory) -> None:
        """A batch accepts valid new versions, counts repeats as present and refuses bad lines by number."""
        result = ledger.publish_many(self.lines(line), ACTOR, events_per_save=3)
        assert (result.accepted, result.present) == (4, 1)
        assert [n for n, _ in result.refused] == [4, 6]
        assert "not a valid crate name" in result.refused[0][1]
        assert result.position == ledger.views.head() == result.events
        ledger.views.catch_up()
        versions = ledger.db.query("SELECT crate, version FROM view_versions ORDER BY seq")
        assert versions == [("alpha", "1.0.0"), ("alpha", "1.1.0"), ("beta", "0.1.0"), ("beta", "0.2.0")]
        jobs = ledger.db.query("SELECT crate FROM view_jobs WHERE state = 'open' ORDER BY enqueued_pos")
        assert {c for (c,) in jobs} == {"alpha", "beta"}

    def test_a_second_run_adds_nothing(self, ledger: Ledger, line: LineFactory) -> None:
        """Importing the same lines again finds every version present and writes no event."""
        ledger.publish_many(self.lines(line), ACTOR)
        head = ledger.views.head()
        again = ledger.publish_many(self.lines(line), ACTOR)
        assert (again.accepted, again.present, again.events) == (0, 5, 0)
        assert len(again.refused) == 2
        assert ledger.views.head() == head

    def test_single_publishes_then_batch_agree(self, ledger: Ledger, line: LineFactory) -> None:
        """A version published singly counts as present in a later batch."""
        ledger.publish(line("alpha", "1.0.0"), ACTOR)
        result = ledger.publish_many([(1, line("alpha", "1.0.0")), (2, line("alpha", "2.0.0"))], ACTOR)
        assert (result.accepted, result.present) == (1, 1)


class TestReadYourWrites:
    def test_wait_for_views_includes_the_receipt(self, ledger: Ledger, line: LineFactory) -> None:
        """After wait_for_views(receipt) the views hold the change the receipt names."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        assert ledger.views.position() < receipt.position
        ledger.wait_for_views(receipt)
        assert ledger.views.position() >= receipt.position
        rows = ledger.db.query("SELECT state, job FROM view_versions WHERE crate = ?", ("kaze",))
        assert rows == [("published", str(receipt.job))]

    def test_wait_for_views_accepts_a_position(self, ledger: Ledger, line: LineFactory) -> None:
        """wait_for_views also takes a plain log position."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        ledger.yank("kaze", "0.1.6", ACTOR)
        ledger.wait_for_views(receipt.position)
        assert ledger.views.position() >= receipt.position

    def test_waiting_for_a_position_never_written_times_out(self, ledger: Ledger, line: LineFactory) -> None:
        """Waiting for a position beyond the log raises ProjectionError after the timeout."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        with pytest.raises(ProjectionError, match="did not reach log position"):
            ledger.wait_for_views(receipt.position + 10, timeout=0.05)


class TestStructuredLog:
    def test_every_accepted_call_logs_one_line(
        self, ledger: Ledger, line: LineFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each accepted publish, yank, unyank and delete logs one JSON line naming crate, version, actor and job."""
        import json as _json
        import logging

        caplog.set_level(logging.INFO, logger="ledger")
        receipts = [
            ledger.publish(line("kaze", "0.1.6"), ACTOR),
            ledger.yank("kaze", "0.1.6", ACTOR),
            ledger.unyank("kaze", "0.1.6", ACTOR),
            ledger.delete("kaze", "0.1.6", ACTOR, "test"),
        ]
        logged = [_json.loads(r.getMessage()) for r in caplog.records if r.name == "ledger"]
        assert [entry["step"] for entry in logged] == [
            "VersionPublished",
            "VersionYanked",
            "VersionUnyanked",
            "VersionDeleted",
        ]
        for entry, receipt in zip(logged, receipts, strict=True):
            assert (entry["crate"], entry["version"], entry["actor"], entry["job"]) == (
                "kaze",
                "0.1.6",
                ACTOR,
                str(receipt.job),
            )


class TestReadingJobs:
    def test_many_jobs_read_at_once_equal_each_read_alone(self, ledger: Ledger, line: LineFactory) -> None:
        """``Ledger.jobs`` rebuilds each job from its events as ``get_job`` does, for more jobs than one read."""
        import ledger.services.core as api

        receipts = [ledger.publish(line(f"crate{n}", "1.0.0"), ACTOR) for n in range(7)]
        receipts.append(ledger.yank("crate3", "1.0.0", ACTOR))
        ids = [r.job for r in receipts]
        first = ledger.app.get_job(ids[0])
        first.failed(reason="timeout", detail=None, remote_head=None, next_retry=None, target="git")
        ledger.app.save_jobs([first])
        original = api.JOBS_PER_READ
        api.JOBS_PER_READ = 3
        try:
            jobs = ledger.jobs(ids)
        finally:
            api.JOBS_PER_READ = original
        assert list(jobs) == ids
        for job_id in ids:
            alone = ledger.app.get_job(job_id)
            assert (jobs[job_id].version, jobs[job_id].crate) == (alone.version, alone.crate)
            assert (jobs[job_id].failures, jobs[job_id].open) == (alone.failures, alone.open)
        assert jobs[ids[0]].failures == 1

    def test_an_unknown_job_is_not_found(self, ledger: Ledger, line: LineFactory) -> None:
        from uuid import uuid4

        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        with pytest.raises(NotFound, match="no sync job"):
            ledger.jobs([receipt.job, uuid4()])
