"""The CDN edge in front of a sparse index, over real HTTP: caching, invalidation and each fault."""

from __future__ import annotations

import functools
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ledger.testing.cdn import UNSIGNED_S3_AUTHORIZATION, CdnFront

ROOT = Path(__file__).resolve().parents[1]
SERDE = "se/rd/serde"
TOKIO = "to/ki/tokio"
CONFIG = b'{"dl": "http://127.0.0.1:1/api/v1/crates", "api": "http://127.0.0.1:1"}\n'


def line(name: str, vers: str) -> bytes:
    return (
        json.dumps({"name": name, "vers": vers, "deps": [], "cksum": "0" * 64, "features": {}}).encode()
        + b"\n"
    )


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def request(
    url: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a connection of its own, the body read in full."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def poll(until: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    for rel, data in {
        SERDE: line("serde", "1.0.0"),
        TOKIO: line("tokio", "1.0.0"),
        "config.json": CONFIG,
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def front(origin: Path) -> Iterator[CdnFront]:
    with CdnFront(origin) as cdn:
        yield cdn


def get(front: CdnFront, rel: str, **headers: str) -> Reply:
    return request(front.url, f"/index/{rel}", headers={k.replace("_", "-"): v for k, v in headers.items()})


def invalidate(front: CdnFront, *paths: str) -> Reply:
    return request(front.url, "/_invalidate", method="POST", body=json.dumps({"paths": list(paths)}).encode())


def test_fresh_by_default_after_the_origin_changes(front: CdnFront, origin: Path) -> None:
    """With ttl=0 and no fault every GET revalidates, so a changed file is served at once."""
    assert front.url == f"http://127.0.0.1:{front.port}/index/"
    assert front.invalidate_url == f"http://127.0.0.1:{front.port}/_invalidate"
    assert get(front, SERDE).body == line("serde", "1.0.0")
    (origin / SERDE).write_bytes(line("serde", "1.0.0") + line("serde", "1.0.1"))
    reply = get(front, SERDE)
    assert reply.status == 200
    assert reply.body.endswith(line("serde", "1.0.1"))
    assert reply.headers["X-Cache"] == "Miss"
    assert front.origin_reads == 2
    assert front.requests == [("GET", f"/index/{SERDE}", 200)] * 2


def test_headers_etag_304_and_head(front: CdnFront, origin: Path) -> None:
    """ETag is the quoted sha256 of the body; If-None-Match gives 304; HEAD has headers and no body."""
    import hashlib

    first = get(front, SERDE)
    etag = first.headers["ETag"]
    assert etag == f'"{hashlib.sha256(first.body).hexdigest()}"'
    assert first.headers["Content-Type"] == "text/plain"
    assert int(first.headers["Content-Length"]) == len(first.body)
    assert first.headers["Last-Modified"]
    assert get(front, "config.json").headers["Content-Type"] == "application/json"

    same = get(front, SERDE, If_None_Match=etag)
    assert (same.status, same.body, same.headers["ETag"]) == (304, b"", etag)
    since = get(front, SERDE, If_Modified_Since=first.headers["Last-Modified"])
    assert since.status == 304

    head = request(front.url, f"/index/{SERDE}", method="HEAD")
    assert (head.status, head.body, head.headers["ETag"]) == (200, b"", etag)
    assert int(head.headers["Content-Length"]) == len(first.body)

    (origin / SERDE).write_bytes(line("serde", "2.0.0"))
    changed = get(front, SERDE, If_None_Match=etag)
    assert changed.status == 200
    assert changed.headers["ETag"] != etag
    assert changed.body == line("serde", "2.0.0")


def test_paths_outside_the_prefix_and_traversal(front: CdnFront) -> None:
    """Outside /index/ and missing files are 404; a .. segment, even percent-encoded, is 400."""
    assert get(front, "no/su/nosuch").status == 404
    assert request(front.url, "/other/se/rd/serde").status == 404
    assert request(front.url, "/index/").status == 404
    assert request(front.url, "/index/../origin/config.json").status == 400
    assert request(front.url, "/index/se/%2e%2e/%2e%2e/config.json").status == 400
    assert request(front.url, "/../index/config.json").status == 400
    reply = request(front.url, "/index/..%2f..%2fetc/passwd")
    assert reply.status == 400


def test_ttl_cache_and_the_invalidate_endpoint(origin: Path) -> None:
    """With a ttl the edge serves its copy until /_invalidate drops it; public and relative paths work."""
    with CdnFront(origin, ttl=60) as front:
        get(front, SERDE)
        get(front, TOKIO)
        (origin / SERDE).write_bytes(line("serde", "9.0.0"))
        (origin / TOKIO).write_bytes(line("tokio", "9.0.0"))
        cached = get(front, SERDE)
        assert cached.body == line("serde", "1.0.0")
        assert cached.headers["X-Cache"] == "Hit"
        assert front.origin_reads == 2

        reply = invalidate(front, f"/index/{SERDE}", TOKIO)
        assert reply.status == 200
        assert json.loads(reply.body) == {"invalidated": 2}
        assert get(front, SERDE).body == line("serde", "9.0.0")
        assert get(front, TOKIO).body == line("tokio", "9.0.0")

        (origin / SERDE).write_bytes(line("serde", "9.0.1"))
        assert json.loads(invalidate(front, "/index/*").body) == {"invalidated": 1}
        assert get(front, SERDE).body == line("serde", "9.0.1")

        bad = request(front.url, "/_invalidate", method="POST", body=b"{not json")
        assert bad.status == 400
        assert request(front.url, "/_invalidate", method="POST", body=b'{"paths": "x"}').status == 400
        assert invalidate(front, "/index/../x").status == 400
        assert request(front.url, "/_invalidate").status == 404
        assert ("POST", "/_invalidate", 400) in front.requests


def test_stale_serves_the_old_copy_for_seconds_then_turns_fresh(front: CdnFront, origin: Path) -> None:
    """A slow invalidation: the cached copy outlives the origin change and an invalidation, then expires."""
    front.fault("stale", seconds=0.5)
    assert get(front, SERDE).body == line("serde", "1.0.0")
    (origin / SERDE).write_bytes(line("serde", "2.0.0"))
    assert get(front, SERDE).body == line("serde", "1.0.0")
    assert invalidate(front, SERDE).status == 200
    stale = get(front, SERDE)
    assert stale.body == line("serde", "1.0.0")
    assert stale.headers["X-Cache"] == "Hit"
    poll(lambda: get(front, SERDE).body == line("serde", "2.0.0"))
    assert get(front, "config.json").headers["X-Cache"] == "Miss"  # config.json only when named


def test_ignore_invalidation_until_heal(front: CdnFront, origin: Path) -> None:
    """Invalidations are answered 200 and do nothing; copies never expire until heal()."""
    get(front, SERDE)
    front.fault("ignore_invalidation")
    (origin / SERDE).write_bytes(line("serde", "2.0.0"))
    assert get(front, SERDE).body == line("serde", "1.0.0")
    reply = invalidate(front, SERDE)
    assert (reply.status, json.loads(reply.body)) == (200, {"invalidated": 1})
    assert get(front, SERDE).body == line("serde", "1.0.0")
    assert front.origin_reads == 1
    front.heal()
    assert get(front, SERDE).body == line("serde", "2.0.0")


def test_missing_new_answers_404_for_a_new_file(front: CdnFront, origin: Path) -> None:
    """A file the edge has not held (or held as 404) stays 404; files it held are served."""
    new = "ne/w-/new-crate"
    assert get(front, new).status == 404
    get(front, SERDE)
    front.fault("missing_new")
    (origin / new).parent.mkdir(parents=True)
    (origin / new).write_bytes(line("new-crate", "0.1.0"))
    assert get(front, new).status == 404
    assert get(front, TOKIO).status == 404  # never cached: new to the edge
    assert get(front, SERDE).status == 200
    front.heal()
    assert get(front, new).body == line("new-crate", "0.1.0")


def test_unavailable_503_and_times_once(front: CdnFront) -> None:
    """503 with Retry-After: 1; times=1 spends the fault on one request."""
    front.fault("unavailable", times=1)
    reply = get(front, SERDE)
    assert (reply.status, reply.headers["Retry-After"]) == (503, "1")
    assert get(front, SERDE).status == 200
    assert front.faults == []
    front.fault("unavailable")
    assert get(front, SERDE).status == 503
    assert get(front, "config.json").status == 200
    front.heal()
    assert get(front, SERDE).status == 200


def test_truncated_body_is_an_incomplete_read(front: CdnFront) -> None:
    """The full Content-Length is announced, half the body sent, the connection closed."""
    front.fault("truncated", paths=[f"/index/{SERDE}"])
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    try:
        conn.request("GET", f"/index/{SERDE}")
        response = conn.getresponse()
        assert int(response.headers["Content-Length"]) == len(line("serde", "1.0.0"))
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert get(front, TOKIO).body == line("tokio", "1.0.0")  # paths limits the fault


def test_wrong_crate_serves_another_crates_file(front: CdnFront, origin: Path) -> None:
    """200 with another crate's body: another file of the origin, or a not-<name> line."""
    front.fault("wrong_crate", paths=[SERDE])
    reply = get(front, SERDE)
    assert reply.status == 200
    assert json.loads(reply.body)["name"] == "tokio"
    front.heal()
    assert get(front, SERDE).body == line("serde", "1.0.0")

    (origin / TOKIO).unlink()
    with CdnFront(origin) as alone:
        alone.fault("wrong_crate", times=1)
        assert json.loads(get(alone, SERDE).body)["name"] == "not-serde"
        assert get(alone, SERDE).body == line("serde", "1.0.0")


def test_hang_answers_nothing(front: CdnFront) -> None:
    """The request is accepted and not answered; heal() releases it."""
    front.fault("hang")
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=0.3)
    try:
        conn.request("GET", f"/index/{SERDE}")
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()
    front.heal()
    assert get(front, SERDE).status == 200


