"""Scanning the real index: full and incremental scans, the event they record, what they report."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pygit2

from ledger.bootstrap import open_ledger
from ledger.domain.index_format import fields_digest
from ledger.domain.names import index_path
from ledger.domain.real_lines import line_tag, read_line
from ledger.services.ledger import AsOf, Ledger
from ledger.settings import Settings
from ledger.testing import tamper
from tests.conftest import make_line

ACTOR = "alice"


def render(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def bare_remote(tmp_path: Path, name: str = "remote.git") -> Path:
    path = tmp_path / name
    pygit2.init_repository(str(path), bare=True)
    return path


@contextmanager
def opened(store_url: str, remote: Path | str, tmp_path: Path, clone: str = "clone.git") -> Iterator[Ledger]:
    settings = Settings(store=store_url, remote=str(remote), index_dir=tmp_path / clone)
    with open_ledger(settings) as ledger:
        yield ledger


def remote_head(remote: Path) -> str | None:
    repo = pygit2.Repository(str(remote))
    ref = repo.references.get("refs/heads/master")
    return None if ref is None else str(ref.target)


def remote_file(remote: Path, path: str) -> bytes | None:
    repo = pygit2.Repository(str(remote))
    ref = repo.references.get("refs/heads/master")
    if ref is None:
        return None
    tree = repo[ref.target].peel(pygit2.Commit).tree
    try:
        blob = tree[path]
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return bytes(blob.data)


def push_straight(remote: Path, files: Mapping[str, bytes | None], *, rewrite: bool = False) -> str:
    """Commit ``files`` (None deletes) straight into the remote's branch, bypassing the ledger."""
    return tamper.push_straight(remote, files, rewrite=rewrite)


def publish_and_sync(ledger: Ledger, *lines: dict[str, Any]) -> None:
    for line in lines:
        ledger.publish(line, ACTOR)
    result = ledger.sync()
    assert result.open_left == 0


