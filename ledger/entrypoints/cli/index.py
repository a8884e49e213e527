"""The index remote: set it up (init), adopt an existing one (import-index), sync jobs to it (worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.domain.errors import Invalid, RemoteUnavailable
from ledger.entrypoints.cli.shared import JsonFlag, OnTarget, Outcome, Session, emit, run
from ledger.settings import redact

if TYPE_CHECKING:
    from ledger.services.ledger import Ledger


def init(
    ctx: typer.Context,
    registry_url: Annotated[
        str | None,
        typer.Option(
            "--registry-url",
            metavar="URL",
            help="Write config.json (dl, api) for the registry at URL into an index that has none.",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Create the store's tables and views; safe to run twice."""

    def action(s: Session) -> Outcome:
        ledger = s.ledger()
        position = ledger.views.catch_up()
        if registry_url is not None:
            from ledger.services.index_config import ensure_config, registry_config

            if not s.settings.index_targets():
                msg = "--registry-url needs an index remote (--remote, --target or LEDGER_REMOTE)"
                raise Invalid(msg, option="--registry-url")
            if not registry_url.startswith(("http://", "https://")):
                msg = f"--registry-url must be an http(s) URL, not {registry_url!r}"
                raise Invalid(msg, option="--registry-url")
            for core in ledger.each_target():
                written = ensure_config(core, registry_config(registry_url))
                where = "the index" if len(ledger.target_names) == 1 else f"index target {core.target}"
                emit(f"config.json {'written' if written else 'kept as it is'} in {where}", err=True)
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

    run(ctx, json_output, action)


# -- adoption -----------------------------------------------------------------------------------


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

    run(ctx, json_output, action)


# -- the index sync worker ---------------------------------------------------------------------


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
        float,
        typer.Option(
            "--poll",
            min=0.05,
            metavar="SECONDS",
            help="How often to look for new jobs when nothing wakes the worker sooner.",
        ),
    ] = 1.0,
    wakeup: Annotated[
        bool,
        typer.Option(
            "--wakeup/--no-wakeup",
            help="Wake when a job is enqueued (PostgreSQL LISTEN/NOTIFY, SQLite data_version), "
            "not only every --poll seconds.",
        ),
    ] = True,
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
    on: OnTarget = None,
    json_output: JsonFlag = False,
) -> None:
    """Sync open jobs to each index target: push, read back, confirm; --once exits 1 if any stayed open."""
    from ledger.services.sync import WorkerOptions

    options = WorkerOptions(max_batch=max_batch, max_attempts=max_attempts, adopt_foreign=adopt_foreign)

    def action(s: Session) -> Outcome:
        ledger = s.ledger()
        cores = [ledger.on(on)] if on else ledger.each_target()
        if once:
            results = {core.target: core.sync(options) for core in cores}
            several = on is not None or len(results) > 1
            lines, notes = [], []
            for name, result in results.items():
                text = (
                    f"{result.jobs} job(s): {result.confirmed} confirmed, {result.failed} failed, "
                    f"{result.abandoned} abandoned, {result.held} held, {result.open_left} open"
                )
                if result.adopted:
                    text += f"; {result.adopted} foreign line(s) adopted"
                lines.append(f"[{name}] {text}" if several else text)
                notes += [f"held {crate}: {why}" for crate, why in sorted(result.holds.items())]
            left = sum(r.open_left for r in results.values())
            if several:
                document = {"ok": left == 0, "targets": {n: r.to_dict() for n, r in results.items()}}
            else:
                document = {"ok": left == 0, **next(iter(results.values())).to_dict()}
            return Outcome(document, "\n".join(lines), tuple(notes), code=int(left > 0))
        _follow(cores, options, poll, (metrics_host, metrics_port), wakeup)
        return Outcome({"ok": True, "stopped": True}, "worker stopped")

    run(ctx, json_output, action)


def _follow(
    cores: list[Ledger], options: Any, poll: float, metrics_at: tuple[str, int | None], wakeup: bool = True
) -> None:
    """Follow the log until SIGTERM or SIGINT, a worker per index target, each in its own thread
    with its own lease; stand by while another worker holds a target's lease.

    With a metrics port, ``GET /metrics`` is served for as long as the worker runs, store or
    remote down included (the first target's worker's figures).
    """
    ledger = cores[0]
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
        from ledger.bootstrap import open_ledger

        registry, worker_metrics = worker_registry(lambda: open_ledger(ledger.settings))
        server = serve_metrics(registry, port, host)
        emit(f"serving /metrics on http://{host}:{server.port}/metrics", err=True)
    failed: list[BaseException] = []

    def follow_target(name: str) -> None:
        """Another target's worker, on a ledger of its own (connections are not shared by threads)."""
        from ledger.bootstrap import open_ledger

        try:
            with open_ledger(ledger.settings) as own:
                core = own.on(name)
                SyncWorker(core, core.index(), options=options).follow(poll=poll, stop=stop, wake=wakeup)
        except BaseException as exc:  # noqa: BLE001  (re-raised by the main thread)
            failed.append(exc)
            stop.set()  # one target's worker gone: stop them all, loudly

    threads = [
        threading.Thread(target=follow_target, args=(core.target,), name=f"worker-{core.target}", daemon=True)
        for core in cores[1:]
    ]
    try:
        for thread in threads:
            thread.start()
        SyncWorker(ledger, ledger.index(), options=options, metrics=worker_metrics).follow(
            poll=poll, stop=stop, wake=wakeup
        )
        stop.set()
        for thread in threads:
            thread.join()
        if failed:
            raise failed[0]
    finally:
        if server is not None:
            server.close()
