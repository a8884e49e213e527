"""Views: rebuilt equals incremental (also across a crash), time travel, and the events' hash chain."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.adapters.stores.events import EVENTS_TABLE, POSITION, log_rows
from ledger.bootstrap import open_ledger
from ledger.domain.names import collision_key, index_path
from ledger.ports import Database
from ledger.services.ledger import AsOf, Ledger
from ledger.services.publishing import Receipt
from ledger.settings import Settings, StoreURL
from projections import runner as runner_module
from projections import views
from projections.runner import ProjectionError, ViewRunner
from projections.schema import VIEW_TABLES, has_table

ACTOR = "alice"
REMOTE = "git://127.0.0.1/index.git"
LineFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with open_ledger(Settings(store=store_url)) as opened:
        yield opened


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every view table, in a stable order."""
    return {table: sorted(db.query(f"SELECT * FROM {table}"), key=repr) for table in VIEW_TABLES}


def assert_replays_alike(
    ledger: Ledger, expected: dict[str, list[tuple[Any, ...]]], sizes: tuple[int, ...]
) -> None:
    """The views replayed from position zero in batches of each size, then rebuilt, equal ``expected``."""
    for size in sizes:
        runner = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=size)
        runner.drop_tables()
        runner.create_tables()
        runner.catch_up()
        assert dump(ledger.db) == expected, f"batches of {size}"
    ledger.rebuild()
    assert dump(ledger.db) == expected


# -- playing the index side: the events a worker and a scan would record ------------------------


def _commit() -> str:
    return (uuid4().hex + uuid4().hex)[:40]


def sync(
    ledger: Ledger, receipt: Receipt, *, complete: bool = True, entries: list[list[Any]] | None = None
) -> int:
    """Record an attempt, a confirmed push of the crate's whole file (or of ``entries``) and
    (optionally) completion; the position of the last event recorded."""
    if entries is None:
        ledger.views.catch_up()
        rows = ledger.db.query(
            "SELECT version, vers_key, state, digest FROM view_versions "
            "WHERE crate_key = ? AND state <> 'deleted' ORDER BY seq",
            (collision_key(receipt.crate),),
        )
        entries = [[v, k, s == "yanked", d] for v, k, s, d in rows]
    job = ledger.app.get_job(receipt.job)
    commit = _commit()
    job.attempted(
        remote=REMOTE,
        branch="master",
        commit=commit,
        parent=None,
        reported="ok",
        message=None,
        worker="test",
        batch=1,
        target="git",
    )
    job.confirmed(
        crate=receipt.crate,
        commit=commit,
        remote_head=commit,
        method="read-back",
        path=index_path(receipt.crate),
        entries=entries,
        target="git",
    )
    if complete:
        job.completed(commit=commit)
    return ledger.app.save_jobs([job])


def fail(ledger: Ledger, receipt: Receipt) -> int:
    """Record a push that reported success but could not be confirmed."""
    job = ledger.app.get_job(receipt.job)
    job.attempted(
        remote=REMOTE,
        branch="master",
        commit=_commit(),
        parent=None,
        reported="no_status",
        message=None,
        worker="test",
        batch=1,
        target="git",
    )
    job.failed(
        reason="unconfirmed",
        detail="the remote head did not move",
        remote_head=None,
        next_retry=None,
        target="git",
    )
    return ledger.app.save_jobs([job])


def abandon(ledger: Ledger, receipt: Receipt) -> int:
    """Record a job given up: its change never reaches the index."""
    job = ledger.app.get_job(receipt.job)
    job.abandoned(reason="deleted from the queue by hand")
    return ledger.app.save_jobs([job])


