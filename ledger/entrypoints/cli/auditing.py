"""Audit and time travel: what is out of sync (now or as of a past moment), what happened, and
whether the events' hash chain holds (audit, history, timeline, verify)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.domain.errors import Invalid
from ledger.entrypoints.cli.shared import JsonFlag, OnTarget, Outcome, Session, run
from ledger.entrypoints.timeparse import parse_duration, parse_moment, parse_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.services.ledger import AsOf, Ledger
    from projections.consistency import AuditReport

DEFAULT_GRACE = "15m"


# -- explaining ---------------------------------------------------------------------------------


def _events(records: list[dict[str, Any]]) -> Outcome:
    from ledger.services.history import summary

    text = "\n".join(summary(r) for r in records)
    notes = () if records else ("no events",)
    return Outcome({"ok": True, "events": records}, text, notes)


def history(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(metavar="CRATE[@VERSION]", help="A crate, or one version.")],
    json_output: JsonFlag = False,
) -> None:
    """Every event of a crate (or one version) and of its index jobs, in log order."""
    crate, at_sign, version = subject.partition("@")

    def action(s: Session) -> Outcome:
        return _events(s.ledger().history(crate, version if at_sign else None))

    run(ctx, json_output, action)


def timeline(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", metavar="TIME", help="From this time (ISO 8601; UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="TIME", help="Up to this time (ISO 8601; UTC).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Every event between two times, in log order."""

    def action(s: Session) -> Outcome:
        start = parse_time(since, option="--since") if since is not None else None
        end = parse_time(until, option="--until") if until is not None else None
        if start is not None and end is not None and start > end:
            msg = f"--since {since!r} is after --until {until!r}"
            raise Invalid(msg, option="--since", value=since)
        return _events(s.ledger().timeline(start, end))

    run(ctx, json_output, action)


# -- auditing -----------------------------------------------------------------------------------


def _as_of(moment: int | datetime | None) -> AsOf | None:
    from ledger.services.ledger import AsOf

    if moment is None:
        return None
    if isinstance(moment, int):
        return AsOf(position=moment)
    return AsOf(time=moment)


def _audit_lines(report: AuditReport, target: str | None = None) -> list[str]:
    from projections.consistency import iso

    counts = ", ".join(f"{cls} {n}" for cls, n in report.counts.items())
    state = "in sync" if report.consistent else "OUT OF SYNC"
    lines = [
        ("" if target is None else f"[{target}] ")
        + f"{state} at log position {report.position} as of {iso(report.as_of)} "
        f"(grace {report.grace:g}s): {counts}"
    ]
    lines += [
        f"{d.cls:<16} {d.crate} {d.version}  since {iso(d.since)}  job {d.job or '-'}"
        for d in report.discrepancies
    ]
    if report.scan is not None:
        lines.append(f"scan: {json.dumps(report.scan, default=str)}")
    return lines


def _audit_outcome(report: AuditReport) -> Outcome:
    return Outcome(report.to_dict(), "\n".join(_audit_lines(report)), code=0 if report.consistent else 1)


def _per_target(session: Session, on: str | None, audit_one: Callable[[Ledger], AuditReport]) -> Outcome:
    """The audit of every index target (or the one ``on`` names), each classified on its own.

    A ledger with one target answers as it always has; with several, the document holds one
    report per target under ``targets`` and the command exits 1 unless every one is in sync.
    """
    ledger = session.ledger()
    if on is None and len(ledger.target_names) == 1:
        return _audit_outcome(audit_one(ledger))
    reports = {core.target: audit_one(core) for core in ([ledger.on(on)] if on else ledger.each_target())}
    consistent = all(r.consistent for r in reports.values())
    document = {
        "ok": consistent,
        "consistent": consistent,
        "targets": {name: r.to_dict() for name, r in reports.items()},
    }
    lines = [line for name, r in reports.items() for line in _audit_lines(r, name)]
    return Outcome(document, "\n".join(lines), code=0 if consistent else 1)


def audit(
    ctx: typer.Context,
    scan: Annotated[
        bool, typer.Option("--scan", help="Also read the real index and compare it with the database.")
    ] = False,
    grace: Annotated[
        str,
        typer.Option("--grace", metavar="DURATION", help="How long a job may stay open before it pages."),
    ] = DEFAULT_GRACE,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME|POSITION", help="Answer as of a past time or log position."),
    ] = None,
    on: OnTarget = None,
    json_output: JsonFlag = False,
) -> None:
    """Every out-of-sync version, now or as of a past moment, per index target; exit 1 unless in sync."""

    def action(s: Session) -> Outcome:
        grace_s = parse_duration(grace, option="--grace")
        moment = parse_moment(at, option="--at") if at is not None else None
        if scan:
            _check_scan(s, moment)
            return _per_target(s, on, lambda core: core.audit_scan(grace=grace_s))
        return _per_target(s, on, lambda core: core.audit(grace=grace_s, at=_as_of(moment)))

    run(ctx, json_output, action)


# -- audit --scan: reading the real index -------------------------------------------------------


def _check_scan(session: Session, moment: int | datetime | None) -> None:
    """A scan reads the real index (recording what it holds): it needs one, and now."""
    if not session.settings.index_targets():
        msg = "audit --scan needs an index remote (--remote, --target or LEDGER_REMOTE)"
        raise Invalid(msg, option="--scan")
    if moment is not None:
        msg = "audit --scan reads the index as it is now and cannot be combined with --at"
        raise Invalid(msg, option="--scan")


# -- the hash chain -----------------------------------------------------------------------------


def verify(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Walk the events' hash chain; exit 1 naming the first broken link."""

    def action(s: Session) -> Outcome:
        report = s.ledger().verify()
        broken = report.broken
        document = {
            "ok": report.ok,
            "events": report.events,
            "head": report.head,
            "broken": broken.to_dict() if broken is not None else None,
        }
        if broken is None:
            return Outcome(document, f"chain holds: {report.events} events, head {report.head[:12]}")
        text = (
            f"chain broken at log position {broken.position}: {broken.problem} "
            f"({report.events} events verified before it)"
        )
        return Outcome(document, text, code=1)

    run(ctx, json_output, action)
