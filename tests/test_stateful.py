"""A stateful property test: publishes, yanks, deletes, worker passes, remote faults, crashes and
lines written straight to the remote behind the ledger's back, interleaved.

After every step: no line present in the remote disappears without a recorded event (its
version is one the ledger has a record of, and a line the ledger has no record of never
disappears). Whatever the interleaving, once the faults clear, the foreign lines are adopted
(``import-index``) and the worker drains the queue: the scan of the real index is consistent
with the ledger, every crate file in the remote equals what the database view says, no version
appears twice in a file, and the database view equals a simple model of what was accepted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pygit2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ledger.adapters.git.index import GitIndex
from ledger.bootstrap import build_ledger
from ledger.domain.crate_files import crate_file
from ledger.domain.errors import AlreadyPublished, Conflict, Refused
from ledger.domain.names import collision_key, index_path
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import Mode, RemoteServer
from ledger.testing.tamper import push_straight
from projections.queries import live_versions
from tests.conftest import PG_DSN, make_line, postgres_or_skip

CRATES = ["kaze", "serde", "wasmer-runtime-core"]
VERSIONS = ["0.1.0", "0.1.1", "1.0.0", "1.0.0-rc.1"]
FOREIGN_CRATES = [*CRATES, "ghost"]
FOREIGN_VERSIONS = ["7.7.0", "7.7.1", "8.0.0-beta.1"]
"""Versions only ever written straight to the remote: the registry never publishes them."""
FAULTS = [Mode.REJECT, Mode.REFUSE, Mode.HTTP_500, Mode.NO_STATUS, Mode.LIE, Mode.ROLLBACK, Mode.HANG]
OPTIONS = WorkerOptions(max_batch=3, backoff_base=1.0, lease_ttl=30.0)


class SimulatedCrash(BaseException):
    """Stands for the worker process dying: nothing after this point runs or is saved."""


class LedgerMachine(RuleBasedStateMachine):
    store_kind = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-stateful-"))
        self.schema: str | None = None
        if self.store_kind == "sqlite":
            store = f"sqlite:///{self.tmp / 'ledger.db'}"
        else:
            self.schema = f"t_{uuid.uuid4().hex[:16]}"
            store = f"{PG_DSN}?schema={self.schema}"
        self.server = RemoteServer.start(self.tmp / "remote", protocol="http")
        self.settings = Settings(
            store=store,
            remote=self.server.url,
            index_dir=self.tmp / "clone.git",
            connect_timeout_ms=500,
            timeout_ms=700,
        )
        self.ledger = build_ledger(self.settings)
        self.model: dict[str, dict[str, str]] = {}
        self.crash_after: str | None = None
        self.foreign: dict[tuple[str, str], bool] = {}
        """(crate, version) written straight to the remote -> its yanked flag."""
        self.seen: dict[bytes, tuple[str, str]] = {}
        """Every line seen in the remote so far -> (crate, version)."""

    # -- the registry ---------------------------------------------------------------------------

    @rule(crate=st.sampled_from(CRATES), version=st.sampled_from(VERSIONS))
    def publish(self, crate: str, version: str) -> None:
        known = self.model.setdefault(crate, {})
        try:
            self.ledger.publish(make_line(crate, version), "fuzzer")
        except Conflict:
            assert known.get(version) == "deleted"
            return
        except AlreadyPublished:
            assert known.get(version) in ("published", "yanked")
            return
        assert version not in known
        known[version] = "published"

    @rule(
        crate=st.sampled_from(CRATES),
        version=st.sampled_from(VERSIONS),
        change=st.sampled_from(["yank", "unyank", "delete"]),
    )
    def change(self, crate: str, version: str, change: str) -> None:
        state = self.model.get(crate, {}).get(version)
        allowed = {
            "yank": state == "published",
            "unyank": state == "yanked",
            "delete": state in ("published", "yanked"),
        }
        try:
            if change == "delete":
                self.ledger.delete(crate, version, "admin", "removed in a test")
            else:
                getattr(self.ledger, change)(crate, version, "fuzzer")
        except Refused:
            assert not allowed[change]
            return
        assert allowed[change]
        self.model[crate][version] = {"yank": "yanked", "unyank": "published", "delete": "deleted"}[change]

    # -- the index side -------------------------------------------------------------------------

    @rule(fault=st.sampled_from(FAULTS))
    def fault(self, fault: Mode) -> None:
        self.server.set_mode(fault)

    @rule()
    def heal(self) -> None:
        self.server.set_mode(Mode.OK)

    @rule(point=st.sampled_from(["commit", "push", "read_back"]))
    def arm_crash(self, point: str) -> None:
        self.crash_after = point

    @rule(
        crate=st.sampled_from(FOREIGN_CRATES), version=st.sampled_from(FOREIGN_VERSIONS), yanked=st.booleans()
    )
    def foreign_line(self, crate: str, version: str, yanked: bool) -> None:
        """Someone commits a line straight to the remote, as if the ledger were not there."""
        if (crate, version) in self.foreign:
            return
        self.foreign[(crate, version)] = yanked
        path = index_path(crate)
        before = self._remote_file(crate) or b""
        line = json.dumps(make_line(crate, version, yanked=yanked), separators=(",", ":")).encode()
        push_straight(self.server.bare_path, {path: before + line + b"\n"}, message="behind the ledger")

    @rule(adopt=st.booleans())
    def worker_pass(self, adopt: bool) -> None:
        options = replace(OPTIONS, adopt_foreign=adopt)
        if self.crash_after is None:
            self.ledger.sync(options)
            return
        point, self.crash_after = self.crash_after, None
        original = getattr(GitIndex, point)

        def crash(index: GitIndex, *args: Any, **kwargs: Any) -> Any:
            original(index, *args, **kwargs)
            raise SimulatedCrash(point)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(GitIndex, point, crash)
            with contextlib.suppress(SimulatedCrash):
                self.ledger.sync(options)
        self._reopen()

    def _reopen(self) -> None:
        """A new process: the old one's connections and its lease are gone with it."""
        self.ledger.close()
        self.ledger = build_ledger(self.settings)
        self.ledger.db.query("UPDATE ledger_leases SET holder = NULL, expires_at = 0")

    @invariant()
    def nothing_confirmed_that_the_remote_lacks(self) -> None:
        """Every version the index view holds from a push is in the real remote file."""
        rows = self.ledger.db.query("SELECT crate, version FROM view_index WHERE source = 'push'")
        for crate, version in rows:
            assert version in self._remote_versions(crate), (crate, version)

    @invariant()
    def no_line_disappears_without_a_recorded_event(self) -> None:
        """A line gone from the remote is of a version the ledger recorded; a foreign one never goes."""
        present = self._remote_lines()
        self.ledger.views.catch_up()
        recorded = {
            (crate, version)
            for crate, version in self.ledger.db.query("SELECT crate, version FROM view_versions")
        }
        for line, (crate, version) in self.seen.items():
            if line in present:
                continue
            assert (crate, version) in recorded, f"{crate} {version} left the remote with no event: {line!r}"
            assert (crate, version) not in self.foreign, f"the foreign line {line!r} left the remote"
        self.seen.update(present)

    # -- the end --------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.server.set_mode(Mode.OK)
            for _ in range(5):
                if self.ledger.sync(OPTIONS).open_left == 0:
                    break
            assert self.ledger.sync(OPTIONS).open_left == len(self._held_jobs())
            if self.foreign:  # adopt what was written behind the ledger's back, then drain again
                imported = self.ledger.import_index(self.server.url)
                assert not imported.refused, imported.to_dict()
                for (crate, version), yanked in self.foreign.items():
                    self.model.setdefault(crate, {})[version] = "yanked" if yanked else "published"
                assert self.ledger.sync(OPTIONS).open_left == 0
                assert self.ledger.repair().confirmed  # adopted lines first, as the view orders them
            self.ledger.scan_index()
            report = self.ledger.audit(grace=0)
            assert report.consistent, report.to_dict()
            assert not report.discrepancies, report.to_dict()
            for crate, versions in self.model.items():
                rows = live_versions(self.ledger.db, collision_key(crate))
                expected = {v: s for v, s in versions.items() if s != "deleted"}
                assert {r.version: r.state for r in rows} == expected
                remote = self._remote_file(crate)
                assert remote == crate_file(rows)
                listed = self._remote_versions(crate)
                assert len(listed) == len(set(listed))
        finally:
            self.ledger.close()
            self.server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.schema is not None:
                import psycopg

                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _remote_file(self, crate: str) -> bytes | None:
        head = self.server.head()
        if head is None:
            return None
        repo = pygit2.Repository(str(self.server.bare_path))
        try:
            return bytes(
                repo[repo[head].peel(pygit2.Commit).tree[index_path(crate)].id].peel(pygit2.Blob).data
            )
        except KeyError:
            return None

    def _held_jobs(self) -> list[str]:
        rows = self.ledger.db.query(
            "SELECT job FROM view_jobs WHERE state = 'open' AND last_error LIKE ?", ("foreign_lines:%",)
        )
        return [row[0] for row in rows]

    def _remote_lines(self) -> dict[bytes, tuple[str, str]]:
        """Every line of every crate file in the remote -> (crate, version)."""
        found: dict[bytes, tuple[str, str]] = {}
        for crate in FOREIGN_CRATES:
            for raw in (self._remote_file(crate) or b"").splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    found[raw] = (line["name"], line["vers"])
        return found

    def _remote_versions(self, crate: str) -> list[str]:
        data = self._remote_file(crate) or b""
        return [json.loads(line)["vers"] for line in data.splitlines() if line.strip()]


SETTINGS = settings(
    max_examples=int(os.environ.get("LEDGER_STATEFUL_EXAMPLES", "10")),
    stateful_step_count=14,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class TestStateful:
    def test_sqlite(self) -> None:
        """Any interleaving converges on SQLite."""
        run_state_machine_as_test(LedgerMachine, settings=SETTINGS)

    @pytest.mark.postgres
    def test_postgres(self) -> None:
        """Any interleaving converges on PostgreSQL."""
        postgres_or_skip()

        class PostgresMachine(LedgerMachine):
            store_kind = "postgres"

        run_state_machine_as_test(PostgresMachine, settings=SETTINGS)