class _Bucket(SimpleHTTPRequestHandler):
    """Files of a folder; those under /private/ only for requests with an Authorization header."""

    def do_GET(self) -> None:
        if self.path.startswith("/private/") and "Authorization" not in self.headers:
            self.send_error(403)
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_origin(tmp_path: Path, origin: Path) -> None:
    """An HTTP origin with a path prefix, as an S3 path-style bucket URL: its 404 is a 404, its other
    errors are passed on uncached, origin_headers reach it."""
    (tmp_path / "bucket").mkdir()
    origin.rename(tmp_path / "bucket" / "prefix")
    (tmp_path / "private").symlink_to(tmp_path / "bucket")
    handler = functools.partial(_Bucket, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/bucket/prefix/"
        with CdnFront(base) as front:
            assert get(front, SERDE).body == line("serde", "1.0.0")
            assert get(front, "no/su/nosuch").status == 404
            (tmp_path / "bucket" / "prefix" / SERDE).write_bytes(line("serde", "3.0.0"))
            assert get(front, SERDE).body == line("serde", "3.0.0")
            assert front.origin_reads == 3
            front.fault("stale", seconds=30)
            (tmp_path / "bucket" / "prefix" / SERDE).write_bytes(line("serde", "4.0.0"))
            assert get(front, SERDE).body == line("serde", "3.0.0")
        private = f"http://127.0.0.1:{server.server_address[1]}/private/prefix/"
        with CdnFront(private) as front:
            assert get(front, SERDE).status == 403
            assert get(front, SERDE).status == 403
            assert front.origin_reads == 2
        with CdnFront(private, origin_headers={"Authorization": UNSIGNED_S3_AUTHORIZATION}) as front:
            assert get(front, SERDE).body == line("serde", "4.0.0")
    finally:
        server.shutdown()
        server.server_close()


def test_command_line(origin: Path) -> None:
    """The command line prints the URLs as one JSON line and serves until terminated."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.testing.cdn",
            "--origin",
            str(origin),
            "--port",
            "0",
            "--fault",
            "unavailable",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert urls["invalidate_url"].endswith("/_invalidate")
        assert request(urls["url"], f"/index/{SERDE}").status == 503
        assert request(urls["url"], "/_heal", method="POST", body=b"").status == 200
        assert request(urls["url"], f"/index/{SERDE}").body == line("serde", "1.0.0")
        control = json.dumps({"kind": "wrong_crate", "paths": [SERDE], "times": 1}).encode()
        assert request(urls["url"], "/_fault", method="POST", body=control).status == 200
        assert json.loads(request(urls["url"], f"/index/{SERDE}").body)["name"] == "tokio"
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
