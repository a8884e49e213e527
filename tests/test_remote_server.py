"""The fault-playing git remote, driven by pygit2 exactly as the ledger pushes."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest

from ledger.testing.remote import REJECT_MESSAGE, Mode, RemoteServer, read_mode

ROOT = Path(__file__).resolve().parents[1]
REFSPEC = "refs/heads/master:refs/heads/master"
TIMEOUT_MS = 1000
HTTP_ONLY = (Mode.HTTP_500, Mode.NO_STATUS, Mode.LIE)

StartServer = Callable[..., RemoteServer]


class Recorder(pygit2.RemoteCallbacks):
    """Records what the remote told the client, the way the ledger's callbacks see it."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[tuple[str, str | None]] = []
        self.progress: list[str] = []

    def push_update_reference(self, refname: str, message: str | None) -> None:
        self.updates.append((refname, message))

    def sideband_progress(self, string: str) -> None:
        self.progress.append(string)


class Client:
    """A local bare repository whose master branch gets pushed to the remote."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="master")
        self.tip: str | None = None
        self.count = 0

    def commit(self, payload: bytes | None = None) -> str:
        self.count += 1
        signature = pygit2.Signature("ledger", "ledger@example.com", 1_700_000_000 + self.count, 0)
        builder = self.repo.TreeBuilder()
        blob = self.repo.create_blob(payload or f"line {self.count}\n".encode())
        builder.insert("config.json", blob, pygit2.enums.FileMode.BLOB)
        parents = [] if self.tip is None else [self.tip]
        oid = self.repo.create_commit(
            "refs/heads/master", signature, signature, f"commit {self.count}", builder.write(), parents
        )
        self.tip = str(oid)
        return self.tip

    def push(self, url: str, callbacks: Recorder | None = None) -> Recorder:
        callbacks = callbacks or Recorder()
        self.repo.remotes.create_anonymous(url).push([REFSPEC], callbacks=callbacks)
        return callbacks


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ledger.testing.remote", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def short_timeouts() -> Iterator[None]:
    option = pygit2.enums.Option
    connect = pygit2.option(option.GET_SERVER_CONNECT_TIMEOUT)
    server = pygit2.option(option.GET_SERVER_TIMEOUT)
    pygit2.option(option.SET_SERVER_CONNECT_TIMEOUT, TIMEOUT_MS)
    pygit2.option(option.SET_SERVER_TIMEOUT, TIMEOUT_MS)
    yield
    pygit2.option(option.SET_SERVER_CONNECT_TIMEOUT, connect)
    pygit2.option(option.SET_SERVER_TIMEOUT, server)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    servers: list[RemoteServer] = []

    def start(protocol: str = "http", **options: object) -> RemoteServer:
        server = RemoteServer.start(tmp_path / f"remote-{len(servers)}", protocol=protocol, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(tmp_path / "client")


@pytest.fixture(params=["http", "git"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def landed(start_server: StartServer, client: Client, protocol: str) -> tuple[RemoteServer, str]:
    """A server whose branch already holds one commit pushed in OK mode."""
    server = start_server(protocol)
    old = client.commit()
    client.push(server.url)
    assert server.head() == old
    return server, old


class TestStart:
    def test_url_points_at_index_git_on_loopback(self, start_server: StartServer, protocol: str) -> None:
        """The URL names the protocol, 127.0.0.1, the bound port and index.git."""
        server = start_server(protocol)
        assert server.url == f"{protocol}://127.0.0.1:{server.port}/index.git"
        assert server.port > 0

    def test_creates_an_unborn_bare_repository(self, start_server: StartServer, protocol: str) -> None:
        """A fresh base directory gets a bare repository whose branch is unborn."""
        server = start_server(protocol, branch="main")
        assert (server.bare_path / "HEAD").read_text() == "ref: refs/heads/main\n"
        assert server.branch == "main"
        assert server.head() is None

    def test_keeps_an_existing_repository(self, tmp_path: Path, client: Client, protocol: str) -> None:
        """Starting again on the same directory serves the commits already there."""
        tip = client.commit()
        with RemoteServer.start(tmp_path / "remote", protocol=protocol) as server:  # type: ignore[arg-type]
            client.push(server.url)
        with RemoteServer.start(tmp_path / "remote", protocol=protocol) as again:  # type: ignore[arg-type]
            assert again.head() == tip

    def test_starts_in_the_mode_asked_for(self, start_server: StartServer, client: Client) -> None:
        """A server started in REJECT mode rejects the very first push."""
        server = start_server("git", mode=Mode.REJECT)
        client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", "pre-receive hook declined")]
        assert server.head() is None

    def test_starts_refusing_on_a_given_port(self, start_server: StartServer, client: Client) -> None:
        """A server started in REFUSE mode holds its URL's port closed until switched to OK."""
        server = start_server("http", mode=Mode.REFUSE)
        assert connection_refused(server.port)
        server.set_mode(Mode.OK)
        tip = client.commit()
        client.push(server.url)
        assert server.head() == tip

    @pytest.mark.parametrize("mode", HTTP_ONLY)
    def test_git_protocol_cannot_start_in_http_only_modes(self, tmp_path: Path, mode: Mode) -> None:
        """A git:// server refuses to start in a mode only HTTP can play."""
        with pytest.raises(ValueError, match="cannot play"):
            RemoteServer.start(tmp_path / "remote", protocol="git", mode=mode)
        assert processes_mentioning(str(tmp_path)) == []


