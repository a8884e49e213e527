"""The registry that cargo publishes to: serve its web API, and manage its API tokens and owners."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.domain.errors import Invalid
from ledger.entrypoints.cli.shared import CrateArg, JsonFlag, Outcome, Session, emit, run

if TYPE_CHECKING:
    from ledger.entrypoints.serve.files import IndexFiles
    from ledger.settings import Settings

UserArg = Annotated[str, typer.Argument(metavar="USER", help="The registry user's name.")]

tokens = typer.Typer(help="API tokens of the registry's users (cargo sends them in Authorization).")
owners = typer.Typer(help="Who may publish, yank and unyank a crate through the registry.")


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="The port to listen on (0: any free port).", min=0, max=65535)
    ] = 8000,
    worker: Annotated[
        bool, typer.Option("--worker", help="Also run the index sync worker, in the same process.")
    ] = False,
    crate_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the .crate files are kept (default: beside a SQLite store; LEDGER_CRATE_DIR)."
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="The URL cargo reaches the server at, for config.json (default: http://HOST:PORT)."
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="Requests served at once.", min=1, max=256)] = 8,
    serve_index: Annotated[
        str | None,
        typer.Option(
            "--serve-index",
            metavar="TARGET",
            help="Also serve this sparse index target's folder, under its public URL's path.",
        ),
    ] = None,
) -> None:
    """Serve cargo's registry web API (publish, yank, unyank, download) until stopped."""

    def action(s: Session) -> Outcome:
        import signal

        from ledger.bootstrap import crate_dir as default_crate_dir
        from ledger.bootstrap import open_ledger
        from ledger.entrypoints.serve.server import start

        settings = s.settings if crate_dir is None else replace(s.settings, crate_dir=crate_dir)
        folder = default_crate_dir(settings)
        if folder is None:
            msg = "give --crate-dir (or LEDGER_CRATE_DIR): where the registry keeps its .crate files"
            raise Invalid(msg, option="--crate-dir")
        folder.mkdir(parents=True, exist_ok=True)
        settings = replace(settings, crate_dir=folder)
        if worker and not settings.index_targets():
            msg = "--worker needs an index remote (--remote, --target or LEDGER_REMOTE)"
            raise Invalid(msg, option="--remote")
        index_files = _index_files(settings, serve_index) if serve_index is not None else None
        with open_ledger(settings) as ledger:  # fail fast on an unreachable store, and create the tables
            ledger.views.catch_up()
        served = start(
            lambda: open_ledger(settings),
            host=host,
            port=port,
            max_crate_bytes=settings.max_crate_bytes,
            worker=worker,
            threads=threads,
            public_url=public_url,
            index_files=index_files,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: served.stop())
        emit(f"serving the registry API on {served.url} (.crate files in {folder})", err=True)
        if index_files is not None:
            emit(f"serving the sparse index {index_files.folder} at {index_files.prefix}", err=True)
        emit(served.url)
        served.wait()
        return Outcome({"ok": True, "url": served.url}, "")

    run(ctx, False, action)


@tokens.command("create")
def token_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose token it is.")],
    json_output: JsonFlag = False,
) -> None:
    """Create an API token for USER; it is shown once, only its SHA-256 is kept."""

    def action(s: Session) -> Outcome:
        token_id, token = s.ledger().app.create_token(user, s.actor)
        document = {"ok": True, "user": user, "token_id": token_id, "token": token}
        text = f"{token}\n(token {token_id} for {user}: shown once, keep it now)"
        return Outcome(document, text)

    run(ctx, json_output, action)


@tokens.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[
        str, typer.Argument(metavar="TOKEN_ID", help="The token's id, shown when it was created.")
    ],
    json_output: JsonFlag = False,
) -> None:
    """Revoke an API token for good."""

    def action(s: Session) -> Outcome:
        user = s.ledger().app.revoke_token(token_id, s.actor)
        return Outcome(
            {"ok": True, "token_id": token_id, "user": user}, f"revoked token {token_id} of {user}"
        )

    run(ctx, json_output, action)


@owners.command("add")
def owner_add(ctx: typer.Context, crate: CrateArg, user: UserArg, json_output: JsonFlag = False) -> None:
    """Make USER an owner of CRATE."""

    def action(s: Session) -> Outcome:
        position = s.ledger().app.add_owner(crate, user, s.actor)
        return Outcome(
            {"ok": True, "crate": crate, "user": user, "position": position}, f"{user} owns {crate}"
        )

    run(ctx, json_output, action)


@owners.command("remove")
def owner_remove(ctx: typer.Context, crate: CrateArg, user: UserArg, json_output: JsonFlag = False) -> None:
    """USER no longer owns CRATE."""

    def action(s: Session) -> Outcome:
        position = s.ledger().app.remove_owner(crate, user, s.actor)
        document = {"ok": True, "crate": crate, "user": user, "position": position}
        return Outcome(document, f"{user} no longer owns {crate}")

    run(ctx, json_output, action)


@owners.command("list")
def owner_list(ctx: typer.Context, crate: CrateArg, json_output: JsonFlag = False) -> None:
    """The owners of CRATE."""

    def action(s: Session) -> Outcome:
        found = s.ledger().app.owners(crate)
        return Outcome(
            {"ok": True, "crate": crate, "owners": found}, "\n".join(found) or f"{crate} has no owners"
        )

    run(ctx, json_output, action)


def _index_files(settings: Settings, name: str) -> IndexFiles:
    """The folder of a sparse index target, to serve under its public URL's path."""
    from urllib.parse import urlsplit

    from ledger.entrypoints.serve.files import IndexFiles

    spec = settings.target(name)
    if spec.kind != "sparse" or spec.origin is None or spec.origin.startswith("s3://"):
        msg = f"--serve-index {name}: only a sparse index target whose origin is a folder can be served"
        raise Invalid(msg, option="--serve-index")
    folder = Path(spec.origin.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    return IndexFiles(folder, urlsplit(spec.url).path or "/")
