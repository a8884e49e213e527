"""The views' tables, and the consistency view over them, for SQLite and PostgreSQL.

Times are seconds since the epoch (UTC) as floating point numbers on both stores, so the same
SQL compares them. The consistency view classifies every (crate, version) that is out of sync:

pending           the registry has it, the index lacks or differs, an open job is younger than
                  the grace period and not failing: on its way, no alarm
stuck             the same with an open job older than the grace period, or failing, or held
lost              the registry has it, the index lacks it, no open job
foreign           the index has a line the ledger has no record of (published before the ledger
                  arrived, or written behind its back): never removed by a write; adopt it
                  (``import-index``, ``worker --adopt-foreign``), whatever the crate's jobs
phantom           the index has it, the registry deleted it, no open job
yank_mismatch     both have it, the yanked flags differ, no open job
content_mismatch  both have it, the lines differ (beyond ``yanked``), no open job
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.ports import Cursor, Database

UNSYNCED_TABLE = "CREATE TABLE IF NOT EXISTS view_unsynced (crate_key TEXT PRIMARY KEY)"
"""The crate keys with at least one out-of-sync version, kept by the projection in each batch's
transaction (every crate whose rows the batch changed is compared again), so that the audit
classifies those crates only instead of joining every version of both views. Created apart
from ``TABLES``, filled from the views as they stand (see ``ViewRunner.create_tables``)."""

TABLES = [
    """CREATE TABLE IF NOT EXISTS view_versions (
        crate_key TEXT NOT NULL, vers_key TEXT NOT NULL, crate TEXT NOT NULL, version TEXT NOT NULL,
        state TEXT NOT NULL, cksum TEXT NOT NULL, line TEXT NOT NULL, digest TEXT NOT NULL,
        seq BIGINT NOT NULL, published_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, updated_pos BIGINT NOT NULL, job TEXT NOT NULL,
        actor TEXT NOT NULL,
        PRIMARY KEY (crate_key, vers_key))""",
    """CREATE TABLE IF NOT EXISTS view_index (
        crate_key TEXT NOT NULL, vers_key TEXT NOT NULL, crate TEXT NOT NULL, version TEXT NOT NULL,
        yanked INTEGER NOT NULL, digest TEXT NOT NULL, commit_id TEXT, source TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, updated_pos BIGINT NOT NULL,
        PRIMARY KEY (crate_key, vers_key))""",
    """CREATE TABLE IF NOT EXISTS view_index_files (
        crate_key TEXT PRIMARY KEY, crate TEXT NOT NULL, path TEXT NOT NULL, commit_id TEXT,
        source TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL, updated_pos BIGINT NOT NULL,
        entries_length BIGINT, entries_sha256 TEXT)""",
    """CREATE TABLE IF NOT EXISTS view_jobs (
        job TEXT PRIMARY KEY, crate_key TEXT NOT NULL, crate TEXT NOT NULL, versions TEXT NOT NULL,
        cause TEXT NOT NULL, actor TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
        failures INTEGER NOT NULL, enqueued_at DOUBLE PRECISION NOT NULL,
        enqueued_pos BIGINT NOT NULL, last_error TEXT, last_reported TEXT,
        next_retry DOUBLE PRECISION, commit_id TEXT, updated_at DOUBLE PRECISION NOT NULL,
        updated_pos BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS view_scans (
        position BIGINT PRIMARY KEY, remote TEXT NOT NULL, branch TEXT NOT NULL, head TEXT,
        base_position BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, files INTEGER NOT NULL,
        changed_files INTEGER NOT NULL, discrepancies INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS view_tracking (
        name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
]

ADDED_COLUMNS = [
    ("view_index_files", "entries_length", "BIGINT"),
    ("view_index_files", "entries_sha256", "TEXT"),
]
"""Columns of ``TABLES`` that views made by an earlier version lack: added to them, NULL until
their row is written again (a rebuild fills them). ``entries_length`` and ``entries_sha256``: the
length of a file's entries as JSON, and the SHA-256 of that text without its closing bracket, by
which the next file that only appends entries is recognised without reading the rows."""

INDEXES = [
    "CREATE INDEX IF NOT EXISTS view_jobs_open ON view_jobs (state, crate_key)",
    "CREATE INDEX IF NOT EXISTS view_jobs_crate ON view_jobs (crate_key, enqueued_pos)",
]
"""The indexes beyond the primary keys, for the audit's reads; a rebuild makes them once the
rows are in, instead of keeping them up to date row by row."""

VIEW_TABLES = [
    "view_versions",
    "view_index",
    "view_index_files",
    "view_jobs",
    "view_scans",
    "view_tracking",
    "view_unsynced",
]

# What differs, version by version, between the two views: every (crate, version) either view
# holds, with ``diff`` saying how it differs (NULL: in sync). ``{versions_scope}`` and
# ``{index_scope}`` limit it to some crate keys (or are empty).
_DIFFS = """pairs AS (
    SELECT v.crate_key, v.vers_key, v.crate, v.version, v.state AS db_state,
           v.digest AS db_digest, v.updated_at AS db_at,
           i.yanked AS ix_yanked, i.digest AS ix_digest, i.updated_at AS ix_at,
           CASE WHEN i.crate_key IS NULL THEN 0 ELSE 1 END AS in_index
    FROM view_versions v
    LEFT JOIN view_index i ON i.crate_key = v.crate_key AND i.vers_key = v.vers_key{versions_scope}
    UNION ALL
    SELECT i.crate_key, i.vers_key, i.crate, i.version, NULL, NULL, NULL,
           i.yanked, i.digest, i.updated_at, 1
    FROM view_index i
    LEFT JOIN view_versions v ON v.crate_key = i.crate_key AND v.vers_key = i.vers_key
    WHERE v.crate_key IS NULL{index_scope}
),
diffs AS (
    SELECT p.*, CASE
        WHEN p.db_state IS NOT NULL AND p.db_state <> 'deleted' AND p.in_index = 0
            THEN 'index lacks it'
        WHEN p.db_state IS NULL AND p.in_index = 1
            THEN 'the ledger has no record of it'
        WHEN p.db_state = 'deleted' AND p.in_index = 1
            THEN 'registry lacks it'
        WHEN p.db_state IS NULL OR p.db_state = 'deleted' THEN NULL
        WHEN (CASE WHEN p.db_state = 'yanked' THEN 1 ELSE 0 END) <> p.ix_yanked
            THEN 'yanked flag differs'
        WHEN p.db_digest <> p.ix_digest THEN 'line differs'
    END AS diff
    FROM pairs p
)"""

# The body shared by the SQL view (now, 15 minutes) and the audit query (any now, any grace).
_CONSISTENCY_BODY = """
open_jobs AS (
    SELECT crate_key, MIN(enqueued_at) AS since,
           MAX(CASE WHEN last_error IS NULL THEN 0 ELSE 1 END) AS failing
    FROM view_jobs WHERE state = 'open' GROUP BY crate_key
),
{diffs}
SELECT d.crate, d.version,
    CASE
        WHEN d.db_state IS NULL THEN 'foreign'
        WHEN o.crate_key IS NULL THEN CASE d.diff
            WHEN 'index lacks it' THEN 'lost'
            WHEN 'registry lacks it' THEN 'phantom'
            WHEN 'yanked flag differs' THEN 'yank_mismatch'
            ELSE 'content_mismatch' END
        WHEN o.failing = 1 OR params.now - o.since > params.grace THEN 'stuck'
        ELSE 'pending'
    END AS class,
    CASE WHEN o.crate_key IS NULL OR d.db_state IS NULL
         THEN {greatest}(COALESCE(d.db_at, 0), COALESCE(d.ix_at, 0))
         ELSE o.since END AS since,
    COALESCE(
        (SELECT j.job FROM view_jobs j WHERE j.crate_key = d.crate_key AND j.state = 'open'
         ORDER BY j.enqueued_pos LIMIT 1),
        (SELECT j.job FROM view_jobs j WHERE j.crate_key = d.crate_key
         ORDER BY j.enqueued_pos DESC LIMIT 1)
    ) AS job,
    d.diff AS difference, d.crate_key, d.vers_key
FROM diffs d
CROSS JOIN params
LEFT JOIN open_jobs o ON o.crate_key = d.crate_key
WHERE d.diff IS NOT NULL
"""

_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from now())::double precision",
}
_GREATEST = {"sqlite": "max", "postgresql": "greatest"}
DEFAULT_GRACE_S = 900.0