class TestModesOnBothProtocols:
    def test_ok_lands_the_push(self, landed: tuple[RemoteServer, str], client: Client) -> None:
        """In OK mode the callback reports success and the remote holds the new commit."""
        server, _ = landed
        new = client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", None)]
        assert server.head() == new

    def test_ok_lands_a_multi_megabyte_pack(self, landed: tuple[RemoteServer, str], client: Client) -> None:
        """A pack of a few megabytes crosses the server intact in OK mode."""
        server, _ = landed
        new = client.commit(payload=os.urandom(3 * 1024 * 1024))
        assert client.push(server.url).updates == [("refs/heads/master", None)]
        assert server.head() == new

    def test_reject_declines_with_the_hooks_text(
        self, landed: tuple[RemoteServer, str], client: Client
    ) -> None:
        """REJECT: push() returns, the callback names the pre-receive hook, its text arrives as progress."""
        server, old = landed
        server.set_mode(Mode.REJECT)
        new = client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", "pre-receive hook declined")]
        assert REJECT_MESSAGE in "".join(recorder.progress)
        assert server.head() == old
        server.set_mode(Mode.OK)
        client.push(server.url)
        assert server.head() == new

    def test_refuse_fails_fast_then_recovers(self, landed: tuple[RemoteServer, str], client: Client) -> None:
        """REFUSE: push() raises at once with connection refused, and lands once back to OK."""
        server, old = landed
        port = server.port
        server.set_mode(Mode.REFUSE)
        assert connection_refused(port)
        new = client.commit()
        recorder = Recorder()
        started = time.monotonic()
        with pytest.raises(pygit2.GitError, match="Connection refused"):
            client.push(server.url, recorder)
        assert time.monotonic() - started < 0.5
        assert recorder.updates == []
        assert server.head() == old
        server.set_mode(Mode.OK)
        assert server.port == port
        client.push(server.url)
        assert server.head() == new

    def test_hang_times_out_then_recovers(self, landed: tuple[RemoteServer, str], client: Client) -> None:
        """HANG: push() raises after the client's server timeout, and lands once back to OK."""
        server, old = landed
        server.set_mode(Mode.HANG)
        new = client.commit()
        recorder = Recorder()
        started = time.monotonic()
        with pytest.raises(pygit2.GitError, match="timed out"):
            client.push(server.url, recorder)
        elapsed = time.monotonic() - started
        assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 2
        assert recorder.updates == []
        assert server.head() == old
        server.set_mode(Mode.OK)
        client.push(server.url)
        assert server.head() == new

    def test_rollback_reports_ok_but_the_ref_falls_back(
        self, landed: tuple[RemoteServer, str], client: Client
    ) -> None:
        """ROLLBACK: the callback says ok, yet by the time push() returns the ref is back to old."""
        server, old = landed
        server.set_mode(Mode.ROLLBACK)
        new = client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", None)]
        assert server.head() == old
        server.set_mode(Mode.OK)
        client.push(server.url)
        assert server.head() == new

    def test_rollback_of_a_new_branch_deletes_it(
        self, start_server: StartServer, client: Client, protocol: str
    ) -> None:
        """ROLLBACK on the first push of a branch deletes the branch again."""
        server = start_server(protocol, mode=Mode.ROLLBACK)
        client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", None)]
        assert server.head() is None


