"""Recovery: bring what is derived from the events back in line with them, the index (repair)
and the views (rebuild)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ledger.domain.errors import Invalid
from ledger.entrypoints.cli.shared import JsonFlag, OnTarget, Outcome, Session, run


def repair(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print exactly the planned change and touch nothing.")
    ] = False,
    remove_phantoms: Annotated[
        bool,
        typer.Option(
            "--remove-phantoms",
            help="Also remove lines the registry does not hold (foreign and phantom), recorded as removed.",
        ),
    ] = False,
    restore_lost: Annotated[
        bool,
        typer.Option(
            "--restore-lost",
            help="First restore, from the index's history, lines the ledger's own commits removed "
            "without a record (recorded as imported).",
        ),
    ] = False,
    on: OnTarget = None,
    json_output: JsonFlag = False,
) -> None:
    """Make each index target equal to the database view: one commit each, pushed, read back, recorded."""

    def action(s: Session) -> Outcome:
        if not s.settings.index_targets():
            msg = "repair needs an index remote (--remote, --target or LEDGER_REMOTE)"
            raise Invalid(msg, option="--remote")
        ledger = s.ledger()
        cores = [ledger.on(on)] if on else ledger.each_target()
        results = {
            core.target: core.repair(
                dry_run=dry_run, remove_phantoms=remove_phantoms, restore_lost=restore_lost, actor=s.actor
            )
            for core in cores
        }
        ok = all(r.confirmed or dry_run for r in results.values())
        if on is None and len(results) == 1:
            (result,) = results.values()
            return Outcome({"ok": ok, **result.to_dict()}, _repair_text(result), code=0 if ok else 1)
        document = {"ok": ok, "targets": {name: r.to_dict() for name, r in results.items()}}
        text = "\n".join(f"[{name}] {_repair_text(r)}" for name, r in results.items())
        return Outcome(document, text, code=0 if ok else 1)

    run(ctx, json_output, action)


def _repair_text(result: Any) -> str:
    verb = "would change" if result.dry_run else "changed"
    lines = [f"repair {verb} {result.changed} file(s)" + ("" if result.changed else ": nothing to do")]
    if result.config:
        lines.append("  config.json  write (missing)")
    for change in result.changes:
        detail = [f"+{v}" for v in change.added] + [f"-{v}" for v in change.removed]
        detail += [f"phantom kept {v}" for v in change.phantoms_kept]
        detail += [f"phantom removed {v}" for v in change.phantoms_removed]
        lines.append(f"  {change.path}  {change.action}  {' '.join(detail)}".rstrip())
    for phantom in result.phantoms:
        lines.append(f"  phantom: {json.dumps(phantom, default=str)}")
    restore = "would restore" if result.dry_run else "restored"
    for lost in result.restored:
        what = f"{lost['crate']} {lost['version'] or '(unreadable line)'}"
        if lost["restorable"]:
            lines.append(f"  {restore} {what} in {lost['path']}, removed by {lost['removed_by'][:12]}")
        else:
            lines.append(f"  cannot restore {what} in {lost['path']}: {lost['why_not']}")
    if not result.dry_run and result.changed:
        state = "confirmed by read-back" if result.confirmed else "NOT confirmed"
        lines.append(f"commit {result.commit} ({result.reported}), {state}")
    return "\n".join(lines)


def rebuild(ctx: typer.Context, on: OnTarget = None, json_output: JsonFlag = False) -> None:
    """Drop every view and rebuild it from the events (each index target's views)."""

    def action(s: Session) -> Outcome:
        ledger = s.ledger()
        positions = {
            core.target: core.rebuild() for core in ([ledger.on(on)] if on else ledger.each_target())
        }
        position = min(positions.values())
        text = f"rebuilt every view up to log position {position}"
        if on is not None or len(positions) > 1:
            text += f" ({', '.join(positions)})"
        return Outcome({"ok": True, "position": position}, text)

    run(ctx, json_output, action)
