"""Running the ledger: its metrics (Prometheus text or JSON) and the end-to-end demo."""

from __future__ import annotations

import logging
import sys

import typer

from ledger.entrypoints.cli.shared import JsonFlag, Outcome, Session, run


def metrics(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Prometheus text exposition of counts, ages and lag."""

    def action(s: Session) -> Outcome:
        from contextlib import nullcontext

        from ledger.adapters.telemetry import exposition, views_registry
        from projections.metrics import collect_targets

        ledger = s.ledger()
        if json_output or s.json_output:
            cores = [(core.target, core) for core in ledger.each_target()]
            document = {"ok": True, "metrics": [m.to_dict() for m in collect_targets(cores)]}
            return Outcome(document, "")
        text = exposition(views_registry(lambda: nullcontext(ledger)))
        return Outcome({"ok": True}, text.rstrip("\n"))

    run(ctx, json_output, action)


def demo() -> None:
    """The 2020-02-20 incident end to end, on a temporary SQLite store and a git server on 127.0.0.1."""
    from ledger.entrypoints.demo import run_demo

    logger = logging.getLogger("ledger")
    if logger.level > logging.INFO:  # the story prints every step; keep WARNING lines for -v
        logger.setLevel(logging.ERROR)
    raise typer.Exit(run_demo(sys.stdout))
