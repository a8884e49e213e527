"""The sparse edge: files pushed to a folder or a bucket, and read back over HTTP as cargo reads them."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ledger.adapters.git.index import GitIndex
from ledger.adapters.sparse import MARKER_KEY, FolderBackend, SparseIndex
from ledger.domain.errors import Invalid, RemoteUnavailable
from ledger.testing.s3 import S3Server, free_port

CONFIG = b'{"dl":"http://127.0.0.1:1/api/v1/crates","api":"http://127.0.0.1:1"}\n'
SERDE = b'{"name":"serde","vers":"1.0.0","deps":[],"cksum":"aa","features":{},"yanked":false}\n'
SERDE_2 = SERDE + b'{"name":"serde","vers":"1.0.1","deps":[],"cksum":"bb","features":{},"yanked":false}\n'
SYN = b'{"name":"syn","vers":"2.0.0","deps":[],"cksum":"cc","features":{},"yanked":false}\n'
A = b'{"name":"a","vers":"0.1.0","deps":[],"cksum":"dd","features":{},"yanked":false}\n'
FILES = {"config.json": CONFIG, "se/rd/serde": SERDE, "3/s/syn": SYN, "1/a": A}


# -- a web server in front of the folder origin ---------------------------------------------------


@dataclass
class Served:
    """What the test web server did, and the faults it plays per path."""

    root: Path
    url: str = ""
    """The public URL: the folder served under /index/."""
    faults: dict[str, tuple[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)
    """(method, path, client port, headers) of every request."""
    posted: list[Any] = field(default_factory=list)
    invalidation_status: int = 200


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: ClassVar[Served]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, *, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        served = self.served
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        served.requests.append(("POST", self.path, self.client_address[1], dict(self.headers)))
        served.posted.append(json.loads(body))
        self._send(served.invalidation_status, b"ok")

    def do_GET(self) -> None:
        served = self.served
        served.requests.append(("GET", self.path, self.client_address[1], dict(self.headers)))
        if not self.path.startswith("/index/"):
            self._send(404, b"")
            return
        rel = self.path[len("/index/") :]
        fault = served.faults.get(rel)
        if fault is not None and fault[0] == "status":
            self._send(fault[1], b"unavailable")
            return
        if fault is not None and fault[0] == "body":
            self._send(200, fault[1])
            return
        if fault is not None and fault[0] == "redirect":
            self.send_response(301)
            self.send_header("Location", fault[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = served.root.joinpath(*rel.split("/"))
        if any(part.startswith(".") for part in rel.split("/")) or not target.is_file():
            self._send(404, b"not found")
            return
        data = target.read_bytes()
        if fault is not None and fault[0] == "gzip":
            packed = gzip.compress(data)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
            return
        if fault is not None and fault[0] == "truncate":
            self._send(200, data[: fault[1]], length=len(data))
            self.close_connection = True
            return
        self._send(200, data)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A threaded web server on 127.0.0.1 serving the folder origin under /index/."""
    state = Served(tmp_path / "origin")
    handler = type("Handler", (_Handler,), {"served": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/index/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class CountingFolder(FolderBackend):
    """A folder origin that records the keys it reads and writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.got: list[str] = []
        self.put: list[str] = []

    def get(self, key: str) -> bytes | None:
        if key != MARKER_KEY:
            self.got.append(key)
        return super().get(key)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> dict[str, str]:
        items = list(items)
        self.put.extend(key for key, _ in items)
        return super().put_many(items)


def origin_files(root: Path) -> dict[str, bytes]:
    """Every file of a folder origin, the head marker aside."""
    found: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def marker(root: Path) -> str:
    return (root / MARKER_KEY).read_text()


@pytest.fixture
def backend(served: Served) -> CountingFolder:
    return CountingFolder(served.root)


@pytest.fixture
def index(tmp_path: Path, served: Served, backend: CountingFolder) -> Iterator[SparseIndex]:
    with SparseIndex.open(tmp_path / "shadow", served.url, backend) as opened:
        yield opened


def published(index: SparseIndex, files: dict[str, bytes] = FILES) -> str:
    """A first commit of ``files``, pushed."""
    commit = index.commit(None, files, "first")
    assert commit is not None
    report = index.push(commit)
    assert report.status == "ok", report
    return commit


# -- folder origin ----------------------------------------------------------------------------------


class TestPushAndReadBack:
    def test_push_then_read_back_confirms(self, index: SparseIndex, served: Served) -> None:
        """A pushed commit's files are in the origin, its marker names it, and the read-back confirms."""
        commit = index.commit(None, FILES, "first")
        assert commit is not None
        report = index.push(commit)
        assert (report.status, report.message) == ("ok", "uploaded 4 file(s), deleted 0")
        assert origin_files(served.root) == FILES
        assert marker(served.root) == f"{commit}\n"
        readback = index.read_back(commit, {"se/rd/serde": SERDE, "2/ab": None})
        assert readback.confirmed, readback
        assert (readback.remote_head, readback.method, readback.problems) == (commit, "sparse-http-get", ())

    def test_read_back_reads_as_cargo_does(self, index: SparseIndex, served: Served) -> None:
        """No cache busting: plain paths, no Cache-Control; and each read-back is a new connection."""
        commit = published(index)
        served.requests.clear()
        index.read_back(commit, {"se/rd/serde": SERDE, "1/a": A})
        first = list(served.requests)
        index.read_back(commit, {"se/rd/serde": SERDE})
        second = served.requests[len(first) :]
        assert [path for _, path, _, _ in first] == ["/index/1/a", "/index/config.json", "/index/se/rd/serde"]
        assert [path for _, path, _, _ in second] == ["/index/config.json", "/index/se/rd/serde"]
        assert len({port for _, _, port, _ in first}) == 1  # one connection, kept alive
        assert len({port for _, _, port, _ in second}) == 1
        assert {port for _, _, port, _ in first}.isdisjoint(port for _, _, port, _ in second)
        assert all(
            "Cache-Control" not in headers and "Pragma" not in headers for *_, headers in served.requests
        )

    def test_gzip_bodies_and_redirects_are_read_as_cargo_reads_them(
        self, index: SparseIndex, served: Served
    ) -> None:
        """A gzip-encoded answer is decoded, and a redirect is followed, before comparing."""
        commit = published(index)
        served.faults["se/rd/serde"] = ("gzip", None)
        served.faults["1/a"] = ("redirect", "/index/moved/1/a")
        (served.root / "moved" / "1").mkdir(parents=True)
        (served.root / "moved" / "1" / "a").write_bytes(A)
        readback = index.read_back(commit, {"se/rd/serde": SERDE, "1/a": A})
        assert readback.confirmed, readback
        assert "gzip" in served.requests[-1][3]["Accept-Encoding"]

    def test_second_push_uploads_only_the_changed_file(
        self, index: SparseIndex, backend: CountingFolder, served: Served
    ) -> None:
        """On top of the origin's head only the changed file is written."""
        first = published(index)
        backend.put.clear()
        second = index.commit(first, {"se/rd/serde": SERDE_2}, "second")
        assert second is not None
        report = index.push(second)
        assert (report.status, report.message) == ("ok", "uploaded 1 file(s), deleted 0")
        assert backend.put == ["se/rd/serde"]
        assert origin_files(served.root) == {**FILES, "se/rd/serde": SERDE_2}
        assert index.read_back(second, {"se/rd/serde": SERDE_2}).confirmed

    def test_a_large_push_reads_the_commit_in_one_walk_with_the_same_result(
        self, index: SparseIndex, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from ledger.adapters.sparse import index as sparse

        monkeypatch.setattr(sparse, "BULK_UPLOAD_PATHS", 1)
        first = published(index)
        second = index.commit(first, {"se/rd/serde": SERDE_2, "1/a": None}, "second")
        assert second is not None
        report = index.push(second)
        assert report.message is not None
        assert report.message.startswith("uploaded 1 file(s), deleted 1")
        assert origin_files(served.root) == dict(index.files_unordered(second))

    def test_a_deleted_file_must_404(self, index: SparseIndex, served: Served) -> None:
        """A deletion removes the file (and its emptied folders); absent is confirmed, present is not."""
        first = published(index)
        second = index.commit(first, {"se/rd/serde": None}, "delete serde")
        assert second is not None
        assert index.push(second).message == "uploaded 0 file(s), deleted 1"
        assert not (served.root / "se").exists()
        assert index.read_back(second, {"se/rd/serde": None}).confirmed
        readback = index.read_back(second, {"se/rd/serde": SERDE})
        assert readback.mismatched == ("se/rd/serde",)
        assert readback.problems == ("se/rd/serde: HTTP 404",)

    def test_a_file_still_served_after_its_deletion_is_a_mismatch(
        self, index: SparseIndex, served: Served
    ) -> None:
        """A path that must be absent but is still served (a stale edge) is not confirmed."""
        first = published(index)
        second = index.commit(first, {"1/a": None}, "delete a")
        assert second is not None
        index.push(second)
        served.faults["1/a"] = ("body", A)
        readback = index.read_back(second, {"1/a": None})
        assert not readback.confirmed
        assert readback.problems == (f"1/a: still served (HTTP 200, {len(A)} bytes), expected no file",)

    def test_a_foreign_write_makes_push_rejected_and_nothing_written(
        self, index: SparseIndex, served: Served
    ) -> None:
        """Another writer moved the marker: the push is refused as non-fast-forward, and writes nothing."""
        first = published(index)
        foreign = "f" * 40
        (served.root / MARKER_KEY).write_text(f"{foreign}\n")
        (served.root / "2").mkdir()
        (served.root / "2" / "ab").write_bytes(b'{"name":"ab"}\n')
        before = origin_files(served.root)
        second = index.commit(first, {"se/rd/serde": SERDE_2}, "second")
        assert second is not None
        report = index.push(second)
        assert report.status == "rejected"
        assert report.message == (
            f"non-fast-forward: the sparse index's head is ffffffffffff, not an ancestor of {second[:12]}"
        )
        assert origin_files(served.root) == before
        assert marker(served.root) == f"{foreign}\n"
        readback = index.read_back(second, {"se/rd/serde": SERDE_2})
        assert (readback.remote_head, readback.contains_commit) == (foreign, False)
        assert readback.problems[0].startswith("se/rd/serde: stale or different content (sha256 ")

    def test_a_push_that_does_not_descend_from_the_head_is_rejected(self, index: SparseIndex) -> None:
        """A commit beside the origin's head (not on top of it) is refused."""
        published(index)
        beside = index.commit(None, {"1/a": A}, "unrelated")
        assert beside is not None
        report = index.push(beside)
        assert report.status == "rejected"
        assert "non-fast-forward" in (report.message or "")

    def test_a_fresh_shadow_fetches_by_listing_and_pushes_on_top(
        self, index: SparseIndex, served: Served, tmp_path: Path
    ) -> None:
        """Another machine (an empty shadow) rebuilds the head from the listing, and its push works;
        the first machine then surveys the second's head and pushes on top in turn."""
        published(index)
        with SparseIndex.open(tmp_path / "other", served.url, str(served.root)) as other:
            head = other.fetch()
            assert head is not None
            assert dict(other.files_unordered(head)) == FILES
            assert other.fetch() == head
            second = other.commit(head, {"se/rd/serde": SERDE_2, "1/a": None}, "elsewhere")
            assert second is not None
            report = other.push(second)
            assert (report.status, report.message) == ("ok", "uploaded 1 file(s), deleted 1")
            assert other.read_back(second, {"se/rd/serde": SERDE_2, "1/a": None}).confirmed
        mine = index.fetch()
        assert mine is not None
        assert dict(index.files_unordered(mine)) == {k: v for k, v in FILES.items() if k != "1/a"} | {
            "se/rd/serde": SERDE_2
        }
        third = index.commit(mine, {"2/ab": b'{"name":"ab"}\n'}, "back here")
        assert third is not None
        assert index.push(third).status == "ok"
        assert index.read_back(third, {"2/ab": b'{"name":"ab"}\n'}).confirmed

    def test_an_index_not_written_by_the_ledger_is_surveyed(self, index: SparseIndex, served: Served) -> None:
        """Files without a marker: fetch lists them, and a push on top writes only its change."""
        for path, data in FILES.items():
            target = served.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        head = index.fetch()
        assert head is not None
        assert dict(index.files_unordered(head)) == FILES
        second = index.commit(head, {"1/a": None}, "drop a")
        assert second is not None
        assert index.push(second).message == "uploaded 0 file(s), deleted 1"
        assert marker(served.root) == f"{second}\n"

    def test_fetch_of_an_empty_origin_is_none(self, index: SparseIndex) -> None:
        """No marker and no files: no index yet, and the first push writes every file."""
        assert index.fetch() is None
        assert index.survey() is None
        published(index)


class TestSurvey:
    def test_survey_reads_only_what_changed(
        self, index: SparseIndex, backend: CountingFolder, served: Served, tmp_path: Path
    ) -> None:
        """Out-of-band changes are seen by a survey, which downloads only the changed file."""
        commit = published(index)
        assert index.survey() == commit  # the push's own files are known: nothing is read
        assert backend.got == []
        (served.root / "se" / "rd" / "serde").write_bytes(SERDE_2)
        (served.root / "1" / "a").unlink()
        surveyed = index.survey()
        assert surveyed is not None
        assert surveyed != commit
        assert backend.got == ["se/rd/serde"]
        expected = {**FILES, "se/rd/serde": SERDE_2}
        del expected["1/a"]
        assert dict(index.files_unordered(surveyed)) == expected
        backend.got.clear()
        assert index.survey() == surveyed
        assert backend.got == []
        # The marker still names the pushed commit, but the files changed under it: a fetch now
        # answers with what the survey found, so the next push builds on the files as they are.
        assert index.fetch() == surveyed

    def test_first_survey_reads_every_file_then_only_changes(
        self, index: SparseIndex, served: Served, tmp_path: Path
    ) -> None:
        """A survey from a fresh shadow reads the whole origin once, later ones what changed."""
        published(index)
        counting = CountingFolder(served.root)
        with SparseIndex.open(tmp_path / "scan", served.url, counting) as scanner:
            head = scanner.survey()
            assert sorted(counting.got) == sorted(FILES)
            counting.got.clear()
            (served.root / "3" / "s" / "syn").write_bytes(SYN + SYN)
            again = scanner.survey()
            assert counting.got == ["3/s/syn"]
            assert again is not None
            assert head is not None
            assert scanner.changed_paths(head, again) == ["3/s/syn"]

    def test_pushes_are_carried_into_the_survey_by_a_journal(
        self, index: SparseIndex, backend: CountingFolder, served: Served, tmp_path: Path
    ) -> None:
        """A push appends what it wrote to a journal, not the whole listing again; a process
        opening the shadow afterwards folds the journal in and reads nothing."""
        first = published(index)
        shadow = tmp_path / "shadow"
        listing = (shadow / "sparse-survey.json").read_bytes()
        second = index.commit(first, {"se/rd/serde": SERDE_2}, "second")
        assert second is not None
        assert index.push(second).status == "ok"
        assert (shadow / "sparse-survey.json").read_bytes() == listing, "the listing is not rewritten"
        journal = (shadow / "sparse-survey.journal").read_text().splitlines()
        assert [json.loads(line)["commit"] for line in journal] == [second]
        backend.got.clear()
        with SparseIndex.open(shadow, served.url, backend) as again:
            assert again.survey() == second
        assert backend.got == []

    def test_a_torn_journal_costs_one_full_read(
        self, index: SparseIndex, served: Served, tmp_path: Path
    ) -> None:
        first = published(index)
        second = index.commit(first, {"se/rd/serde": SERDE_2}, "second")
        assert second is not None
        index.push(second)
        shadow = tmp_path / "shadow"
        with (shadow / "sparse-survey.journal").open("a") as out:
            out.write('{"commit": "cut sh')
        counting = CountingFolder(served.root)
        with SparseIndex.open(shadow, served.url, counting) as again:
            head = again.survey()
            assert head is not None
            assert dict(again.files_unordered(head)) == {**FILES, "se/rd/serde": SERDE_2}
        assert sorted(counting.got) == sorted(FILES), "every file read again, once"


class TestReadBackProblems:
    def test_http_503(self, index: SparseIndex, served: Served) -> None:
        """A file answered with 503 is mismatched, and the problem says so."""
        commit = published(index)
        served.faults["se/rd/serde"] = ("status", 503)
        readback = index.read_back(commit, {"se/rd/serde": SERDE, "1/a": A})
        assert not readback.confirmed
        assert readback.contains_commit
        assert readback.mismatched == ("se/rd/serde",)
        assert readback.problems == ("se/rd/serde: HTTP 503",)

    def test_a_read_back_shared_over_connections_finds_the_same(
        self, index: SparseIndex, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Many files are read on several connections at once, with the same verdicts."""
        from ledger.adapters.sparse import index as sparse

        monkeypatch.setattr(sparse, "READ_BACK_SHARED_FROM", 1)
        commit = published(index)
        assert index.read_back(commit, FILES).confirmed
        served.faults["se/rd/serde"] = ("status", 503)
        readback = index.read_back(commit, FILES)
        assert readback.mismatched == ("se/rd/serde",)
        assert readback.problems == ("se/rd/serde: HTTP 503",)

    def test_truncated_body(self, index: SparseIndex, served: Served) -> None:
        """A body cut short of its Content-Length is reported as truncated, and the next file still reads."""
        commit = published(index)
        served.faults["se/rd/serde"] = ("truncate", 20)
        readback = index.read_back(commit, {"se/rd/serde": SERDE, "3/s/syn": SYN})
        assert readback.mismatched == ("se/rd/serde",)
        assert readback.problems == (f"se/rd/serde: truncated: 20 of {len(SERDE)} bytes",)

    def test_the_file_of_another_crate(self, index: SparseIndex, served: Served) -> None:
        """A path serving another crate's file names that crate."""
        commit = published(index)
        served.faults["se/rd/serde"] = ("body", SYN)
        readback = index.read_back(commit, {"se/rd/serde": SERDE})
        assert readback.problems == ("se/rd/serde: serves the file of crate 'syn'",)

    def test_stale_content(self, index: SparseIndex, served: Served) -> None:
        """An older version of the file is reported as stale, with both digests."""
        first = published(index)
        second = index.commit(first, {"se/rd/serde": SERDE_2}, "second")
        assert second is not None
        index.push(second)
        served.faults["se/rd/serde"] = ("body", SERDE)
        readback = index.read_back(second, {"se/rd/serde": SERDE_2})
        assert readback.contains_commit
        assert not readback.confirmed
        (line,) = readback.problems
        assert line.startswith("se/rd/serde: stale or different content (sha256 ")
        assert ", expected " in line

    def test_config_json_is_checked_against_the_commit(self, index: SparseIndex, served: Served) -> None:
        """config.json must be the commit's own even when it is not among the expected paths."""
        commit = published(index)
        served.faults["config.json"] = ("body", b'{"dl":"elsewhere"}\n')
        readback = index.read_back(commit, {"1/a": A})
        assert readback.mismatched == ("config.json",)
        assert readback.problems[0].startswith("config.json: stale or different content")

    def test_config_json_is_not_required_when_the_commit_has_none(self, index: SparseIndex) -> None:
        """A commit without config.json does not ask for one."""
        commit = published(index, {"1/a": A})
        assert index.read_back(commit, {"1/a": A}).confirmed

    def test_an_unreachable_public_url_raises(self, tmp_path: Path, served: Served) -> None:
        """Nothing listening at the public URL: the read-back raises RemoteUnavailable."""
        dead = f"http://127.0.0.1:{free_port()}/index/"
        with SparseIndex.open(tmp_path / "s", dead, str(served.root), connect_timeout_ms=2000) as index:
            commit = published(index)
            with pytest.raises(RemoteUnavailable, match="refused"):
                index.read_back(commit, {"1/a": A})


class TestInvalidation:
    def test_changed_paths_are_posted(self, tmp_path: Path, served: Served) -> None:
        """After a push the public paths of the changed files are posted to the invalidation URL."""
        invalidate = served.url.replace("/index/", "/invalidate")
        with SparseIndex.open(
            tmp_path / "s", served.url, str(served.root), invalidate_url=invalidate
        ) as index:
            first = published(index)
            second = index.commit(first, {"se/rd/serde": SERDE_2, "1/a": None}, "second")
            assert second is not None
            report = index.push(second)
        assert report.status == "ok"
        assert served.posted[-1] == {"paths": ["/index/1/a", "/index/se/rd/serde"]}
        assert "invalidation of 2 path(s) requested" in (report.message or "")

    def test_a_whole_index_is_invalidated_by_one_wildcard(self, tmp_path: Path, served: Served) -> None:
        """Past the paths one invalidation may name, the index's prefix with a wildcard."""
        from ledger.adapters.sparse import index as sparse

        invalidate = served.url.replace("/index/", "/invalidate")
        many = {f"4/a{n:02d}/a{n:02d}x": f'{{"name":"a{n:02d}x"}}\n'.encode() for n in range(12)}
        original = sparse.INVALIDATION_PATHS
        sparse.INVALIDATION_PATHS = 10
        try:
            with SparseIndex.open(
                tmp_path / "s", served.url, str(served.root), invalidate_url=invalidate
            ) as index:
                commit = index.commit(None, {**FILES, **many}, "first")
                assert commit is not None
                assert index.push(commit).status == "ok"
        finally:
            sparse.INVALIDATION_PATHS = original
        assert served.posted[-1] == {"paths": ["/index/*"]}

    def test_a_failed_invalidation_is_reported_not_fatal(self, tmp_path: Path, served: Served) -> None:
        """The invalidation answering 500 is told in the message; the push itself is ok."""
        served.invalidation_status = 500
        invalidate = served.url.replace("/index/", "/invalidate")
        with SparseIndex.open(
            tmp_path / "s", served.url, str(served.root), invalidate_url=invalidate
        ) as index:
            commit = index.commit(None, FILES, "first")
            assert commit is not None
            report = index.push(commit)
            assert report.status == "ok"
            assert "invalidation failed" in (report.message or "")
            assert "HTTP 500" in (report.message or "")
            assert index.read_back(commit, FILES).confirmed


class TestOpenAndErrors:
    @pytest.mark.parametrize(
        "origin",
        ["relative/path", "", "http://example.org/index", "s3://", "s3://Bad_Bucket/x", "file://host/srv/x"],
    )
    def test_bad_origins_are_invalid(self, tmp_path: Path, origin: str) -> None:
        """An origin that names no folder or bucket is refused, naming it."""
        with pytest.raises(Invalid, match="origin"):
            SparseIndex.open(tmp_path / "s", "http://127.0.0.1:1/index/", origin)

    @pytest.mark.parametrize("public", ["http://127.0.0.1:1/index", "ftp://host/index/", "http:///index/"])
    def test_bad_public_urls_are_invalid(self, tmp_path: Path, public: str) -> None:
        """A public URL cargo could not use (no trailing slash, not http, no host) is refused."""
        with pytest.raises(Invalid, match="public URL"):
            SparseIndex.open(tmp_path / "s", public, str(tmp_path / "origin"))

    def test_remote_url_and_branch(self, tmp_path: Path) -> None:
        """The remote URL is cargo's sparse+ URL with the credentials removed."""
        with SparseIndex.open(
            tmp_path / "s", "https://user:secret@cdn.example.org/index/", f"file://{tmp_path}/o"
        ) as index:
            assert index.remote_url == "sparse+https://cdn.example.org/index/"
            assert index.branch == "sparse"
            assert index.origin == str(tmp_path / "o")

    def test_an_unwritable_origin_is_a_push_error(self, tmp_path: Path, served: Served) -> None:
        """An origin that cannot be written gives an error report, not a traceback."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with SparseIndex.open(tmp_path / "s", served.url, str(blocker / "origin")) as index:
            commit = index.commit(None, FILES, "first")
            assert commit is not None
            report = index.push(commit)
        assert report.status == "error"
        assert str(blocker / "origin") in (report.message or "")

    def test_files_are_those_of_a_git_commit_of_the_same_changes(
        self, index: SparseIndex, served: Served, tmp_path: Path
    ) -> None:
        """The origin holds byte for byte what a git index commit of the same changes holds."""
        changes: list[dict[str, bytes | None]] = [FILES, {"se/rd/serde": SERDE_2, "1/a": None}]
        with GitIndex.open(tmp_path / "git", str(tmp_path / "unused.git")) as git:
            git_head: str | None = None
            head: str | None = None
            for step in changes:
                git_head = git.commit(git_head, step, "step")
                head = index.commit(head, step, "step")
                assert head is not None
                assert index.push(head).status == "ok"
            assert git_head is not None
            assert head is not None
            expected = dict(git.files_unordered(git_head))
        assert origin_files(served.root) == expected
        assert dict(index.files_unordered(head)) == expected


# -- S3 origin --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


class TestS3:
    def test_push_read_back_and_a_fresh_shadow(self, s3_env: S3Server, tmp_path: Path) -> None:
        """Against a bucket serving as its own public URL: push, read back, delete, and a second machine."""
        s3_env.create_bucket("index-one")
        public = s3_env.public_url("index-one", "cargo")
        with SparseIndex.open(tmp_path / "a", public, "s3://index-one/cargo") as index:
            assert index.fetch() is None
            first = published(index)
            assert index.read_back(first, {"se/rd/serde": SERDE, "2/ab": None}).confirmed
            second = index.commit(first, {"se/rd/serde": SERDE_2, "1/a": None}, "second")
            assert second is not None
            report = index.push(second)
            assert (report.status, report.message) == ("ok", "uploaded 1 file(s), deleted 1")
            readback = index.read_back(second, {"se/rd/serde": SERDE_2, "1/a": None})
            assert readback.confirmed, readback
            stale = index.read_back(second, {"1/a": A})
            assert stale.problems == ("1/a: HTTP 404",)
        client = s3_env.client()
        keys = {item["Key"] for item in client.list_objects_v2(Bucket="index-one")["Contents"]}
        client.close()
        assert keys == {"cargo/config.json", "cargo/se/rd/serde", "cargo/3/s/syn", "cargo/.ledger/head"}
        with SparseIndex.open(tmp_path / "b", public, "s3://index-one/cargo") as other:
            head = other.fetch()
            assert head is not None
            assert dict(other.files_unordered(head)) == {
                "config.json": CONFIG,
                "se/rd/serde": SERDE_2,
                "3/s/syn": SYN,
            }
            third = other.commit(head, {"1/a": A}, "third")
            assert third is not None
            assert other.push(third).status == "ok"
            assert other.read_back(third, {"1/a": A}).confirmed

    def test_a_missing_bucket_is_unavailable_naming_it(self, s3_env: S3Server, tmp_path: Path) -> None:
        """A bucket that does not exist: fetch raises RemoteUnavailable and push reports an error, naming it."""
        public = s3_env.public_url("no-such-bucket", "cargo")
        with SparseIndex.open(tmp_path / "s", public, "s3://no-such-bucket/cargo") as index:
            with pytest.raises(RemoteUnavailable, match="no-such-bucket") as caught:
                index.fetch()
            assert "does not exist" in caught.value.message
            commit = index.commit(None, FILES, "first")
            assert commit is not None
            report = index.push(commit)
        assert report.status == "error"
        assert "no-such-bucket" in (report.message or "")
        assert report.error_kind == "other"

    def test_an_unreachable_endpoint_is_a_push_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Nothing listening at the S3 endpoint: the push reports an unreachable error."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        dead = f"http://127.0.0.1:{free_port()}"
        with SparseIndex.open(tmp_path / "s", f"{dead}/b/", "s3://bucket/x", endpoint_url=dead) as index:
            commit = index.commit(None, FILES, "first")
            assert commit is not None
            report = index.push(commit)
        assert report.status == "error"
        assert report.error_kind == "unreachable", report