_UNSYNCED = "SELECT crate_key FROM view_unsynced"


def _diffs(scope: str | None, *, by_version: bool = False) -> str:
    """The ``pairs`` and ``diffs`` CTEs, over every crate or only those ``scope`` selects
    (crate keys, or with ``by_version`` (crate key, version key) pairs)."""
    if scope is None:
        return _DIFFS.format(versions_scope="", index_scope="")
    v, i = (
        ("(v.crate_key, v.vers_key)", "(i.crate_key, i.vers_key)")
        if by_version
        else ("v.crate_key", "i.crate_key")
    )
    return _DIFFS.format(versions_scope=f"\n    WHERE {v} IN ({scope})", index_scope=f" AND {i} IN ({scope})")


def _body(dialect: str, scope: str | None) -> str:
    return _CONSISTENCY_BODY.format(greatest=_GREATEST[dialect], diffs=_diffs(scope))


def consistency_query(dialect: str, *, every_crate: bool = False) -> str:
    """The audit's query: parameters are ``now`` and ``grace`` (seconds).

    It classifies the crates of ``view_unsynced`` only, which gives the same rows as the SQL
    view's query over every crate (``every_crate``): a crate none of whose versions differs
    has no row in either.
    """
    params = "params AS (SELECT CAST(? AS DOUBLE PRECISION) AS now, CAST(? AS DOUBLE PRECISION) AS grace),"
    return "WITH " + params + _body(dialect, None if every_crate else _UNSYNCED)


