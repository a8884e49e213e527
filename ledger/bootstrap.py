"""The composition root: the only place that picks a store, connects, and builds a Ledger."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.adapters.stores.events import SqlEventLog
from ledger.adapters.stores.lease import Lease as StoreLease
from ledger.adapters.stores.sqlite import SQLiteDatabase
from ledger.domain.errors import Invalid, LedgerError, StoreUnavailable
from ledger.ports import CrateFiles, Database, IndexTarget, Sleep, Wakeup
from ledger.services.ledger import Ledger
from ledger.services.publishing import PublicationLedger
from ledger.settings import Settings, StoreURL, check_remote_url, redact


def event_store_env(url: StoreURL) -> dict[str, str]:
    """The eventsourcing environment for a store URL (every key set, so nothing leaks in)."""
    if url.kind == "sqlite":
        assert url.path is not None
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(url.path),
            "SQLITE_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": "ledger.adapters.stores.sqlite:ChainedSQLiteApplicationRecorder",
            "CREATE_TABLE": "y",
        }
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.dbname,
        "POSTGRES_HOST": url.host,
        "POSTGRES_PORT": str(url.port),
        "POSTGRES_USER": url.user,
        "POSTGRES_PASSWORD": url.password,
        "POSTGRES_SCHEMA": url.schema,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "APPLICATION_RECORDER_TOPIC": "ledger.adapters.stores.postgres:ChainedPostgresApplicationRecorder",
        "CREATE_TABLE": "y",
    }


def connect(url: StoreURL) -> Database:
    """A plain SQL connection to the store, for views, leases and audits."""
    if url.kind == "sqlite":
        assert url.path is not None
        return SQLiteDatabase(url.path)
    from ledger.adapters.stores.postgres import PostgresDatabase

    return PostgresDatabase(url)


def index_dir(settings: Settings) -> Path:
    """Where the bare local clone lives: as configured, beside a SQLite store, else in the user's cache."""
    if settings.index_dir is not None:
        return settings.index_dir
    url = settings.store_url
    if url.kind == "sqlite" and url.path is not None:
        return url.path.with_name(url.path.name + ".index.git")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ledger"
    key = hashlib.sha256(f"{url.redacted}\n{redact(settings.remote or '')}".encode()).hexdigest()[:16]
    return cache / f"index-{key}.git"


def open_git_index(path: Path, remote_url: str, **options: Any) -> IndexTarget:
    """A git index target: the bare clone at ``path`` of ``remote_url`` (pygit2 loaded on first use)."""
    from ledger.adapters.git.index import GitIndex

    return GitIndex.open(path, remote_url, **options)


def crate_dir(settings: Settings) -> Path | None:
    """Where the registry's ``.crate`` files live: as configured, else beside a SQLite store."""
    if settings.crate_dir is not None:
        return settings.crate_dir
    url = settings.store_url
    if url.kind == "sqlite" and url.path is not None:
        return url.path.with_name(url.path.name + ".crates")
    return None


def _crate_files(settings: Settings) -> CrateFiles | None:
    """The registry's files when it keeps them: configured, or the folder beside the store exists."""
    folder = crate_dir(settings)
    if folder is None or (settings.crate_dir is None and not folder.is_dir()):
        return None
    from ledger.adapters.crate_files import FolderCrateFiles

    return FolderCrateFiles(folder)


def open_wakeup(url: StoreURL, app: PublicationLedger) -> Wakeup:
    """What wakes a following worker when the log grows, for this store."""
    if url.kind == "sqlite":
        from ledger.adapters.stores.wakeup import SQLiteWakeup

        assert url.path is not None
        return SQLiteWakeup(url.path)
    from ledger.adapters.stores import postgres

    channel = getattr(app.recorder, "channel_name", "")
    return postgres.wakeup(url, channel) if channel else Sleep()


def _places_index(settings: Settings) -> bool:
    """Whether the settings place the index's local folder (an index dir, or beside a SQLite file)."""
    return settings.index_dir is not None or settings.store_url.kind == "sqlite"


def open_index(settings: Settings) -> IndexTarget:
    """The local clone of the index remote named by the settings."""
    if not settings.remote:
        msg = "no index remote: give --remote URL or set LEDGER_REMOTE"
        raise Invalid(msg, field="remote")
    check_remote_url(settings.remote)
    return open_git_index(
        index_dir(settings),
        settings.remote,
        branch=settings.branch,
        connect_timeout_ms=settings.connect_timeout_ms,
        timeout_ms=settings.timeout_ms,
        push_with=settings.push_with,
    )


def build_ledger(settings: Settings, *, index: Callable[[], IndexTarget] | None = None) -> Ledger:
    """Open the store named by the settings and build a Ledger on it (the caller closes it).

    The index target is the git remote the settings name, unless ``index`` opens another
    (``ledger.adapters.memory.MemoryIndex`` in the use cases' fast tests)."""
    url = settings.store_url
    if url.kind == "sqlite":
        assert url.path is not None
        if not url.path.parent.is_dir():
            msg = f"the SQLite store's folder {str(url.path.parent)!r} does not exist"
            raise StoreUnavailable(msg, store=url.redacted)
    db = connect(url)  # first, so an unreachable server fails fast and clearly
    try:
        with db.exclusive("ledger-schema"):  # concurrent first opens must not race on DDL
            app = PublicationLedger(env=event_store_env(url))
            ledger = Ledger(
                settings,
                app,
                db,
                log=SqlEventLog(db, app.recorder),
                leases=lambda holder, ttl: StoreLease(db, holder, ttl=ttl),
                scratch=lambda: SQLiteDatabase(None),
                open_target=open_git_index,
                index_factory=index or (lambda: open_index(settings)),
                index_dir=index_dir(settings) if _places_index(settings) else None,
                crate_files=_crate_files(settings),
                wakeups=lambda: open_wakeup(url, app),
            )
            ledger.views.create_tables()
    except LedgerError:
        db.close()
        raise
    except Exception as exc:
        db.close()
        msg = f"cannot open the event store {url.redacted}: {redact(str(exc)).strip()}"
        raise StoreUnavailable(msg, store=url.redacted) from exc
    return ledger


@contextmanager
def open_ledger(
    settings: Settings | None = None, *, index: Callable[[], IndexTarget] | None = None
) -> Iterator[Ledger]:
    """``with open_ledger(Settings.from_env()) as ledger: ledger.publish(line, actor)``."""
    ledger = build_ledger(settings or Settings.from_env(), index=index)
    try:
        yield ledger
    finally:
        ledger.close()