def classes(found: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    return {(d["crate"], d["version"], d["class"]) for d in found}


class TestLineTags:
    def test_a_canonical_line_is_known_by_its_content_digest(self) -> None:
        """A line the ledger wrote is identified by hashing alone, yanked or not."""
        line = make_line("serde", "1.0.0")
        digest, yanked = line_tag(render(line))
        assert (digest, yanked) == (fields_digest(line), False)
        digest_yanked, flag = line_tag(render({**line, "yanked": True}))
        assert (digest_yanked, flag) == (digest, True)
        known = {digest: ("1.0.0", "1.0.0", "serde")}
        assert read_line(1, render({**line, "yanked": True}), known).entry == ["1.0.0", "1.0.0", True, digest]

    def test_an_unknown_line_is_parsed_and_a_broken_one_salvaged(self) -> None:
        """Lines the views do not know are parsed; an invalid line keeps its version when readable."""
        line = make_line("serde", "1.0.1")
        parsed = read_line(3, render(line), {})
        assert (parsed.version, parsed.key, parsed.yanked, parsed.error) == ("1.0.1", "1.0.1", False, None)
        broken = read_line(4, render({**line, "extra": 1}), {})
        assert broken.version == "1.0.1"
        assert broken.error is not None
        junk = read_line(5, b"not json", {})
        assert (junk.version, junk.key) == (None, None)
        assert junk.error is not None


class TestReadingTheIndex:
    def test_unordered_reading_yields_every_file_once(self, tmp_path: Path) -> None:
        """Reading files in pack-friendly order gives exactly the files of the commit."""
        from ledger.adapters.git.index import GitIndex

        files = {
            index_path(name): render(make_line(name, "1.0.0")) + b"\n" for name in ("a", "ab", "abc", "serde")
        }
        files["config.json"] = b"{}\n"
        with GitIndex.open(tmp_path / "index.git", str(tmp_path / "unused.git")) as index:
            commit = index.build_commit(files.items(), "all")
            assert (
                sorted(index.files_unordered(commit)) == sorted(index.files(commit)) == sorted(files.items())
            )


class TestScanScope:
    def test_first_scan_reads_every_file_and_later_scans_only_changed_ones(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """The first scan walks every crate file; the next examines only the files changed since."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(
                ledger, make_line("serde", "1.0.0"), make_line("ab", "0.1.0"), make_line("rand", "0.8.0")
            )
            first = ledger.scan_index()
            assert (first.full, first.files, first.examined) == (True, 3, 3)
            assert first.discrepancies == []
            assert first.observed == 0
            assert first.head == remote_head(remote)

            publish_and_sync(ledger, make_line("tokio", "1.0.0"))
            second = ledger.scan_index()
            assert (second.full, second.files, second.examined) == (False, 4, 1)
            assert second.discrepancies == []

            third = ledger.scan_index()
            assert (third.full, third.files, third.examined) == (False, 4, 0)

    def test_incremental_scans_count_removed_files(self, store_url: str, tmp_path: Path) -> None:
        """A file removed behind the ledger's back lowers the count and is reported lost."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"), make_line("rand", "0.8.0"))
            ledger.scan_index()
            push_straight(remote, {index_path("rand"): None})
            result = ledger.scan_index()
            assert (result.full, result.files, result.examined) == (False, 1, 1)
            assert classes(result.discrepancies) == {("rand", "0.8.0", "lost")}
            assert result.discrepancies[0]["detail"].endswith("the file is missing")

    def test_a_new_clone_scans_everything_again(self, store_url: str, tmp_path: Path) -> None:
        """When the last scanned commit is not in the local clone, the scan reads every file."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
            ledger.scan_index()
        push_straight(remote, {index_path("ghost"): render(make_line("ghost", "0.0.1"))}, rewrite=True)
        with opened(store_url, remote, tmp_path, clone="fresh.git") as ledger:
            result = ledger.scan_index()
            assert (result.full, result.files, result.examined) == (True, 2, 2)
            assert classes(result.discrepancies) == {("ghost", "0.0.1", "foreign")}

    def test_an_empty_remote_holds_nothing_the_registry_published(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """Against a remote without the branch, every published version is lost."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            ledger.publish(make_line("serde", "1.0.0"), ACTOR)
            result = ledger.scan_index()
            assert (result.head, result.files, result.examined) == (None, 0, 0)
            assert classes(result.discrepancies) == {("serde", "1.0.0", "lost")}


class TestScanRecord:
    def test_a_scan_is_an_event_in_the_timeline(self, store_url: str, tmp_path: Path) -> None:
        """Each scan records IndexScanned with the head, counts and discrepancies it found."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
            result = ledger.scan_index()
            scans = [r for r in ledger.timeline() if r["event"] == "IndexScanned"]
            assert len(scans) == 1
            record = scans[0]
            assert record["position"] == result.position
            assert (record["head"], record["files"], record["changed_files"]) == (result.head, 1, 1)
            assert record["discrepancies"] == 0
            assert record["base_position"] == result.base_position < result.position
            rows = ledger.db.query("SELECT head, files, changed_files FROM view_scans")
            assert rows == [(result.head, 1, 1)]
            summary = result.to_dict()
            assert summary["head"] == result.head
            assert (summary["files"], summary["examined"], summary["discrepancies"]) == (1, 1, 0)

    def test_audit_after_the_scan_sees_what_the_scan_saw(self, store_url: str, tmp_path: Path) -> None:
        """An audit at or after the scan's position reports what the real index holds; before it, not."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
            before = ledger.views.catch_up()
            push_straight(remote, {index_path("ghost"): render(make_line("ghost", "0.0.1"))})
            result = ledger.scan_index()
            assert classes(result.discrepancies) == {("ghost", "0.0.1", "foreign")}
            later = ledger.audit(at=AsOf(position=result.position))
            assert [(d.crate, d.version, d.cls) for d in later.discrepancies] == [
                ("ghost", "0.0.1", "foreign")
            ]
            assert ledger.audit(at=AsOf(position=before)).consistent
            assert not ledger.audit().consistent
            report = ledger.audit_scan()
            assert report.scan is not None
            assert (report.scan["examined"], report.scan["discrepancies"]) == (0, 0)
            assert [d.cls for d in report.discrepancies] == ["foreign"]

    def test_a_scan_never_confirms_anything(self, store_url: str, tmp_path: Path) -> None:
        """A commit the remote does not hold stays unseen, and the open job stays open and pending."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            publish_and_sync(ledger, make_line("serde", "1.0.0"))
            receipt = ledger.publish(make_line("serde", "1.1.0"), ACTOR)
            index = ledger.index()
            head = index.fetch()
            wanted = render(make_line("serde", "1.0.0")) + b"\n" + render(make_line("serde", "1.1.0")) + b"\n"
            assert index.commit(head, {index_path("serde"): wanted}, "never pushed") is not None
            result = ledger.scan_index()
            assert classes(result.discrepancies) == {("serde", "1.1.0", "lost")}
            assert result.observed == 0
            report = ledger.audit()
            assert [(d.version, d.cls, d.job) for d in report.discrepancies] == [
                ("1.1.0", "pending", str(receipt.job))
            ]
            events = {r["event"] for r in ledger.timeline() if r["position"] > receipt.position}
            assert events == {"IndexRemoteRegistered", "IndexScanned"}
            state = ledger.db.query("SELECT state FROM view_jobs WHERE job = ?", (str(receipt.job),))
            assert state == [("open",)]


class TestScanFindings:
    def test_unparseable_and_duplicate_lines_are_content_mismatches(
        self, store_url: str, tmp_path: Path
    ) -> None:
        """A line that is not an index line and a version written twice are both reported by line."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            one, two = make_line("serde", "1.0.0"), make_line("serde", "1.0.1")
            publish_and_sync(ledger, one, two)
            ledger.scan_index()
            data = render(one) + b"\n{broken\n" + render(two) + b"\n" + render(two) + b"\n"
            push_straight(remote, {index_path("serde"): data})
            result = ledger.scan_index()
            found = [(d["version"], d["class"], d.get("line_number")) for d in result.discrepancies]
            assert found == [(None, "content_mismatch", 2), ("1.0.1", "content_mismatch", 4)]
            assert "not a valid index line" in result.discrepancies[0]["detail"]
            assert "lines 3 and 4" in result.discrepancies[1]["detail"]
            assert result.observed == 0  # the versions held are still the ones believed
            assert ledger.audit().consistent

    def test_each_difference_with_the_registry_has_its_class(self, store_url: str, tmp_path: Path) -> None:
        """Lost, phantom, yank and content differences are told apart, line by line."""
        remote = bare_remote(tmp_path)
        with opened(store_url, remote, tmp_path) as ledger:
            lines = [make_line("serde", v) for v in ("1.0.0", "1.0.1", "1.0.2", "1.0.3")]
            publish_and_sync(ledger, *lines)
            ledger.delete("serde", "1.0.3", ACTOR, reason="malware")
            assert ledger.sync().confirmed == 1
            ledger.scan_index()
            data = b"".join(
                render(line) + b"\n"
                for line in [
                    {**lines[1], "yanked": True},
                    {**lines[2], "cksum": "0" * 64},
                    lines[3],
                    make_line("serde", "9.9.9"),
                ]
            )
            push_straight(remote, {index_path("serde"): data})
            result = ledger.scan_index()
            assert classes(result.discrepancies) == {
                ("serde", "1.0.0", "lost"),
                ("serde", "1.0.1", "yank_mismatch"),
                ("serde", "1.0.2", "content_mismatch"),
                ("serde", "1.0.3", "phantom"),
                ("serde", "9.9.9", "foreign"),
            }
            details = {d["version"]: d["detail"] for d in result.discrepancies}
            assert "deleted in the registry" in details["1.0.3"]
            assert "the ledger has no record of it" in details["9.9.9"]
            audit = ledger.audit()
            assert {(d.version, d.cls) for d in audit.discrepancies} == {
                ("1.0.0", "lost"),
                ("1.0.1", "yank_mismatch"),
                ("1.0.2", "content_mismatch"),
                ("1.0.3", "phantom"),
                ("9.9.9", "foreign"),
            }
