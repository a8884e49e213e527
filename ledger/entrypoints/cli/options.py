"""The global options: the callback that reads them, sets up logging on stderr and opens the session.

``--version`` prints the version and exits before anything else is read.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from typing import Annotated

import typer

from ledger.domain.errors import Invalid
from ledger.entrypoints.cli.shared import JsonFlag, Session, emit
from ledger.logs import TextFormatter
from ledger.settings import DEFAULT_BRANCH, DEFAULT_STORE, Settings, TargetSpec

FALLBACK_ACTOR = "cli"


# -- logging ------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Writes each record to the standard error of the moment (looked up when it is emitted)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  (logging's own convention)
            self.handleError(record)


LOG_FORMATS = ("json", "text")


def _configure_logging(ctx: typer.Context, *, verbose: bool) -> None:
    """The ``ledger`` logger on stderr: JSON lines (``LEDGER_LOG_FORMAT=text``: ``step key=value``),
    at ``LEDGER_LOG_LEVEL`` when set, else INFO with ``--verbose`` and WARNING without."""
    logger = logging.getLogger("ledger")
    handler = _StderrHandler()
    log_format = os.environ.get("LEDGER_LOG_FORMAT", "json").strip().lower()
    if log_format not in LOG_FORMATS:
        msg = f"LEDGER_LOG_FORMAT must be json or text, not {log_format!r}"
        raise Invalid(msg, variable="LEDGER_LOG_FORMAT")
    handler.setFormatter(TextFormatter() if log_format == "text" else logging.Formatter("%(message)s"))
    level_name = os.environ.get("LEDGER_LOG_LEVEL", "").strip().upper()
    level = logging.getLevelNamesMapping().get(level_name) if level_name else None
    if level_name and level is None:
        msg = f"LEDGER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level_name!r}"
        raise Invalid(msg, variable="LEDGER_LOG_LEVEL")
    previous = logger.level
    logger.setLevel(level if level is not None else logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    ctx.call_on_close(restore)


def _default_actor() -> str:
    try:
        return getpass.getuser() or FALLBACK_ACTOR
    except (OSError, KeyError, ImportError):
        return FALLBACK_ACTOR


# -- the callback: global options ----------------------------------------------------------------


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        emit(f"ledger {version('ledger')}")
        raise typer.Exit(0)


def callback(
    ctx: typer.Context,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar="LEDGER_STORE",
            metavar="URL",
            help="The ledger's store: sqlite:///path.db or postgresql://user@host:port/db?schema=name.",
        ),
    ] = DEFAULT_STORE,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            envvar="LEDGER_REMOTE",
            metavar="URL",
            help="The index remote: a path, file://, git:// or http(s):// URL.",
        ),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            metavar="NAME=URL",
            help="Another index target (repeatable; else LEDGER_TARGETS): a git remote URL, or a sparse "
            "index as sparse+http://public/url/?origin=/folder (or s3://bucket/prefix). --remote is "
            "the target named git.",
        ),
    ] = None,
    branch: Annotated[
        str,
        typer.Option("--branch", envvar="LEDGER_BRANCH", metavar="NAME", help="The index branch."),
    ] = DEFAULT_BRANCH,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            envvar="LEDGER_ACTOR",
            metavar="NAME",
            help="Who asks for the change (default: the login name).",
        ),
    ] = None,
    json_output: JsonFlag = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log each step as a JSON line on stderr."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress display on stderr for long work."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Record every publication as an event; audit, explain and repair the index from them."""
    try:
        _configure_logging(ctx, verbose=verbose)
    except Invalid as exc:
        emit(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    try:
        parsed = tuple(TargetSpec.parse(t) for t in targets) if targets else None
        settings = Settings.from_env(store=store, remote=remote or None, branch=branch, targets=parsed)
        settings.index_targets()  # two targets of one name are refused before anything runs
    except Invalid as exc:
        emit(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    session = Session(settings, actor or _default_actor(), json_output=json_output, quiet=quiet)
    ctx.obj = session
    ctx.call_on_close(session.close)
