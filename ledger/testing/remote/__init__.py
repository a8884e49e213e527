"""A real git remote on 127.0.0.1 that can play faults.

The ledger proves a push landed by reading the remote back: libgit2's push succeeds when the
server sends no per-ref status, and a lying server or a hook that moves the ref back fools the
push callbacks. Path and ``file://`` remotes skip server behaviour, so the faults are played
by real servers, bound to 127.0.0.1 only:

``http``
    A ``ThreadingHTTPServer`` that runs ``git http-backend`` as CGI, one request per
    connection (HTTP/1.0). Request bodies may be chunked and gzip-encoded.
``git``
    ``git daemon --enable=receive-pack`` on a private loopback port, behind a thin front on
    the public port that splices each connection through to it (or holds it, in HANG). The
    front sets TCP_NODELAY and TCP_QUICKACK: a pygit2 push of an empty-tree commit measured
    about 60 ms straight to a hook-less git daemon and under 20 ms through the front, hooks
    included, the difference being a delayed-ACK stall on loopback.

``base_dir`` holds ``index.git`` (the bare repository), ``mode`` (read by the HTTP handler,
the git front and the hooks on every request, connection and push), ``mode.applied`` (the
mode the listening side has put into effect), ``server.json`` (pid, URL and protocol of the
running server) and the logs of git daemon, git http-backend and the HTTP handler.

What pygit2 1.21.0 (libgit2 1.9.7) sees in each mode, measured by tests/test_remote_server.py
with a 1000 ms server timeout:

===========  =====  ==========================================================================
mode         over   the client sees / the remote holds afterwards
===========  =====  ==========================================================================
OK           both   push() returns, push_update_reference(ref, None); the new commit.
REJECT       both   push() returns, push_update_reference(ref, "pre-receive hook declined");
                    the hook's text ("index is read-only: maintenance") reaches only
                    sideband_progress, never the per-ref message; the old commit.
REFUSE       both   push() raises GitError "failed to connect to 127.0.0.1: Connection
                    refused" within milliseconds, no callback; the old commit.
HANG         both   push() raises GitError "could not read from socket: timed out" after the
                    server timeout (1.00 s), no callback; the old commit.
HTTP_500     http   push() raises GitError "unexpected http status code: 500", no callback.
NO_STATUS    http   push() returns normally and push_update_reference is never called; the
                    old commit. The answer is "unpack ok" and not a single per-ref line. (A
                    bare flush packet instead makes libgit2 raise "unpacking the sent packfile
                    failed on the remote", an empty body "could not read report from remote
                    repository"; git 2.39's own client says "remote failed to report status".)
LIE          http   push() returns, push_update_reference(ref, None), just as in OK; the old
                    commit (the pack is dropped unread).
ROLLBACK     both   push() returns, push_update_reference(ref, None); the old commit already
                    when push() returns, since libgit2 reads until receive-pack ends, after
                    post-receive (a post-receive slowed by 0.5 s slows push() by 0.5 s). A
                    branch's first push is rolled back by deleting the branch.
===========  =====  ==========================================================================

Only reading the remote back (``head()``) tells NO_STATUS, LIE and ROLLBACK from OK.

The package, one job a module: ``modes`` (the modes and the mode file), ``repository`` (the
bare repository and its hooks), ``pktline`` (the fake report-status), ``http_front`` (git
http-backend as CGI), ``git_front`` (git daemon and the splicing front), ``server``
(RemoteServer's lifecycle) and ``cli`` (the command line).

Outside pytest::

    python -m ledger.testing.remote serve --dir D [--protocol http|git] [--mode ok] [--port N]
    python -m ledger.testing.remote mode --dir D MODE

``serve`` prints the URL and serves until SIGTERM or SIGINT; ``mode`` switches a running
server and returns once the switch is in effect (exit 2 for a mode its protocol cannot play).
"""

from __future__ import annotations

from ledger.testing.remote.cli import main
from ledger.testing.remote.loopback import HOST
from ledger.testing.remote.modes import POLL_SECONDS, SUPPORTED_MODES, Mode, Protocol, read_mode
from ledger.testing.remote.repository import REJECT_MESSAGE
from ledger.testing.remote.server import REPO_NAME, RemoteServer

__all__ = [
    "HOST",
    "POLL_SECONDS",
    "REJECT_MESSAGE",
    "REPO_NAME",
    "SUPPORTED_MODES",
    "Mode",
    "Protocol",
    "RemoteServer",
    "main",
    "read_mode",
]
