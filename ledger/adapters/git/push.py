"""Pushing to a git remote: libgit2's per-ref statuses, or ``git push`` read into the same report.

What any pusher says is a :class:`~ledger.ports.PushReport`: recorded, never trusted. Every
message that names the remote has its credentials removed first.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time

import pygit2

from ledger.domain.errors import classify_error
from ledger.ports import PushReport

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s]*@")


NON_FAST_FORWARD_MARKERS = (
    "cannot push non-fastforwardable reference",
    "contains commits that are not present locally",
)


CLI_SCHEMES = ("git://", "http://", "https://")
"""Remotes whose server side (receive-pack, hooks) is the same whichever client pushes."""


_CLI_OUTPUT_KEPT = 1 << 16


def strip_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` part removed from every URL in it."""
    return _USERINFO.sub(r"\g<scheme>", text)


class PushCallbacks(pygit2.RemoteCallbacks):
    """Records every per-reference status the server sends during a push."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[tuple[str, str | None]] = []

    def push_update_reference(self, refname: str, message: str | None) -> None:
        self.statuses.append((refname, message))


def run_with_silence_limit(
    argv: list[str], env: dict[str, str], silence_s: float
) -> tuple[int | None, str, str]:
    """Run ``argv``; its exit code (None: killed after ``silence_s`` without output), stdout, stderr.

    Only the last 64 KiB of each stream are kept (progress output is long). The process runs
    in a session of its own, so a kill reaches the helpers it started too.
    """
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    with selectors.DefaultSelector() as selector:
        for stream in (proc.stdout, proc.stderr):
            selector.register(stream, selectors.EVENT_READ)
        heard = time.monotonic()
        while selector.get_map():
            quiet = time.monotonic() - heard
            ready = selector.select(timeout=max(0.01, min(1.0, silence_s - quiet)))
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fd]
                buffer += chunk
                del buffer[:-_CLI_OUTPUT_KEPT]
                heard = time.monotonic()
            if not ready and time.monotonic() - heard > silence_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
                return None, "", ""
    code = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return code, kept[out_fd].decode("utf-8", "replace"), kept[err_fd].decode("utf-8", "replace")


def cli_report(code: int, out: str, err: str, ref: str) -> PushReport:
    """What ``git push --porcelain`` said about ``ref``, in libgit2's terms.

    A line ``<flag>\t<from>:<ref>\t<summary>`` per ref: ``!`` with ``[remote rejected]
    (reason)`` is the server's rejection; ``[remote failure]`` means the server sent no
    status for the ref (libgit2 then calls no callback: no status); any other ``!`` is
    git's own refusal (non-fast-forward). No line at all is an error (connection, transport).
    A pack the server could not unpack is an error, as libgit2 raises for it.
    """
    err_text = strip_credentials(err.replace("\r", "\n"))
    if "remote unpack failed" in err_text:
        text = _last_lines(err_text)
        return PushReport("error", text, classify_error(text))
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].endswith(f":{ref}"):
            continue
        flag, summary = parts[0], parts[2]
        if flag != "!":
            return PushReport("ok", None)
        reason = summary.partition("(")[2].rpartition(")")[0] or summary
        if summary.startswith("[remote failure]"):
            return PushReport("no_status", None)
        return PushReport("rejected", strip_credentials(reason))
    if code == 0:
        return PushReport("no_status", None)
    text = _last_lines(err_text) or f"git push exited with code {code}"
    return PushReport("error", text, classify_error(text))


def _last_lines(text: str, count: int = 5) -> str:
    """The last few non-empty lines of git's messages, without progress counters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not re.search(r"\d+% \(\d+/\d+\)", line)]
    return "; ".join(lines[-count:])
