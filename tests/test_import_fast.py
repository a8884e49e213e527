"""The import's reading processes and the batched path's direct stored events, on both stores.

Reading in other processes, and storing events without the library's mapper, must give what
reading here and mapping every event gives: the same counts, refusals, views and stored states.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.adapters import realdata
from ledger.bootstrap import open_ledger
from ledger.domain.aggregates import Crate
from ledger.domain.index_format import parse_line
from ledger.services import importing as importer
from ledger.services.ledger import Ledger
from ledger.services.publishing import CheckedLine, PublicationLedger
from ledger.settings import Settings
from tests.test_import import make_source

pytestmark = pytest.mark.skipif(not realdata.data_available(), reason=realdata.DATA_MISSING)

CRATES = 120
VIEWS = (
    "SELECT crate_key, vers_key, crate, version, state, cksum, line, digest, seq, job FROM view_versions "
    "ORDER BY crate_key, vers_key",
    "SELECT crate_key, vers_key, yanked, digest, commit_id, source FROM view_index ORDER BY crate_key, vers_key",
    "SELECT crate_key, path, commit_id FROM view_index_files ORDER BY crate_key",
)


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes]]:
    found = list(realdata.baseline_files(CRATES))
    # A few lines the import refuses (bad JSON, another crate's line, a repeated version) and
    # one yanked line, so that every branch of the reading is in play.
    path, data = found[3]
    first = data.split(b"\n")[0]
    other = found[4][1].split(b"\n")[0]
    found[3] = (path, data + b"{not json\n" + other + b"\n" + first + b"\n")
    path, data = found[5]
    found[5] = (path, data.replace(b'"yanked":false', b'"yanked":true', 1))
    return found


@pytest.fixture
def ledgers(store_url: str, tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    """Two empty ledgers on the same kind of store."""
    second = store_url
    if store_url.startswith("sqlite:///"):
        second = f"sqlite:///{tmp_path / 'second.db'}"
    elif "schema=" in store_url:
        second = store_url.replace("schema=", "schema=b", 1)
    else:
        second = f"{store_url}?schema=second"
    with (
        open_ledger(Settings(store=store_url, index_dir=tmp_path / "one.git")) as one,
        open_ledger(Settings(store=second, index_dir=tmp_path / "two.git")) as two,
    ):
        yield one, two


def views(ledger: Ledger) -> list[list[tuple[Any, ...]]]:
    ledger.views.catch_up()
    return [[tuple(row) for row in ledger.db.query(sql)] for sql in VIEWS]


def without_jobs(rows: list[list[tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
    """The views without the job ids (random) and per-row positions."""
    return [[row[:-1] for row in rows[0]], rows[1], rows[2]]


def test_reading_processes_give_what_reading_here_gives(
    ledgers: tuple[Ledger, Ledger],
    tmp_path: Path,
    files: list[tuple[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here, elsewhere = ledgers
    source = make_source(tmp_path, files)
    alone = importer.import_index(here, str(source), readers=1, events_per_save=400)
    monkeypatch.setattr(importer, "PARALLEL_FILES", 0)
    monkeypatch.setattr(importer, "FILES_PER_TASK", 7)
    shared = importer.import_index(elsewhere, str(source), readers=2, events_per_save=400)

    one, two = alone.to_dict(), shared.to_dict()
    for report in (one, two):
        report.pop("seconds")
        report.pop("source")
    assert one == two
    assert len(alone.refused) == 3
    assert alone.confirmed_jobs == len(files)
    assert without_jobs(views(here)) == without_jobs(views(elsewhere))
    for ledger in (here, elsewhere):
        assert ledger.audit().consistent
        assert ledger.verify().ok
    assert here.db.query("SELECT COUNT(*) FROM view_versions WHERE state = 'yanked'")[0][0] == 1
    again = importer.import_index(elsewhere, str(source), readers=2)
    assert (again.accepted, again.present) == (0, shared.accepted)


@pytest.mark.parametrize("direct", [True, False])
def test_direct_events_are_the_mappers(ledgers: tuple[Ledger, Ledger], direct: bool) -> None:
    """Stored directly or through the mapper, the batched path stores the same events."""
    ledger = ledgers[0]
    app = ledger.app
    assert app._direct_encoding_holds()
    app._direct = direct
    rows = list(realdata.baseline(300))
    lines = [(n, realdata.index_line(c, v)) for n, (c, v) in enumerate(rows, start=1)]
    odd = {**realdata.index_line("dejavu", "1.0.0"), "links": 'a "quoted"\n\\ é \U0001f600'}
    lines.append((len(lines) + 1, odd))
    result = ledger.publish_many(lines, 'an "actor" é', events_per_save=97)
    assert result.refused == []
    assert result.accepted + result.present == len(lines)
    recorder: Any = app.recorder
    stored = list(recorder.select_notifications(start=None, limit=100_000))
    assert len(stored) == result.events
    # Every stored event reads back through the mapper as the event the library would make.
    for event in stored:
        again = app.mapper.to_stored_event(app.mapper.to_domain_event(event))
        assert (again.originator_id, again.originator_version, again.topic, again.state) == (
            event.originator_id,
            event.originator_version,
            event.topic,
            event.state,
        )
    # Each crate as the batched path left it equals the crate loaded from the store.
    for name in {c for c, _ in rows[:50]}:
        loaded = app.find_crate(name)
        assert loaded is not None
        assert loaded.versions == dict.fromkeys(loaded.spelling, "published")
    ledger.views.catch_up()
    assert ledger.db.query("SELECT COUNT(*) FROM view_versions")[0][0] == result.accepted
    assert ledger.verify().ok


def test_the_batched_crate_equals_the_stored_one(ledgers: tuple[Ledger, Ledger]) -> None:
    """The aggregate the direct path changes in memory is the one replaying its events gives."""
    ledger = ledgers[0]
    app: PublicationLedger = ledger.app
    versions = [f"1.0.{n}" for n in range(230)]  # crosses two snapshot intervals in one save
    line = realdata.index_line("serde", "1.0.0")
    checked = []
    for number, vers in enumerate(versions):
        fields = {**line, "vers": vers, "yanked": number % 7 == 0}
        checked.append((number, CheckedLine.of(parse_line(json.dumps(fields)))))
    kept: list[Crate] = []

    original = app._find_crates

    def find(names: Any, batch: Any) -> Any:
        found = original(names, batch)
        kept.extend(c for c in found.values() if c is not None)
        return found

    app._find_crates = find  # type: ignore[method-assign]
    app.publish_many(checked[:100], "test", keep_yanked=True)
    kept.clear()
    app.publish_many(checked[100:], "test", keep_yanked=True)
    (crate,) = kept
    loaded = app.repository.get(crate.id)
    assert isinstance(loaded, Crate)
    assert (loaded.version, loaded.versions, loaded.spelling) == (
        crate.version,
        crate.versions,
        crate.spelling,
    )
    assert loaded.modified_on == crate.modified_on
    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(crate.id))
    assert snapshots[-1].originator_version == crate.version == len(versions) + 1