class TestHttpOnlyModes:
    def test_http500_fails_the_push(self, start_server: StartServer, client: Client) -> None:
        """HTTP_500: push() raises naming status 500 and the remote is untouched."""
        server = start_server("http")
        old = client.commit()
        client.push(server.url)
        server.set_mode(Mode.HTTP_500)
        client.commit()
        recorder = Recorder()
        with pytest.raises(pygit2.GitError, match="500"):
            client.push(server.url, recorder)
        assert recorder.updates == []
        assert server.head() == old

    def test_no_status_looks_like_a_quiet_success(self, start_server: StartServer, client: Client) -> None:
        """NO_STATUS: push() returns normally, the callback is never called, the ref is unchanged."""
        server = start_server("http")
        old = client.commit()
        client.push(server.url)
        server.set_mode(Mode.NO_STATUS)
        new = client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == []
        assert server.head() == old
        server.set_mode(Mode.OK)
        client.push(server.url)
        assert server.head() == new

    def test_lie_reports_success_for_a_dropped_pack(self, start_server: StartServer, client: Client) -> None:
        """LIE: the callback reports success (message None) but the ref is unchanged."""
        server = start_server("http")
        old = client.commit()
        client.push(server.url)
        server.set_mode(Mode.LIE)
        new = client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", None)]
        assert server.head() == old
        server.set_mode(Mode.OK)
        client.push(server.url)
        assert server.head() == new

    def test_lie_on_a_first_push_leaves_the_branch_unborn(
        self, start_server: StartServer, client: Client
    ) -> None:
        """LIE on the first push of a branch reports success while the branch stays unborn."""
        server = start_server("http", mode=Mode.LIE)
        client.commit()
        recorder = client.push(server.url)
        assert recorder.updates == [("refs/heads/master", None)]
        assert server.head() is None

    @pytest.mark.parametrize("mode", HTTP_ONLY)
    def test_git_protocol_cannot_switch_to_http_only_modes(
        self, start_server: StartServer, mode: Mode
    ) -> None:
        """A git:// server raises ValueError for a mode only HTTP can play and keeps its mode."""
        server = start_server("git")
        with pytest.raises(ValueError, match="cannot play"):
            server.set_mode(mode)
        assert server.mode is Mode.OK


class TestHttpRequests:
    @staticmethod
    def upload_pack_request(want: str) -> bytes:
        lines = [f"want {want} ofs-delta\n".encode(), b"done\n"]
        body = f"{len(lines[0]) + 4:04x}".encode() + lines[0] + b"0000"
        return body + f"{len(lines[1]) + 4:04x}".encode() + lines[1]

    def test_chunked_gzip_body_reaches_the_backend(self, start_server: StartServer, client: Client) -> None:
        """A chunked, gzip-encoded upload-pack request is decoded and answered with a pack."""
        server = start_server("http")
        tip = client.commit()
        client.push(server.url)
        body = gzip.compress(self.upload_pack_request(tip))
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            connection.request(
                "POST",
                "/index.git/git-upload-pack",
                body=iter([body[:10], body[10:]]),
                headers={
                    "Content-Type": "application/x-git-upload-pack-request",
                    "Content-Encoding": "gzip",
                },
                encode_chunked=True,
            )
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/x-git-upload-pack-result"
        assert b"PACK" in payload

    def test_lie_without_side_band_answers_a_plain_report(self, start_server: StartServer) -> None:
        """LIE answers a client that asked for no side-band with a bare report-status."""
        server = start_server("http", mode=Mode.LIE)
        command = b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/master\0report-status\n"
        body = f"{len(command) + 4:04x}".encode() + command + b"0000PACK"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            connection.request(
                "POST",
                "/index.git/git-receive-pack",
                body=body,
                headers={"Content-Type": "application/x-git-receive-pack-request"},
            )
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        assert response.getheader("Content-Type") == "application/x-git-receive-pack-result"
        assert payload == b"000eunpack ok\n0019ok refs/heads/master\n0000"
        assert server.head() is None

    def test_unknown_paths_get_the_backends_404(self, start_server: StartServer) -> None:
        """Paths outside a repository get http-backend's own 404 and nothing else."""
        server = start_server("http")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            connection.request("GET", "/mode")
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        assert response.status == 404