def unsynced_refresh(keys: int | None, *, versions: bool = False) -> str:
    """Insert into ``view_unsynced`` each crate that has a version out of sync.

    Among the crates of ``keys`` crate keys given as parameters (the caller first deletes their
    rows), or of every crate (None); with ``versions``, ``keys`` (crate key, version key) pairs
    are given and only those versions are compared.
    """
    if keys is None:
        scope, head = None, "WITH "
    elif versions:
        scope = "SELECT crate_key, vers_key FROM scope"
        head = f"WITH scope (crate_key, vers_key) AS (VALUES {', '.join(['(?, ?)'] * keys)}),\n"
    else:
        scope = "SELECT crate_key FROM scope"
        head = f"WITH scope (crate_key) AS (VALUES {', '.join(['(?)'] * keys)}),\n"
    return (
        head
        + _diffs(scope, by_version=versions)
        + "\nINSERT INTO view_unsynced (crate_key)"
        + " SELECT DISTINCT crate_key FROM diffs WHERE diff IS NOT NULL ON CONFLICT (crate_key) DO NOTHING"
    )


def consistency_view(dialect: str) -> str:
    """``CREATE VIEW consistency``: the same classes, now, with the default grace of 15 minutes."""
    params = f"params AS (SELECT {_NOW[dialect]} AS now, {DEFAULT_GRACE_S} AS grace),"
    body = "WITH " + params + _body(dialect, None)
    if dialect == "postgresql":
        return "CREATE OR REPLACE VIEW consistency AS " + body
    return "CREATE VIEW IF NOT EXISTS consistency AS " + body


def add_columns(cur: Cursor, dialect: str) -> None:
    """Add the ``ADDED_COLUMNS`` a table lacks (looked up first: an ``ALTER TABLE`` locks the
    table, even one that changes nothing, and every process that opens the ledger gets here)."""
    if dialect == "postgresql":
        lookup = (
            "SELECT COUNT(*) FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?"
        )
    else:
        lookup = "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?"
    for table, column, kind in ADDED_COLUMNS:
        cur.execute(lookup, (table, column))
        if not cur.fetchone()[0]:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def has_table(db: Database, name: str, cur: Cursor | None = None) -> bool:
    """Whether the store has the table ``name`` (in the connection's schema)."""
    if db.dialect == "postgresql":
        sql = "SELECT to_regclass(?) IS NOT NULL"
    else:
        sql = "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?"
    if cur is None:
        return bool(db.query(sql, (name,))[0][0])
    cur.execute(sql, (name,))
    return bool(cur.fetchone()[0])
