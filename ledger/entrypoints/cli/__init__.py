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
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.domain.errors import Invalid, InvalidLine, LedgerError, RemoteUnavailable
from ledger.domain.index_format import MAX_LINE_BYTES
from ledger.entrypoints.timeparse import parse_duration, parse_moment, parse_time
from ledger.logs import TextFormatter
from ledger.progress import TerminalProgress, reporting
from ledger.settings import DEFAULT_BRANCH, DEFAULT_STORE, Settings, redact

if TYPE_CHECKING:
    from ledger.services.ledger import AsOf, Ledger
    from ledger.services.publishing import Receipt
    from projections.consistency import AuditReport

DEFAULT_GRACE = "15m"
FALLBACK_ACTOR = "cli"

app = typer.Typer(
    name="ledger",
    help="An event-sourced publication ledger for a cargo registry index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold store URLs with passwords
)

CrateArg = Annotated[str, typer.Argument(metavar="CRATE", help="The crate's name.")]
VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="The version, as published.")]
JsonFlag = Annotated[
    bool,
    typer.Option("--json", help="Print exactly one JSON document on stdout, errors included."),
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


def _emit(text: str, *, err: bool = False) -> None:
    typer.echo(redact(text), err=err)


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str)


def _run(ctx: typer.Context, json_flag: bool, action: Callable[[Session], Outcome]) -> None:
    """Run a command's action and render its outcome or its error; exit with the mapped code."""
    session = _session(ctx)
    as_json = json_flag or session.json_output
    try:
        with reporting(_progress(session, as_json=as_json)):
            outcome = action(session)
    except Exception as exc:  # noqa: BLE001  (every failure becomes one message and an exit code)
        _emit(f"error: {_one_line(exc)}", err=True)
        if as_json:
            _emit(_dump({"ok": False, "error": error_document(exc)}))
        raise typer.Exit(exit_code_for(exc)) from None
    if as_json:
        _emit(_dump(outcome.document))
    elif outcome.text:
        _emit(outcome.text)
    for note in outcome.notes:
        _emit(note, err=True)
    if outcome.code:
        raise typer.Exit(outcome.code)


def _progress(session: Session, *, as_json: bool) -> TerminalProgress | None:
    """A progress line on stderr for long work: only on a terminal, never with --json or --quiet."""
    if as_json or session.quiet or not sys.stderr.isatty():
        return None
    return TerminalProgress(sys.stderr)


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

        _emit(f"ledger {version('ledger')}")
        raise typer.Exit(0)


