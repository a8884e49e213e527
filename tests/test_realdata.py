"""The real crates.io data readers: real names, valid deterministic lines, well-placed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.adapters import realdata
from ledger.domain.index_format import parse_file, parse_line
from ledger.domain.names import crate_from_path, index_path, validate_name
from ledger.domain.versions import parse_version

pytestmark = pytest.mark.skipif(not realdata.data_available(), reason=realdata.DATA_MISSING)


def test_baseline_yields_real_names_and_versions_in_file_order() -> None:
    stats = realdata.ReadStats()
    rows = list(realdata.baseline(500, stats=stats))
    assert len(rows) == 500
    assert rows[0] == ("A-1", "0.1.0")
    assert stats.yielded == 500
    assert stats.skipped == 0
    for crate, version in rows:
        validate_name(crate)
        parse_version(version)
    crates = [c for c, _ in rows]
    # each crate's versions are contiguous (oldest first within a crate)
    runs = [c for i, c in enumerate(crates) if i == 0 or crates[i - 1] != c]
    assert len(runs) == len(set(runs))


def test_trace_yields_events_with_times_in_order() -> None:
    events = list(realdata.trace(300))
    assert len(events) == 300
    assert all(e.event in realdata.TRACE_EVENTS for e in events)
    assert [e.unix_ts for e in events] == sorted(e.unix_ts for e in events)
    first = events[0]
    assert isinstance(first, realdata.TraceEvent)
    assert first.unix_ts > 1_700_000_000
    validate_name(first.crate)


def test_limit_zero_and_none() -> None:
    assert list(realdata.baseline(0)) == []
    assert list(realdata.trace(0)) == []
    assert list(realdata.baseline_files(0)) == []


def test_index_line_passes_parse_line_and_is_deterministic() -> None:
    pool = [c for c, _ in realdata.baseline(2000)]
    with_deps = 0
    for event in realdata.trace(200):
        line = realdata.index_line(event.crate, event.version, deps_pool=pool)
        assert line == realdata.index_line(event.crate, event.version, deps_pool=pool)
        parsed = parse_line(line)
        assert parsed.name == event.crate
        assert parsed.vers == event.version
        assert parsed.cksum == realdata.checksum(event.crate, event.version)
        assert line["features"] == {}
        assert not parsed.yanked
        assert 0 <= len(line["deps"]) <= realdata.MAX_DEPS
        assert all(dep["name"] in pool and dep["req"].startswith("^") for dep in line["deps"])
        with_deps += bool(line["deps"])
        assert parse_line(realdata.render_line(line)).fields == parsed.fields
    assert 50 < with_deps < 200


def test_index_line_without_a_pool_has_no_deps() -> None:
    assert realdata.index_line("serde", "1.0.200")["deps"] == []
    assert realdata.index_line("serde", "1.0.200", deps_pool=["serde"])["deps"] == []


def test_baseline_files_are_parseable_and_at_their_paths() -> None:
    versions = list(realdata.baseline(3000))
    files = list(realdata.baseline_files(200))
    assert len(files) == 200
    assert files == list(realdata.baseline_files(200))
    seen: list[tuple[str, str]] = []
    for path, data in files:
        crate = crate_from_path(path)
        assert crate is not None
        assert data.endswith(b"\n")
        entries = parse_file(data)
        assert entries
        for _, parsed in entries:
            assert not isinstance(parsed, Exception)
            assert index_path(parsed.name) == path
            seen.append((parsed.name, parsed.vers))
    assert seen == versions[: len(seen)]


def test_missing_data_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(realdata.DATA_ENV, str(tmp_path))
    assert not realdata.data_available()
    with pytest.raises(realdata.DataMissing, match=realdata.DATA_ENV) as caught:
        next(realdata.baseline())
    assert str(tmp_path) in str(caught.value)


def test_data_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    found = realdata.data_dir()
    monkeypatch.setenv(realdata.DATA_ENV, str(found.parent))
    assert realdata.data_dir() == found
    monkeypatch.setenv(realdata.DATA_ENV, str(found))
    assert realdata.data_dir() == found


def test_bad_rows_are_counted_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    folder = tmp_path / realdata.DATASET
    folder.mkdir()
    rows = "good\t1.0.0\n9bad\t1.0.0\nfine\t1.0\nfine\t1.0.1\nonly-one-column\n"
    (folder / realdata.BASELINE).write_bytes(gzip.compress(rows.encode()))
    trace = (
        "1714397709\tpublish\tgood\t1.0.1\nnot-a-time\tpublish\tgood\t1.0.2\n1714397709\tsmash\tgood\t1.0.3\n"
    )
    (folder / realdata.TRACE).write_bytes(gzip.compress(trace.encode()))
    monkeypatch.setenv(realdata.DATA_ENV, str(folder))
    stats = realdata.ReadStats()
    assert list(realdata.baseline(stats=stats)) == [("good", "1.0.0"), ("fine", "1.0.1")]
    assert (stats.rows, stats.bad_names, stats.bad_versions, stats.bad_rows) == (5, 1, 1, 1)
    trace_stats = realdata.ReadStats()
    assert list(realdata.trace(stats=trace_stats)) == [
        realdata.TraceEvent(1714397709, "publish", "good", "1.0.1")
    ]
    assert trace_stats.bad_rows == 2
    assert len(trace_stats.to_dict()["examples"]) == 2