class TestModeAcrossProcesses:
    def test_mode_lives_in_the_base_directory(self, start_server: StartServer) -> None:
        """set_mode writes the mode file the hooks and other processes read."""
        server = start_server("http")
        server.set_mode(Mode.LIE)
        assert (server.base_dir / "mode").read_text() == "lie\n"
        assert read_mode(server.base_dir) is Mode.LIE
        assert server.mode is Mode.LIE

    def test_mode_command_rejects_from_another_process(
        self, start_server: StartServer, client: Client, protocol: str
    ) -> None:
        """`mode --dir D reject` from another process makes the next push be declined."""
        server = start_server(protocol)
        result = run_cli("mode", "--dir", str(server.base_dir), "reject")
        assert result.returncode == 0, result.stderr
        assert server.mode is Mode.REJECT
        client.commit()
        assert client.push(server.url).updates == [("refs/heads/master", "pre-receive hook declined")]

    def test_mode_command_closes_and_reopens_the_port(
        self, start_server: StartServer, client: Client, protocol: str
    ) -> None:
        """`mode refuse` returns once the port is closed, and `mode ok` once it listens again."""
        server = start_server(protocol)
        assert run_cli("mode", "--dir", str(server.base_dir), "refuse").returncode == 0
        assert connection_refused(server.port)
        assert run_cli("mode", "--dir", str(server.base_dir), "ok").returncode == 0
        tip = client.commit()
        client.push(server.url)
        assert server.head() == tip

    def test_mode_command_refuses_a_mode_the_protocol_cannot_play(self, start_server: StartServer) -> None:
        """`mode lie` against a git:// server exits 2 and leaves the mode alone."""
        server = start_server("git")
        result = run_cli("mode", "--dir", str(server.base_dir), "lie")
        assert result.returncode == 2
        assert "cannot play" in result.stderr
        assert server.mode is Mode.OK


class TestStop:
    def test_stop_is_idempotent_and_closes_the_port(self, start_server: StartServer, protocol: str) -> None:
        """stop() twice is fine, and afterwards nothing listens on the port."""
        server = start_server(protocol)
        server.stop()
        server.stop()
        assert connection_refused(server.port)

    def test_stop_leaves_no_git_daemon_behind(self, tmp_path: Path, client: Client) -> None:
        """The git daemon and its children are gone once stop() returns."""
        base = tmp_path / "daemon"
        with RemoteServer.start(base, protocol="git") as server:
            client.commit()
            client.push(server.url)
            assert processes_mentioning(str(base)) != []
        assert processes_mentioning(str(base)) == []

    def test_stop_cuts_a_held_connection(self, start_server: StartServer, protocol: str) -> None:
        """A connection held in HANG mode is closed by stop() within a moment."""
        server = start_server(protocol, mode=Mode.HANG)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"GET /index.git/info/refs?service=git-receive-pack HTTP/1.0\r\n\r\n")
            time.sleep(0.1)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 1
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(1024) == b""

    def test_leaving_hang_drops_held_connections(self, start_server: StartServer, protocol: str) -> None:
        """Switching away from HANG closes held connections without an answer."""
        server = start_server(protocol, mode=Mode.HANG)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"GET /index.git/info/refs?service=git-receive-pack HTTP/1.0\r\n\r\n")
            time.sleep(0.1)
            server.set_mode(Mode.OK)
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(1024) == b""


class TestServeCommand:
    def test_serve_prints_the_url_and_stops_on_sigterm(self, tmp_path: Path, client: Client) -> None:
        """`serve` prints its URL, serves pushes, and exits 0 leaving nothing behind on SIGTERM."""
        base = tmp_path / "served"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "ledger.testing.remote", "serve", "--dir", str(base)]
        with subprocess.Popen(
            [*command, "--protocol", "git"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        ) as process:
            try:
                assert process.stdout is not None
                url = process.stdout.readline().strip()
                assert url.startswith("git://127.0.0.1:")
                tip = client.commit()
                assert client.push(url).updates == [("refs/heads/master", None)]
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=10) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        assert connection_refused(port)
        assert processes_mentioning(str(base)) == []
        head = subprocess.run(
            ["git", f"--git-dir={base / 'index.git'}", "rev-parse", "refs/heads/master"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert head.stdout.strip() == tip
