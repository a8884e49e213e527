"""What every command shares: the session, the outcome, exit codes from the error tree, rendering.

A command's action takes the :class:`Session` and returns an :class:`Outcome`; :func:`run`
renders it (one JSON document with ``--json``, text otherwise) or maps its exception to the
contract's exit code, in this one place (:func:`exit_code_for`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.domain.errors import LedgerError
from ledger.progress import TerminalProgress, reporting
from ledger.settings import Settings, redact

if TYPE_CHECKING:
    from ledger.services.ledger import Ledger

CrateArg = Annotated[str, typer.Argument(metavar="CRATE", help="The crate's name.")]
VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="The version, as published.")]
JsonFlag = Annotated[
    bool,
    typer.Option("--json", help="Print exactly one JSON document on stdout, errors included."),
]
OnTarget = Annotated[
    str | None,
    typer.Option("--on", metavar="TARGET", help="Only this index target, by name (default: every one)."),
]


# -- shared state -------------------------------------------------------------------------------


class Session:
    """What the callback shares with the commands: settings, actor, output mode, and the ledger.

    The ledger is opened on first use, so commands that fail before needing the store (bad
    input, usage errors) never touch it.
    """

    def __init__(self, settings: Settings, actor: str, *, json_output: bool, quiet: bool = False) -> None:
        self.settings = settings
        self.actor = actor
        self.json_output = json_output
        self.quiet = quiet
        self._ledger: Ledger | None = None

    def ledger(self) -> Ledger:
        if self._ledger is None:
            from ledger.bootstrap import build_ledger

            self._ledger = build_ledger(self.settings)
        return self._ledger

    def close(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return
        try:
            ledger.close()
        except Exception as exc:  # noqa: BLE001  (closing must never hide the command's result)
            logging.getLogger("ledger").warning(redact(f"closing the store failed: {exc}"))


@dataclass(frozen=True)
class Outcome:
    """A command's result: its JSON document, its human text (stdout), notes (stderr), exit code."""

    document: dict[str, Any]
    text: str = ""
    notes: tuple[str, ...] = ()
    code: int = 0


def _session(ctx: typer.Context) -> Session:
    session = ctx.obj
    assert isinstance(session, Session)
    return session


# -- errors and output: the one place that maps exceptions to exit codes ------------------------


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an error: its branch of the exception tree, or 1 when unexpected."""
    if isinstance(exc, LedgerError):
        return exc.exit_code
    return 1


def error_document(exc: BaseException) -> dict[str, Any]:
    """The ``error`` member of a failed command's JSON document."""
    if isinstance(exc, LedgerError):
        return exc.to_dict()
    return {"type": type(exc).__name__, "kind": "unexpected", "message": _one_line(exc)}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, LedgerError) else f"unexpected {type(exc).__name__}: {text}"


def emit(text: str, *, err: bool = False) -> None:
    """Print one line, redacted, on stdout (or stderr with ``err``)."""
    typer.echo(redact(text), err=err)


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str)


def run(ctx: typer.Context, json_flag: bool, action: Callable[[Session], Outcome]) -> None:
    """Run a command's action and render its outcome or its error; exit with the mapped code."""
    session = _session(ctx)
    as_json = json_flag or session.json_output
    try:
        with reporting(_progress(session, as_json=as_json)):
            outcome = action(session)
    except Exception as exc:  # noqa: BLE001  (every failure becomes one message and an exit code)
        emit(f"error: {_one_line(exc)}", err=True)
        if as_json:
            emit(_dump({"ok": False, "error": error_document(exc)}))
        raise typer.Exit(exit_code_for(exc)) from None
    if as_json:
        emit(_dump(outcome.document))
    elif outcome.text:
        emit(outcome.text)
    for note in outcome.notes:
        emit(note, err=True)
    if outcome.code:
        raise typer.Exit(outcome.code)


def _progress(session: Session, *, as_json: bool) -> TerminalProgress | None:
    """A progress line on stderr for long work: only on a terminal, never with --json or --quiet."""
    if as_json or session.quiet or not sys.stderr.isatty():
        return None
    return TerminalProgress(sys.stderr)
