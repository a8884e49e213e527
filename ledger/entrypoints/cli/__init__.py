"""The ``ledger`` command line: thin commands over the :class:`~ledger.services.ledger.Ledger` facade.

Each command parses its arguments, makes one Ledger call, renders the result and exits with
the contract's code, mapped from the exception tree in one place (:func:`exit_code_for`)::

    0  ok, or in sync (pending jobs allowed)
    1  out of sync, a broken chain, or a refused command                  Refused
    2  usage error or bad input (typer's own usage errors too)            Invalid
    3  the store or the index remote is unavailable                       InfrastructureError

With ``--json`` (global or per command) stdout carries exactly one JSON document, errors
included (``{"ok": false, "error": {...}}``); without it, results are text on stdout. Errors
and diagnostics always go to stderr, as one line each. Every
line printed passes through :func:`ledger.settings.redact`, so credentials in store or remote
URLs never appear. The store is opened only by a command that needs it, and closed when the
command ends.

This module builds the app and registers the commands; they live one group per module:

- :mod:`.shared`: the session, the outcome, exit codes and rendering, used by every command;
- :mod:`.options`: the global options and logging;
- :mod:`.publishing`: publish, yank, unyank, delete;
- :mod:`.index`: init, import-index, worker;
- :mod:`.auditing`: history, timeline, audit, verify;
- :mod:`.recovery`: repair, rebuild;
- :mod:`.operations`: metrics, demo;
- :mod:`.registry`: serve, token create|revoke, owner add|remove|list.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from ledger.entrypoints.cli import auditing, index, operations, publishing, recovery, registry
from ledger.entrypoints.cli.options import callback
from ledger.entrypoints.cli.publishing import read_line_input
from ledger.entrypoints.cli.shared import Outcome, Session, error_document, exit_code_for

__all__ = [
    "Outcome",
    "Session",
    "app",
    "error_document",
    "exit_code_for",
    "main",
    "read_line_input",
]

app = typer.Typer(
    name="ledger",
    help="An event-sourced publication ledger for a cargo registry index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold store URLs with passwords
)
app.callback()(callback)

#: Every command under its name, in the order ``ledger --help`` lists them.
COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("init", index.init),
    ("publish", publishing.publish),
    ("yank", publishing.yank),
    ("unyank", publishing.unyank),
    ("delete", publishing.delete),
    ("history", auditing.history),
    ("timeline", auditing.timeline),
    ("audit", auditing.audit),
    ("repair", recovery.repair),
    ("import-index", index.import_index),
    ("worker", index.worker),
    ("demo", operations.demo),
    ("rebuild", recovery.rebuild),
    ("verify", auditing.verify),
    ("metrics", operations.metrics),
    ("serve", registry.serve),
)
for _name, _command in COMMANDS:
    app.command(_name)(_command)
app.add_typer(registry.tokens, name="token")
app.add_typer(registry.owners, name="owner")


def main() -> None:
    """The ``ledger`` console script."""
    app(prog_name="ledger")
