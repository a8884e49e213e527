"""The command line: ``serve`` a remote until a signal, switch a running one's ``mode``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import cast

from ledger.testing.remote.modes import APPLIED_FILE, Mode, check_supported, read_text, write_mode
from ledger.testing.remote.server import SERVER_FILE, RemoteServer


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with RemoteServer.start(
        Path(args.dir),
        protocol=args.protocol,
        branch=args.branch,
        mode=Mode(args.mode),
        port=args.port,
    ) as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


def _server_alive(base_dir: Path) -> dict[str, object] | None:
    try:
        record = json.loads((base_dir / SERVER_FILE).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cast(dict[str, object], record)


def _set_mode(args: argparse.Namespace) -> int:
    base_dir = Path(args.dir).resolve()
    mode = Mode(args.mode)
    record = _server_alive(base_dir)
    if record is not None:
        check_supported(str(record["protocol"]), mode)
    with contextlib.suppress(FileNotFoundError):
        (base_dir / APPLIED_FILE).unlink()
    write_mode(base_dir, mode)
    if record is None:
        return 0
    deadline = time.monotonic() + args.wait
    while read_text(base_dir / APPLIED_FILE) != mode.value:
        if time.monotonic() > deadline:
            sys.stderr.write(f"the server did not switch to {mode.value} within {args.wait} s\n")
            return 1
        time.sleep(0.01)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.testing.remote",
        description="A git remote on 127.0.0.1 that can play faults.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve until SIGTERM or SIGINT; prints the URL")
    serve.add_argument("--dir", required=True, help="holds index.git and the mode file")
    serve.add_argument("--protocol", choices=["http", "git"], default="http")
    serve.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.OK.value)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--branch", default="master")
    mode = commands.add_parser("mode", help="change the mode of a running server")
    mode.add_argument("--dir", required=True)
    mode.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the switch")
    mode.add_argument("mode", choices=[m.value for m in Mode])
    args = parser.parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _set_mode(args)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