@app.callback()
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
        _emit(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    settings = Settings.from_env(store=store, remote=remote or None, branch=branch)
    session = Session(settings, actor or _default_actor(), json_output=json_output, quiet=quiet)
    ctx.obj = session
    ctx.call_on_close(session.close)


# -- registry changes ---------------------------------------------------------------------------


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


@app.command()
def init(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Create the store's tables and views; safe to run twice."""

    def action(s: Session) -> Outcome:
        ledger = s.ledger()
        position = ledger.views.catch_up()
        store = redact(s.settings.store)
        document: dict[str, Any] = {"ok": True, "store": store, "position": position, "index_clone": None}
        text = f"store {store} is ready: views at log position {position}"
        notes: tuple[str, ...] = ()
        if s.settings.remote:
            remote = redact(s.settings.remote)
            clone = ledger.index().path
            document["index_clone"] = str(clone)
            text += f"\nindex clone {clone} for {remote} (branch {s.settings.branch})"
            try:
                unadopted = ledger.unadopted()
            except RemoteUnavailable as exc:
                document["unadopted_files"] = None
                notes = (f"could not read the index to check whether it is adopted: {exc.message}",)
                return Outcome(document, text, notes)
            document["unadopted_files"] = len(unadopted)
            if unadopted:
                shown = ", ".join(unadopted[:3]) + (", ..." if len(unadopted) > 3 else "")
                notes = (
                    f"the index is not adopted yet: {len(unadopted)} crate file(s) ({shown}) hold crates "
                    "the ledger has no record of, and the worker will not write to them until they are "
                    f"adopted. Adopt them all with `ledger import-index {remote}`, or run the worker "
                    "with --adopt-foreign to adopt a crate's lines when it first writes to its file.",
                )
        return Outcome(document, text, notes)

    _run(ctx, json_output, action)


@app.command()
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

    _run(ctx, json_output, action)


@app.command()
def yank(ctx: typer.Context, crate: CrateArg, version: VersionArg, json_output: JsonFlag = False) -> None:
    """Record a yank: the version stays in the index, marked yanked."""
    _run(ctx, json_output, lambda s: _receipt(s.ledger().yank(crate, version, s.actor), "yanked"))


@app.command()
def unyank(ctx: typer.Context, crate: CrateArg, version: VersionArg, json_output: JsonFlag = False) -> None:
    """Record an unyank of a yanked version."""
    _run(ctx, json_output, lambda s: _receipt(s.ledger().unyank(crate, version, s.actor), "unyanked"))


@app.command()
def delete(
    ctx: typer.Context,
    crate: CrateArg,
    version: VersionArg,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why the version is removed.")],
    json_output: JsonFlag = False,
) -> None:
    """Record an admin removal: the version's line must leave the index."""
    _run(
        ctx,
        json_output,
        lambda s: _receipt(s.ledger().delete(crate, version, s.actor, reason), "deleted"),
    )


# -- explaining ---------------------------------------------------------------------------------


def _events(records: list[dict[str, Any]]) -> Outcome:
    from ledger.services.history import summary

    text = "\n".join(summary(r) for r in records)
    notes = () if records else ("no events",)
    return Outcome({"ok": True, "events": records}, text, notes)


@app.command()
def history(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(metavar="CRATE[@VERSION]", help="A crate, or one version.")],
    json_output: JsonFlag = False,
) -> None:
    """Every event of a crate (or one version) and of its index jobs, in log order."""
    crate, at_sign, version = subject.partition("@")

    def action(s: Session) -> Outcome:
        return _events(s.ledger().history(crate, version if at_sign else None))

    _run(ctx, json_output, action)


@app.command()
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

    _run(ctx, json_output, action)


# -- auditing -----------------------------------------------------------------------------------


def _as_of(moment: int | datetime | None) -> AsOf | None:
    from ledger.services.ledger import AsOf

    if moment is None:
        return None
    if isinstance(moment, int):
        return AsOf(position=moment)
    return AsOf(time=moment)


def _audit_outcome(report: AuditReport) -> Outcome:
    from projections.consistency import iso

    counts = ", ".join(f"{cls} {n}" for cls, n in report.counts.items())
    state = "in sync" if report.consistent else "OUT OF SYNC"
    lines = [
        f"{state} at log position {report.position} as of {iso(report.as_of)} "
        f"(grace {report.grace:g}s): {counts}"
    ]
    lines += [
        f"{d.cls:<16} {d.crate} {d.version}  since {iso(d.since)}  job {d.job or '-'}"
        for d in report.discrepancies
    ]
    if report.scan is not None:
        lines.append(f"scan: {json.dumps(report.scan, default=str)}")
    return Outcome(report.to_dict(), "\n".join(lines), code=0 if report.consistent else 1)


@app.command()
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
    json_output: JsonFlag = False,
) -> None:
    """Every out-of-sync version, now or as of a past moment; exit 1 unless in sync."""

    def action(s: Session) -> Outcome:
        grace_s = parse_duration(grace, option="--grace")
        moment = parse_moment(at, option="--at") if at is not None else None
        if scan:
            return _audit_outcome(_scan(s, grace_s, moment))
        return _audit_outcome(s.ledger().audit(grace=grace_s, at=_as_of(moment)))

    _run(ctx, json_output, action)


# -- audit --scan: reading the real index -------------------------------------------------------


def _scan(session: Session, grace: float, moment: int | datetime | None) -> AuditReport:
    """Scan the real index (recording what it holds), then audit now with the scan's summary."""
    if not session.settings.remote:
        msg = "audit --scan needs an index remote (--remote or LEDGER_REMOTE)"
        raise Invalid(msg, option="--scan")
    if moment is not None:
        msg = "audit --scan reads the index as it is now and cannot be combined with --at"
        raise Invalid(msg, option="--scan")
    return session.ledger().audit_scan(grace=grace)


# -- repair and adoption ------------------------------------------------------------------------


@app.command()
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
    json_output: JsonFlag = False,
) -> None:
    """Make the index equal to the database view: one commit, pushed, read back and recorded."""

    def action(s: Session) -> Outcome:
        if not s.settings.remote:
            msg = "repair needs an index remote (--remote or LEDGER_REMOTE)"
            raise Invalid(msg, option="--remote")
        result = s.ledger().repair(
            dry_run=dry_run, remove_phantoms=remove_phantoms, restore_lost=restore_lost, actor=s.actor
        )
        document = {"ok": result.confirmed or dry_run, **result.to_dict()}
        return Outcome(document, _repair_text(result), code=0 if (dry_run or result.confirmed) else 1)

    _run(ctx, json_output, action)


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


@app.command("import-index")
def import_index(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="PATH|URL", help="An existing cargo index: a path or git URL.")
    ],
    json_output: JsonFlag = False,
) -> None:
    """Adopt an existing cargo index: one publish per line found; exit 1 if any line was refused."""

    def action(s: Session) -> Outcome:
        result = s.ledger().import_index(source)
        document = result.to_dict()
        refused = document.get("refused", [])
        text = (
            f"imported {redact(source)} at {str(document.get('head'))[:12]}: {document.get('files')} files, "
            f"{document.get('lines')} lines, {document.get('accepted')} accepted, "
            f"{document.get('present')} already present, {len(refused)} refused"
        )
        notes = tuple(f"refused {r['path']}:{r['line']}: {r['error']}" for r in refused[:50])
        return Outcome({"ok": not refused, **document}, text, notes, code=1 if refused else 0)

    _run(ctx, json_output, action)