def scan(ledger: Ledger, crate: str, entries: list[list[Any]]) -> int:
    """Record a scan of the real index that found ``crate``'s file holding ``entries``."""
    remote = ledger.app.remote(REMOTE)
    remote.scanned(
        branch="master",
        head=_commit(),
        base_position=ledger.views.head(),
        files=1,
        changed_files=1,
        observed={collision_key(crate): [crate, index_path(crate), entries]},
        discrepancies=[{"crate": crate, "class": "phantom"}],
        target="git",
    )
    return ledger.app.save_jobs([remote])


def scenario(ledger: Ledger, line: LineFactory, after_each: Callable[[], object]) -> None:
    """Every kind of event: publishes, yanks, deletes, jobs synced, failed, abandoned, and a scan."""
    steps: list[Callable[[], object]] = []
    receipts: dict[str, Receipt] = {}

    def publish(name: str, vers: str) -> None:
        receipts[f"{name} {vers}"] = ledger.publish(line(name, vers), ACTOR)

    steps += [
        lambda: publish("kaze", "0.1.5"),
        lambda: sync(ledger, receipts["kaze 0.1.5"]),
        lambda: publish("kaze", "0.1.6"),
        lambda: publish("wasmer-runtime-core", "0.14.0"),
        lambda: fail(ledger, receipts["wasmer-runtime-core 0.14.0"]),
        lambda: publish("wasmer-win-exception-handler", "0.14.0"),
        lambda: abandon(ledger, receipts["wasmer-win-exception-handler 0.14.0"]),
        lambda: sync(ledger, receipts["kaze 0.1.6"]),
        lambda: receipts.__setitem__("yank", ledger.yank("kaze", "0.1.5", ACTOR)),
        lambda: sync(ledger, receipts["yank"], complete=False),
        lambda: ledger.delete("kaze", "0.1.6", ACTOR, "malware"),
        lambda: ledger.publish_many([(1, line("serde", "1.0.0")), (2, line("serde", "1.0.1"))], ACTOR),
        lambda: scan(ledger, "ghost", [["0.1.0", "0.1.0", False, "0" * 64]]),
    ]
    for step in steps:
        step()
        after_each()


