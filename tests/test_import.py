"""Adopting an existing cargo index built from the real crates.io data, on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from ledger.adapters import realdata
from ledger.adapters.git.index import GitIndex
from ledger.bootstrap import open_ledger
from ledger.domain.crate_files import crate_file
from ledger.domain.errors import NotFound, RemoteUnavailable
from ledger.domain.index_format import parse_line
from ledger.domain.names import collision_key, crate_from_path, index_path
from ledger.services.importing import METHOD, import_index
from ledger.services.ledger import Ledger
from ledger.settings import Settings
from projections.queries import live_versions

pytestmark = pytest.mark.skipif(not realdata.data_available(), reason=realdata.DATA_MISSING)

CRATES = 250
CONFIG = b'{"dl":"http://127.0.0.1/api/v1/crates","api":"http://127.0.0.1"}\n'


@pytest.fixture(scope="module")
def real_files() -> list[tuple[str, bytes]]:
    return list(realdata.baseline_files(CRATES))


def make_source(folder: Path, files: list[tuple[str, bytes]]) -> Path:
    """A bare repository whose master branch holds exactly ``files`` (and config.json)."""
    source = folder / "source.git"
    pygit2.init_repository(source, bare=True)
    with GitIndex.open(folder / "seed.git", str(source)) as seed:
        commit = seed.build_commit([("config.json", CONFIG), *files], "seed the index")
        assert seed.push(commit).status == "ok"
    return source


def source_files(source: Path) -> dict[str, bytes]:
    repo = pygit2.Repository(str(source))
    head = str(repo.references["refs/heads/master"].target)
    repo.free()
    with GitIndex.open(source.with_name("reader.git"), str(source)) as reader:
        assert reader.fetch() == head
        return dict(reader.files(head))


@pytest.fixture
def open_store(store_url: str, tmp_path: Path) -> Iterator[Ledger]:
    settings = Settings(
        store=store_url, index_dir=tmp_path / "index.git", remote=str(tmp_path / "source.git")
    )
    with open_ledger(settings) as ledger:
        yield ledger


def regenerated(ledger: Ledger, path: str) -> bytes | None:
    crate = crate_from_path(path)
    assert crate is not None
    return crate_file(live_versions(ledger.db, collision_key(crate)))


def test_import_adopts_every_line_and_confirms_its_jobs(
    open_store: Ledger, tmp_path: Path, real_files: list[tuple[str, bytes]]
) -> None:
    ledger = open_store
    source = make_source(tmp_path, real_files)
    lines = sum(data.count(b"\n") for _, data in real_files)

    result = ledger.import_index(str(source))

    assert result.head is not None
    assert (result.files, result.lines, result.accepted, result.present) == (CRATES, lines, lines, 0)
    assert result.refused == []
    assert result.confirmed_jobs == CRATES
    report = result.to_dict()
    assert set(report) >= {
        "source",
        "head",
        "files",
        "lines",
        "accepted",
        "present",
        "refused",
        "confirmed_jobs",
        "seconds",
    }
    assert report["source"] == str(source)
    json.dumps(report)

    audit = ledger.audit()
    assert audit.consistent
    assert audit.discrepancies == []

    # Every job the import created is confirmed against the source's head and completed.
    jobs = ledger.db.query("SELECT state, commit_id, actor FROM view_jobs")
    assert len(jobs) == CRATES
    assert {(state, commit, actor) for state, commit, actor in jobs} == {("completed", result.head, "import")}
    history = ledger.history(real_files[0][1].split(b'"')[3].decode())
    confirmed = [h for h in history if "IndexPushConfirmed" in json.dumps(h)]
    assert confirmed
    assert METHOD in json.dumps(confirmed[0])

    # The worker has nothing to push for an adopted index.
    sync = ledger.sync()
    assert (sync.jobs, sync.open_left, sync.commits) == (0, 0, [])

    # Round trip: each crate file regenerated from the database view equals the source's.
    files = source_files(source)
    files.pop("config.json")
    assert len(files) == CRATES
    for path, data in files.items():
        assert regenerated(ledger, path) == data, path


def test_second_import_adds_nothing(
    open_store: Ledger, tmp_path: Path, real_files: list[tuple[str, bytes]]
) -> None:
    ledger = open_store
    source = make_source(tmp_path, real_files[:60])
    first = ledger.import_index(str(source))
    position = ledger.views.head()

    second = ledger.import_index(f"file://{source}")

    assert second.accepted == 0
    assert second.present == first.accepted == first.lines
    assert second.confirmed_jobs == 0
    assert second.refused == []
    assert ledger.views.head() == position
    assert ledger.audit().consistent


def test_bad_lines_are_reported_and_the_rest_imported(open_store: Ledger, tmp_path: Path) -> None:
    ledger = open_store
    good = [realdata.render_line(realdata.index_line("kaze", f"0.1.{n}")) for n in range(4)]
    other = realdata.render_line(realdata.index_line("wasmer-runtime-core", "0.14.0"))
    build = realdata.render_line(realdata.index_line("kaze", "0.1.1+extra"))
    kaze = b"\n".join([good[0], b"{not json", good[1], other, build, b'{"name":"kaze"}', good[2], good[3]])
    files = [
        (index_path("kaze"), kaze + b"\n"),
        (index_path("wasmer-runtime-core"), other + b"\n"),
        ("README.md", b"not an index file\n"),
        ("ka/ze/wrong-place", good[0] + b"\n"),
    ]
    source = make_source(tmp_path, files)

    result = ledger.import_index(str(source))

    assert result.files == 2
    assert result.ignored_paths == 2
    assert result.lines == 9
    assert result.accepted == 5
    refused = [(r.path, r.line) for r in result.refused]
    assert refused == [("ka/ze/kaze", 2), ("ka/ze/kaze", 4), ("ka/ze/kaze", 5), ("ka/ze/kaze", 6)]
    errors = [r.error for r in result.refused]
    assert "not JSON" in errors[0]
    assert "wasmer-runtime-core" in errors[1]
    assert "repeats the version of line 3" in errors[2]
    assert "missing" in errors[3]
    assert result.to_dict()["refused"][0] == {"path": "ka/ze/kaze", "line": 2, "error": errors[0]}

    ledger.views.catch_up()
    versions = ledger.db.query("SELECT crate, version FROM view_versions ORDER BY seq")
    assert versions == [("kaze", f"0.1.{n}") for n in range(4)] + [("wasmer-runtime-core", "0.14.0")]
    assert ledger.audit().consistent


def test_yank_state_is_kept(open_store: Ledger, tmp_path: Path) -> None:
    ledger = open_store
    lines = [realdata.index_line("kaze", v) for v in ("0.1.5", "0.1.6", "0.1.7")]
    lines[1]["yanked"] = True
    data = b"".join(realdata.render_line(line) + b"\n" for line in lines)
    source = make_source(tmp_path, [(index_path("kaze"), data)])

    result = ledger.import_index(str(source))

    assert result.accepted == 3
    ledger.views.catch_up()
    states = ledger.db.query("SELECT version, state FROM view_versions ORDER BY seq")
    assert states == [("0.1.5", "published"), ("0.1.6", "yanked"), ("0.1.7", "published")]
    index = ledger.db.query("SELECT version, yanked FROM view_index ORDER BY version")
    assert index == [("0.1.5", 0), ("0.1.6", 1), ("0.1.7", 0)]
    assert ledger.audit().consistent
    assert regenerated(ledger, index_path("kaze")) == data
    # Yanked after import: unyank works on the adopted version.
    ledger.unyank("kaze", "0.1.6", "test")
    assert ledger.audit(grace=3600).counts["pending"] == 1


def test_a_publish_after_import_pushes_the_whole_file_unchanged_but_for_it(
    open_store: Ledger, tmp_path: Path, real_files: list[tuple[str, bytes]]
) -> None:
    ledger = open_store
    source = make_source(tmp_path, real_files[:40])
    ledger.import_index(str(source))
    path, before = real_files[7]
    crate = parse_line(before.split(b"\n")[0]).name

    ledger.publish(realdata.index_line(crate, "999.0.0"), "test")
    sync = ledger.sync()

    assert (sync.confirmed, sync.open_left) == (1, 0)
    files = source_files(source)
    added = realdata.render_line(realdata.index_line(crate, "999.0.0")) + b"\n"
    assert files[path] == before + added
    assert all(files[p] == d for p, d in real_files[:40] if p != path)
    assert ledger.audit().consistent


def test_a_source_without_the_branch_or_unreachable(open_store: Ledger, tmp_path: Path) -> None:
    empty = tmp_path / "empty.git"
    pygit2.init_repository(empty, bare=True)
    with pytest.raises(NotFound, match="no branch"):
        import_index(open_store, str(empty))
    with pytest.raises(RemoteUnavailable):
        import_index(open_store, "git://127.0.0.1:1/nothing.git")


def test_credentials_are_redacted_and_a_clone_folder_can_be_given(
    open_store: Ledger, tmp_path: Path, real_files: list[tuple[str, bytes]]
) -> None:
    source = make_source(tmp_path, real_files[:5])
    result = import_index(open_store, str(source), clone_dir=tmp_path / "given.git")
    assert (tmp_path / "given.git").is_dir()
    assert result.accepted > 0
    with pytest.raises(RemoteUnavailable) as caught:
        import_index(open_store, "http://user:secret@127.0.0.1:1/index.git")
    assert "secret" not in str(caught.value)


def test_batched_path_across_lookahead_windows_and_saves(
    open_store: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crate whose lines span read-ahead windows and saves keeps one aggregate, in order."""
    from ledger.services import publishing_bulk as application

    monkeypatch.setattr(application, "LOOKAHEAD", 3)
    rows = list(realdata.baseline(150))
    lines = [(n, realdata.index_line(c, v)) for n, (c, v) in enumerate(rows, start=1)]
    for events_per_save in (3, 7):
        result = open_store.publish_many(lines, "test", events_per_save=events_per_save)
        assert result.accepted + result.present == len(lines)
        assert result.refused == []
    open_store.views.catch_up()
    stored = open_store.db.query("SELECT crate, version FROM view_versions ORDER BY seq")
    assert stored == rows
    assert open_store.verify().ok
