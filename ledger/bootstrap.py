"""The composition root: the only place that picks a store, connects, and builds a Ledger."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.adapters.stores.events import SqlEventLog
from ledger.adapters.stores.lease import INDEX_WRITER
from ledger.adapters.stores.lease import Lease as StoreLease
from ledger.adapters.stores.sqlite import SQLiteDatabase
from ledger.domain.errors import Invalid, LedgerError, StoreUnavailable
from ledger.ports import CrateFiles, Database, IndexTarget, Sleep, Wakeup
from ledger.services.core import TargetParts
from ledger.services.ledger import Ledger
from ledger.services.publishing import PublicationLedger
from ledger.settings import Settings, StoreURL, TargetSpec, check_remote_url, redact


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


def open_target(path: Path, remote_url: str, **options: Any) -> IndexTarget:
    """The index target at a URL, in a local folder: a sparse index for ``sparse+...?origin=``
    (read through its origin's listing; a sparse index has no branch), else a git remote."""
    if not remote_url.startswith("sparse+"):
        return open_git_index(path, remote_url, **options)
    return open_sparse_index(
        path,
        TargetSpec.parse(f"source={remote_url}"),
        connect_timeout_ms=options.get("connect_timeout_ms", 5000),
        timeout_ms=options.get("timeout_ms", 15000),
    )


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


def open_index(settings: Settings, name: str | None = None) -> IndexTarget:
    """The index target of that name (None: the first), in its local folder."""
    if not settings.index_targets():
        msg = "no index remote: give --remote URL (or --target NAME=URL), or set LEDGER_REMOTE"
        raise Invalid(msg, field="remote")
    spec = settings.target(name)
    first = spec.name == settings.target_names[0]
    if spec.kind == "sparse":
        return open_sparse_index(
            target_dir(settings, spec.name, ".sparse.git"),
            spec,
            connect_timeout_ms=settings.connect_timeout_ms,
            timeout_ms=settings.timeout_ms,
        )
    check_remote_url(spec.url)
    return open_git_index(
        index_dir(settings) if first else target_dir(settings, spec.name, ".index.git"),
        spec.url,
        branch=settings.branch,
        connect_timeout_ms=settings.connect_timeout_ms,
        timeout_ms=settings.timeout_ms,
        push_with=settings.push_with,
    )


def open_sparse_index(
    path: Path, spec: TargetSpec, *, connect_timeout_ms: int, timeout_ms: int
) -> IndexTarget:
    """A sparse index target: files at ``spec.origin``, read back at ``spec.url``."""
    from ledger.adapters.sparse.index import SparseIndex

    assert spec.origin is not None
    return SparseIndex.open(
        path,
        spec.url,
        spec.origin,
        invalidate_url=spec.invalidate_url,
        endpoint_url=spec.endpoint_url,
        connect_timeout_ms=connect_timeout_ms,
        timeout_ms=timeout_ms,
    )


def target_dir(settings: Settings, name: str, suffix: str) -> Path:
    """The local folder of an index target other than the first git one (a clone, a shadow)."""
    if settings.index_dir is not None:
        return settings.index_dir.with_name(f"{settings.index_dir.name}.{name}{suffix}")
    url = settings.store_url
    if url.kind == "sqlite" and url.path is not None:
        return url.path.with_name(f"{url.path.name}.{name}{suffix}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ledger"
    spec = settings.target(name)
    key = hashlib.sha256(f"{url.redacted}\n{spec.shown}".encode()).hexdigest()[:16]
    return cache / f"{name}-{key}{suffix}"


def target_views(url: StoreURL, name: str) -> Database:
    """The database of another index target's views: a SQLite file beside the store, or a
    PostgreSQL schema of its own in the same database."""
    if url.kind == "sqlite":
        assert url.path is not None
        return SQLiteDatabase(url.path.with_name(f"{url.path.name}.{name}-views"))
    from ledger.adapters.stores.postgres import PostgresDatabase

    schema = f"{url.schema or 'ledger'}_views_{name.replace('-', '_')}"
    return PostgresDatabase(dataclasses.replace(url, schema=schema))


def _target_parts(
    settings: Settings, db: Database, targets: Mapping[str, Callable[[], IndexTarget]]
) -> Callable[[str], TargetParts]:
    url = settings.store_url

    def parts(name: str) -> TargetParts:
        return TargetParts(
            db=target_views(url, name),
            index_factory=targets.get(name) or (lambda: open_index(settings, name)),
            index_dir=target_dir(settings, name, ".index") if _places_index(settings) else None,
            leases=lambda holder, ttl: StoreLease(db, holder, name=f"{INDEX_WRITER}:{name}", ttl=ttl),
        )

    return parts


def build_ledger(
    settings: Settings,
    *,
    index: Callable[[], IndexTarget] | None = None,
    targets: Mapping[str, Callable[[], IndexTarget]] | None = None,
) -> Ledger:
    """Open the store named by the settings and build a Ledger on it (the caller closes it).

    The index targets are those the settings name, unless ``index`` opens the first and
    ``targets`` others by name (``ledger.adapters.memory.MemoryIndex`` in fast tests)."""
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
            names = settings.target_names
            app.job_targets = list(names) if len(names) > 1 else None
            ledger = Ledger(
                settings,
                app,
                db,
                log=SqlEventLog(db, app.recorder),
                leases=lambda holder, ttl: StoreLease(db, holder, ttl=ttl),
                scratch=lambda: SQLiteDatabase(None),
                open_target=open_target,
                index_factory=index or (lambda: open_index(settings)),
                index_dir=index_dir(settings) if _places_index(settings) else None,
                crate_files=_crate_files(settings),
                wakeups=lambda: open_wakeup(url, app),
                target_parts=_target_parts(settings, db, targets or {}),
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
    settings: Settings | None = None,
    *,
    index: Callable[[], IndexTarget] | None = None,
    targets: Mapping[str, Callable[[], IndexTarget]] | None = None,
) -> Iterator[Ledger]:
    """``with open_ledger(Settings.from_env()) as ledger: ledger.publish(line, actor)``."""
    ledger = build_ledger(settings or Settings.from_env(), index=index, targets=targets)
    try:
        yield ledger
    finally:
        ledger.close()