class TestRebuild:
    def test_rebuild_equals_the_incrementally_built_views(self, ledger: Ledger, line: LineFactory) -> None:
        """Views caught up in small batches after every step equal, row for row, views rebuilt from zero."""
        small = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=2)
        scenario(ledger, line, small.catch_up)
        incremental = dump(ledger.db)
        assert all(incremental[t] for t in VIEW_TABLES), "the scenario fills every view"
        assert ledger.rebuild() == ledger.views.head()
        assert dump(ledger.db) == incremental

    def test_a_crash_between_batches_loses_and_repeats_nothing(
        self, ledger: Ledger, line: LineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A batch that fails leaves the views at the last whole batch; continuing equals a rebuild."""
        scenario(ledger, line, lambda: None)
        runner = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=3)
        runner.drop_tables()
        runner.create_tables()
        assert runner.catch_up(until=6) == 6  # two whole batches only
        before_crash = dump(ledger.db)

        flush = views.ViewBatch.flush

        def flush_then_crash(batch: views.ViewBatch, cursor: Any) -> None:
            flush(batch, cursor)
            raise RuntimeError("power cut")

        monkeypatch.setattr(views.ViewBatch, "flush", flush_then_crash)
        with pytest.raises(ProjectionError, match="log position 7"):
            runner.catch_up()
        monkeypatch.undo()
        assert runner.position() == 6
        assert dump(ledger.db) == before_crash

        assert ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=3).catch_up() == ledger.views.head()
        continued = dump(ledger.db)
        ledger.rebuild()
        assert dump(ledger.db) == continued

    def test_two_runners_apply_each_event_once(self, ledger: Ledger, line: LineFactory) -> None:
        """Two runners catching up the same store in turns end with the same views as one rebuild."""
        first = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=2)
        second = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=5)
        turn = iter([first, second] * 50)
        scenario(ledger, line, lambda: next(turn).catch_up())
        together = dump(ledger.db)
        ledger.rebuild()
        assert dump(ledger.db) == together

    def test_a_catch_up_from_far_behind_works_as_a_rebuild_and_equals_batch_by_batch(
        self, ledger: Ledger, line: LineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """From ``BULK_CATCH_UP`` events behind (an import), the catch-up drops ``view_unsynced``
        and makes it once at the end; the views equal those kept batch by batch, also when the
        catch-up stopped half way and was taken up again."""
        small = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=2)
        scenario(ledger, line, small.catch_up)
        incremental = dump(ledger.db)
        assert incremental["view_unsynced"], "the scenario leaves crates out of sync"

        bulk_runs: list[int] = []
        in_bulk = ViewRunner._catch_up_in_bulk

        def counted(runner: ViewRunner) -> int:
            bulk_runs.append(runner.position())
            return in_bulk(runner)

        monkeypatch.setattr(runner_module, "BULK_CATCH_UP", 5)
        monkeypatch.setattr(ViewRunner, "_catch_up_in_bulk", counted)
        monkeypatch.setattr(runner_module, "REBUILD_BATCH_SIZE", 4)
        runner = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=1)
        runner.drop_tables()
        runner.create_tables()

        flush = views.ViewBatch.flush
        flushed: list[int] = []

        def crash_on_the_third(batch: views.ViewBatch, cursor: Any) -> None:
            flush(batch, cursor)
            flushed.append(batch.last_position)
            if len(flushed) == 3:
                raise RuntimeError("power cut")

        with monkeypatch.context() as crash:
            crash.setattr(views.ViewBatch, "flush", crash_on_the_third)
            with pytest.raises(ProjectionError):
                runner.catch_up()
        assert runner.position() == flushed[1]  # two whole batches of four
        assert has_table(ledger.db, "view_unsynced")  # made again at the stop
        assert dump(ledger.db)["view_jobs"]

        assert runner.catch_up() == ledger.views.head()
        assert bulk_runs == [0, flushed[1]]
        assert dump(ledger.db) == incremental

    def test_a_rebuild_restores_the_connection_settings_it_changed(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """The bulk settings of a rebuild (page cache and checkpoints, commits) last as long as it."""
        scenario(ledger, line, lambda: None)
        names = (
            ["PRAGMA cache_size", "PRAGMA wal_autocheckpoint"]
            if ledger.db.dialect == "sqlite"
            else ["SHOW synchronous_commit"]
        )
        before = [ledger.db.query(name) for name in names]
        ledger.rebuild()
        assert [ledger.db.query(name) for name in names] == before


class TestIndexRows:
    def test_a_row_keeps_the_position_since_which_it_holds_its_value(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """A confirmation carries the crate's whole file; only the rows that changed are written
        again, each with the position of the event since which it holds its value, and the result
        is the same however the events fall into batches."""
        first = sync(ledger, ledger.publish(line("kaze", "0.1.5"), ACTOR))
        second = sync(ledger, ledger.publish(line("kaze", "0.1.6"), ACTOR))
        yanked = sync(ledger, ledger.yank("kaze", "0.1.5", ACTOR))
        unyanked = sync(ledger, ledger.unyank("kaze", "0.1.5", ACTOR))  # back to its value before
        third = sync(ledger, ledger.publish(line("kaze", "0.1.7"), ACTOR))
        ledger.views.catch_up()

        def rows() -> list[tuple[Any, ...]]:
            return ledger.db.query("SELECT version, yanked, updated_pos FROM view_index ORDER BY version")

        assert first < second < yanked < unyanked < third
        # Each position is the save of the job's events: attempt, confirmation, completion.
        confirmed = {p: p - 1 for p in (second, unyanked, third)}
        assert rows() == [
            ("0.1.5", 0, confirmed[unyanked]),
            ("0.1.6", 0, confirmed[second]),
            ("0.1.7", 0, confirmed[third]),
        ]
        assert_replays_alike(ledger, dump(ledger.db), (1, 2, 3, 4, 5, 7, 1000))


class TestAppendedFiles:
    def test_rows_hold_the_same_values_and_positions_however_a_file_is_read(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """A file that appends entries to the one before it is read from where they begin; files
        that yank, remove, edit a line or come from a scan are read whole, also when they append
        too, and the same version key may come twice. Whatever the batches, the rows are each
        version's last entry in the last file, each with the position of the first of the files
        since which it holds that value."""
        rng = random.Random(11)
        entries: list[list[Any]] = []
        history: list[tuple[int, list[list[Any]]]] = []

        def expected(upto: int) -> list[tuple[Any, ...]]:
            files = [(p, {key: (v, int(y), d) for v, key, y, d in e}) for p, e in history if p <= upto]
            rows = []
            for key, value in files[-1][1].items():
                first = len(files) - 1
                while first > 0 and files[first - 1][1].get(key) == value:
                    first -= 1
                rows.append((key, *value, files[first][0]))
            return sorted(rows)

        def rows() -> list[tuple[Any, ...]]:
            return ledger.db.query(
                "SELECT vers_key, version, yanked, digest, updated_pos FROM view_index "
                "WHERE crate_key = 'kaze' ORDER BY vers_key"
            )

        for step in range(80):
            for _ in range(rng.choice((1, 2))):  # some files change an entry and append one
                choice = rng.random()
                if choice < 0.5 or not entries:
                    n = len(entries)
                    if n and rng.random() < 0.1:  # a version key again: another version, or the same entry
                        twin = rng.choice(entries)
                        again = [f"{twin[1]}+{step}", twin[1], False, f"{step:064x}"]
                        entries.append(list(twin) if rng.random() < 0.5 else again)
                    else:
                        entries.append([f"0.{n}.{step}", f"0.{n}.{step}", False, f"{step:064x}"])
                elif choice < 0.65:
                    entries[rng.randrange(len(entries))][2] ^= True
                elif choice < 0.85:  # another line under the same version: the text keeps its length
                    entries[rng.randrange(len(entries))][3] = f"{step + 1000:064x}"
                elif choice < 0.98:
                    entries.pop(rng.randrange(len(entries)))
                else:
                    entries = []
            if rng.random() < 0.2:
                position = scan(ledger, "kaze", [list(e) for e in entries])
            else:
                position = confirm(ledger, line, step, [list(e) for e in entries])
            history.append((position, [list(e) for e in entries]))
            ledger.views.catch_up()  # each file in a batch of its own, after the stored one
            assert rows() == expected(position), f"step {step}"
        whole = dump(ledger.db)

        together = ViewRunner(ledger.app, ledger.db, ledger.log, batch_size=1000)
        for upto, _ in history[9::10]:  # files in one batch, after each other
            together.drop_tables()
            together.create_tables()
            together.catch_up(until=upto)
            assert rows() == expected(upto), f"up to {upto} in one batch"
        assert_replays_alike(ledger, whole, (3, 8, 1000))

    def test_views_made_before_the_files_digests_take_them_on(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """Views whose files lack the columns that recognise an appending file get them, NULL
        until the file is replaced: that file is read whole, and the rows are those of a rebuild."""
        confirm(ledger, line, 1, [["0.1.0", "0.1.0", False, "a" * 64]])
        ledger.views.catch_up()
        with ledger.db.transaction() as cur:
            for column in ("entries_length", "entries_sha256"):
                cur.execute(f"ALTER TABLE view_index_files DROP COLUMN {column}")
        ledger.views.create_tables()
        assert ledger.db.query("SELECT entries_length, entries_sha256 FROM view_index_files") == [
            (None, None)
        ]
        confirm(ledger, line, 2, [["0.1.0", "0.1.0", False, "a" * 64], ["0.2.0", "0.2.0", False, "b" * 64]])
        ledger.views.catch_up()
        caught_up = dump(ledger.db)
        ledger.rebuild()
        assert dump(ledger.db) == caught_up


def confirm(ledger: Ledger, line: LineFactory, step: int, entries: list[list[Any]]) -> int:
    """Publish a version of kaze and record its job's push confirmed with ``entries`` as the file."""
    receipt = ledger.publish(line("kaze", f"9.{step}.0"), ACTOR)
    return sync(ledger, receipt, complete=False, entries=entries)


class TestReading:
    def test_each_stored_event_reads_as_the_library_reads_it(self, ledger: Ledger, line: LineFactory) -> None:
        """The views read each event's stored JSON: the same fields and values as the library's
        domain event, and a line's stored text is the line as the views would encode it."""
        scenario(ledger, line, lambda: None)
        ledger.publish(line("unicode", "1.0.0", features={"größe": ["dep/ünï"]}), ACTOR)
        mapper = ledger.app.mapper
        rows = log_rows(ledger.app.recorder, 0, 1000)
        assert [row[0] for row in rows] == list(range(1, ledger.views.head() + 1))
        texts, entries = 0, 0
        for position, originator_id, topic, state in rows:
            stored = StoredEvent(UUID(originator_id), 0, topic, bytes(state))
            event = vars(mapper.to_domain_event(stored)).copy()
            del event["originator_id"], event["originator_version"]
            expected = json.loads(mapper.transcoder.encode(event))
            for compact in (False, True):
                read = views.decode(mapper, (position, originator_id, topic, state), compact=compact)
                text = read[3].pop(views.LINE_TEXT, None)
                kept = read[3].pop(views.ENTRIES_TEXT, None)
                if kept is not None:  # a confirmation's entries, left as their stored text
                    entries += 1
                    assert compact
                    assert read[3]["entries"] is None
                    assert kept == json.dumps(expected["entries"], separators=(",", ":"), ensure_ascii=False)
                    read[3]["entries"] = json.loads(kept)
                assert read == (position, originator_id, topic, expected)
                if text is not None:
                    texts += 1
                    assert compact
                    assert text == json.dumps(expected["line"], separators=(",", ":"), ensure_ascii=False)
        publishes = sum(row[2] == "ledger:VersionPublished" for row in rows)
        assert texts == publishes == 7, "every publish kept its line's text"
        confirmations = sum(row[2] == "ledger:IndexPushConfirmed" for row in rows)
        assert entries == confirmations == 3, "every confirmation kept its entries' text"

    def test_compressed_events_are_read_through_the_library(
        self, tmp_path: Path, line: LineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Events the library stored compressed are read through its mapper: a rebuild still
        equals the views caught up step by step."""
        monkeypatch.setenv("COMPRESSOR_TOPIC", "eventsourcing.compressor:ZlibCompressor")
        with open_ledger(Settings(store=f"sqlite:///{tmp_path / 'zipped.db'}")) as zipped:
            assert zipped.app.mapper.compressor is not None
            small = ViewRunner(zipped.app, zipped.db, zipped.log, batch_size=2)
            scenario(zipped, line, small.catch_up)
            incremental = dump(zipped.db)
            assert zipped.rebuild() == zipped.views.head()
            assert dump(zipped.db) == incremental


class TestTimeTravel:
    def test_audit_at_a_past_position_shows_what_was_true_then(
        self, ledger: Ledger, line: LineFactory
    ) -> None:
        """A version lost today was pending at the position of its publish."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        abandon(ledger, receipt)
        now = ledger.audit()
        assert [(d.crate, d.version, d.cls) for d in now.discrepancies] == [("kaze", "0.1.6", "lost")]
        assert not now.consistent

        then = ledger.audit(at=AsOf(position=receipt.position))
        assert then.position == receipt.position
        assert [(d.crate, d.version, d.cls, d.job) for d in then.discrepancies] == [
            ("kaze", "0.1.6", "pending", str(receipt.job))
        ]
        assert then.consistent

    def test_audit_at_a_past_time_shows_what_was_true_then(self, ledger: Ledger, line: LineFactory) -> None:
        """Before a push was confirmed the version was pending; after it, nothing is out of sync."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        time.sleep(0.01)
        between = datetime.now(UTC)
        time.sleep(0.01)
        sync(ledger, receipt)
        assert ledger.audit().discrepancies == []
        then = ledger.audit(at=AsOf(time=between))
        assert then.position == receipt.position
        assert [(d.version, d.cls) for d in then.discrepancies] == [("0.1.6", "pending")]

    def test_audit_as_of_the_past_leaves_the_views_alone(self, ledger: Ledger, line: LineFactory) -> None:
        """Asking about the past does not move or change the store's own views."""
        receipt = ledger.publish(line("kaze", "0.1.6"), ACTOR)
        sync(ledger, receipt)
        ledger.views.catch_up()
        before = dump(ledger.db)
        ledger.audit(at=AsOf(position=1))
        assert dump(ledger.db) == before


class TestVerify:
    @staticmethod
    def table(store_url: str) -> tuple[str, str]:
        """The event table (schema-qualified on PostgreSQL) and its position column."""
        url = StoreURL.parse(store_url)
        table, position = EVENTS_TABLE[url.kind], POSITION[url.kind]
        return (f"{url.schema}.{table}" if url.schema else table), position

    @staticmethod
    def three_publishes(ledger: Ledger, line: LineFactory) -> None:
        for vers in ("0.1.4", "0.1.5", "0.1.6"):
            ledger.publish(line("kaze", vers), ACTOR)

    def test_an_untouched_ledger_verifies(self, ledger: Ledger, line: LineFactory) -> None:
        """The chain holds over every event of a ledger nobody edited."""
        self.three_publishes(ledger, line)
        report = ledger.verify()
        assert report.ok
        assert report.broken is None
        assert report.events == ledger.views.head() == 7

    def test_an_empty_ledger_verifies(self, ledger: Ledger) -> None:
        """A ledger without events has an intact, empty chain."""
        report = ledger.verify()
        assert (report.ok, report.events) == (True, 0)

    def test_an_edited_event_is_named(self, ledger: Ledger, line: LineFactory, store_url: str) -> None:
        """Changing one stored event's state behind the ledger's back breaks the chain at its position."""
        self.three_publishes(ledger, line)
        table, position = self.table(store_url)
        with ledger.db.transaction() as cur:
            cur.execute(f"UPDATE {table} SET state = ? WHERE {position} = 3", (b'{"forged": true}',))
        report = ledger.verify()
        assert report.broken is not None
        assert report.broken.position == 3
        assert "edited" in report.broken.problem
        assert report.events == 2

    def test_a_deleted_event_is_named(self, ledger: Ledger, line: LineFactory, store_url: str) -> None:
        """Deleting one stored event breaks the chain at the deleted position."""
        self.three_publishes(ledger, line)
        table, position = self.table(store_url)
        with ledger.db.transaction() as cur:
            cur.execute(f"DELETE FROM {table} WHERE {position} = 3")
        report = ledger.verify()
        assert report.broken is not None
        assert (report.broken.position, report.broken.problem) == (3, "event deleted: its link remains")

    def test_an_inserted_event_is_named(self, ledger: Ledger, line: LineFactory, store_url: str) -> None:
        """An event inserted behind the ledger's back has no link, and its position is named."""
        self.three_publishes(ledger, line)
        head = ledger.views.head()
        table, position = self.table(store_url)
        with ledger.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                f"SELECT originator_id, originator_version + 1000, topic, state FROM {table} "
                f"WHERE {position} = 3"
            )
        report = ledger.verify()
        assert report.broken is not None
        assert (report.broken.position, report.broken.problem) == (
            head + 1,
            "event inserted: no link recorded",
        )
