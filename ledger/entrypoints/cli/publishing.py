"""The registry changes: publish, yank, unyank and delete, each recorded as one event and one index job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.domain.errors import Invalid, InvalidLine
from ledger.domain.index_format import MAX_LINE_BYTES
from ledger.entrypoints.cli.shared import CrateArg, JsonFlag, Outcome, Session, VersionArg, run

if TYPE_CHECKING:
    from ledger.services.publishing import Receipt


def read_line_input(source: str) -> bytes:
    """One cargo index line from a file or ``-`` (stdin), or Invalid saying why it cannot be read."""
    limit = MAX_LINE_BYTES + 2  # a line and its CRLF
    name = "standard input" if source == "-" else f"file {source!r}"
    try:
        if source == "-":
            data = typer.get_binary_stream("stdin").read(limit + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(limit + 1)
    except OSError as exc:
        msg = f"cannot read {name}: {exc.strerror or exc}"
        raise Invalid(msg, source=source) from None
    if len(data) > limit:
        msg = f"{name} holds more than {MAX_LINE_BYTES} bytes, the limit of one index line"
        raise InvalidLine(msg, source=source)
    line = data.strip(b" \t\r\n")
    if not line:
        msg = f"{name} is empty: expected one cargo index line (a JSON object)"
        raise InvalidLine(msg, source=source)
    lines = sum(1 for part in line.split(b"\n") if part.strip())
    if lines > 1:
        msg = f"{name} holds {lines} lines: publish takes exactly one cargo index line"
        raise InvalidLine(msg, source=source)
    return line


def _receipt(receipt: Receipt, verb: str) -> Outcome:
    text = (
        f"{verb} {receipt.crate} {receipt.version}: log position {receipt.position}, index job {receipt.job}"
    )
    return Outcome({"ok": True, **receipt.to_dict()}, text)


def publish(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="A file holding one cargo index line, or - for stdin.")
    ],
    json_output: JsonFlag = False,
) -> None:
    """Record a publish from one cargo index line (a JSON object)."""

    def action(s: Session) -> Outcome:
        line = read_line_input(source)
        return _receipt(s.ledger().publish(line, s.actor), "published")

    run(ctx, json_output, action)


def yank(ctx: typer.Context, crate: CrateArg, version: VersionArg, json_output: JsonFlag = False) -> None:
    """Record a yank: the version stays in the index, marked yanked."""
    run(ctx, json_output, lambda s: _receipt(s.ledger().yank(crate, version, s.actor), "yanked"))


def unyank(ctx: typer.Context, crate: CrateArg, version: VersionArg, json_output: JsonFlag = False) -> None:
    """Record an unyank of a yanked version."""
    run(ctx, json_output, lambda s: _receipt(s.ledger().unyank(crate, version, s.actor), "unyanked"))


def delete(
    ctx: typer.Context,
    crate: CrateArg,
    version: VersionArg,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why the version is removed.")],
    json_output: JsonFlag = False,
) -> None:
    """Record an admin removal: the version's line must leave the index."""
    run(
        ctx,
        json_output,
        lambda s: _receipt(s.ledger().delete(crate, version, s.actor, reason), "deleted"),
    )