# -- the index sync worker ---------------------------------------------------------------------


@app.command()
def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over every open job, backoff ignored, then exit.")
    ] = False,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, metavar="N", help="Jobs pushed in one commit.")
    ] = 100,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", min=1, metavar="N", help="Abandon a job after N failed attempts."),
    ] = None,
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, metavar="SECONDS", help="How often to look for new jobs.")
    ] = 1.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            metavar="N",
            help="Serve GET /metrics (Prometheus text) on this port while following the log.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", metavar="HOST", help="The address /metrics listens on.")
    ] = "127.0.0.1",
    adopt_foreign: Annotated[
        bool,
        typer.Option(
            "--adopt-foreign",
            help="Adopt lines the ledger has no record of (recorded as imported) when first writing "
            "to a crate's file, instead of holding its jobs.",
        ),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Sync open jobs to the index: push, read back, confirm; --once exits 1 if any job stayed open."""
    from ledger.services.sync import WorkerOptions

    options = WorkerOptions(max_batch=max_batch, max_attempts=max_attempts, adopt_foreign=adopt_foreign)

    def action(s: Session) -> Outcome:
        ledger = s.ledger()
        if once:
            result = ledger.sync(options)
            text = (
                f"{result.jobs} job(s): {result.confirmed} confirmed, {result.failed} failed, "
                f"{result.abandoned} abandoned, {result.held} held, {result.open_left} open"
            )
            if result.adopted:
                text += f"; {result.adopted} foreign line(s) adopted"
            notes = tuple(f"held {crate}: {why}" for crate, why in sorted(result.holds.items()))
            return Outcome(
                {"ok": result.open_left == 0, **result.to_dict()},
                text,
                notes,
                code=int(result.open_left > 0),
            )
        _follow(ledger, options, poll, (metrics_host, metrics_port))
        return Outcome({"ok": True, "stopped": True}, "worker stopped")

    _run(ctx, json_output, action)


def _follow(ledger: Ledger, options: Any, poll: float, metrics_at: tuple[str, int | None]) -> None:
    """Follow the log until SIGTERM or SIGINT; stand by while another worker holds the lock.

    With a metrics port, ``GET /metrics`` is served for as long as the worker runs, store or
    remote down included.
    """
    import signal
    import threading

    from ledger.services.sync import SyncWorker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    host, port = metrics_at
    worker_metrics = server = None
    if port is not None:
        from ledger.adapters.telemetry import serve_metrics, worker_registry

        registry, worker_metrics = worker_registry(ledger.settings)
        server = serve_metrics(registry, port, host)
        _emit(f"serving /metrics on http://{host}:{server.port}/metrics", err=True)
    try:
        worker = SyncWorker(ledger, ledger.index(), options=options, metrics=worker_metrics)
        worker.follow(poll=poll, stop=stop)
    finally:
        if server is not None:
            server.close()


# -- the demo -----------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """The 2020-02-20 incident end to end, on a temporary SQLite store and a git server on 127.0.0.1."""
    from ledger.entrypoints.demo import run_demo

    logger = logging.getLogger("ledger")
    if logger.level > logging.INFO:  # the story prints every step; keep WARNING lines for -v
        logger.setLevel(logging.ERROR)
    raise typer.Exit(run_demo(sys.stdout))


# -- maintenance --------------------------------------------------------------------------------


@app.command()
def rebuild(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Drop every view and rebuild it from the events."""

    def action(s: Session) -> Outcome:
        position = s.ledger().rebuild()
        return Outcome(
            {"ok": True, "position": position}, f"rebuilt every view up to log position {position}"
        )

    _run(ctx, json_output, action)


@app.command()
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

    _run(ctx, json_output, action)


@app.command()
def metrics(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Prometheus text exposition of counts, ages and lag."""

    def action(s: Session) -> Outcome:
        from contextlib import nullcontext

        from ledger.adapters.telemetry import exposition, views_registry
        from projections.metrics import collect

        ledger = s.ledger()
        if json_output or s.json_output:
            document = {"ok": True, "metrics": [m.to_dict() for m in collect(ledger)]}
            return Outcome(document, "")
        text = exposition(views_registry(lambda: nullcontext(ledger)))
        return Outcome({"ok": True}, text.rstrip("\n"))

    _run(ctx, json_output, action)


def main() -> None:
    """The ``ledger`` console script."""
    app(prog_name="ledger")
