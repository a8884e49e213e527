"""The registry's use cases behind cargo's API: tokens, owners, refusals, files before events.

On both stores, through :class:`ledger.services.registry.Registry` (the web API in
test_serve.py and the real cargo in test_serve_cargo.py go through the same calls).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import open_ledger
from ledger.domain.errors import AlreadyPublished, Forbidden, Invalid, Unauthorized
from ledger.services.ledger import Ledger
from ledger.services.registry import Registry
from ledger.settings import Settings

MAX_CRATE = 64 * 1024


def crate_bytes(name: str, version: str, size: int = 2000) -> bytes:
    """A real ``.crate``: a gzipped tarball holding ``name-version/Cargo.toml`` and some source."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, text in (
            (f"{name}-{version}/Cargo.toml", f'[package]\nname = "{name}"\nversion = "{version}"\n'),
            (f"{name}-{version}/src/lib.rs", "// " + "x" * size + "\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def metadata(name: str, version: str, **extra: Any) -> dict[str, Any]:
    """The JSON metadata as cargo sends it with a publish."""
    document: dict[str, Any] = {
        "name": name,
        "vers": version,
        "deps": [],
        "features": {},
        "authors": [],
        "description": f"{name} for tests",
        "documentation": None,
        "homepage": None,
        "readme": None,
        "readme_file": None,
        "keywords": [],
        "categories": [],
        "license": "MIT",
        "license_file": None,
        "repository": None,
        "badges": {},
        "links": None,
        "rust_version": None,
    }
    document.update(extra)
    return document


def body(meta: dict[str, Any], crate: bytes) -> bytes:
    """cargo's publish body: u32 LE length, the JSON, u32 LE length, the ``.crate``."""
    raw = json.dumps(meta).encode()
    return struct.pack("<I", len(raw)) + raw + struct.pack("<I", len(crate)) + crate


@pytest.fixture
def ledger(store_url: str, tmp_path: Path) -> Iterator[Ledger]:
    settings = Settings(store=store_url, crate_dir=tmp_path / "crates", max_crate_bytes=MAX_CRATE)
    with open_ledger(settings) as opened:
        yield opened


@pytest.fixture
def registry(ledger: Ledger) -> Registry:
    assert ledger.crate_files is not None
    return Registry(ledger, ledger.crate_files, max_crate_bytes=MAX_CRATE)


def stored_files(ledger: Ledger) -> list[Path]:
    root = ledger.settings.crate_dir
    assert root is not None
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def events_of(ledger: Ledger) -> int:
    return ledger.views.head()


class TestPublish:
    def test_a_publish_stores_the_file_then_records_the_line_and_its_owner(
        self, ledger: Ledger, registry: Registry
    ) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        crate = crate_bytes("kaze", "0.1.6")
        published = registry.publish(token, body(metadata("kaze", "0.1.6"), crate))
        assert published.cksum == hashlib.sha256(crate).hexdigest()
        assert published.user == "alice"
        assert registry.files.get(published.cksum) == crate
        assert registry.download("kaze", "0.1.6") == crate
        ledger.views.catch_up()
        (line,) = [json.loads(r[0]) for r in ledger.db.query("SELECT line FROM view_versions")]
        assert line["cksum"] == published.cksum  # computed by the server
        assert ledger.app.owners("kaze") == ["alice"]
        events = [e["event"] for e in ledger.history("kaze")]
        assert (
            events.index("CrateRegistered")
            < events.index("CrateOwnerAdded")
            < events.index("VersionPublished")
        )
        (owned,) = [e for e in ledger.history("kaze") if e["event"] == "CrateOwnerAdded"]
        assert (owned["user"], owned["actor"]) == ("alice", "alice")

    def test_a_second_publish_of_a_version_is_refused_and_stores_nothing(
        self, ledger: Ledger, registry: Registry
    ) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        registry.publish(token, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6")))
        files, position = stored_files(ledger), events_of(ledger)
        with pytest.raises(AlreadyPublished, match="already published"):
            registry.publish(token, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6", 3000)))
        assert stored_files(ledger) == files
        assert events_of(ledger) == position

    @pytest.mark.parametrize("case", ["none", "unknown", "revoked"])
    def test_no_valid_token_no_record(self, ledger: Ledger, registry: Registry, case: str) -> None:
        token_id, token = ledger.app.create_token("alice", "operator")
        presented = {"none": None, "unknown": token[:-4] + "abcd", "revoked": token}[case]
        if case == "revoked":
            ledger.app.revoke_token(token_id, "operator")
        position = events_of(ledger)
        with pytest.raises(Unauthorized):
            registry.publish(presented, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6")))
        assert stored_files(ledger) == []
        assert events_of(ledger) == position
        assert ledger.app.find_crate("kaze") is None

    def test_another_users_publish_is_refused_and_recorded_as_refused(
        self, ledger: Ledger, registry: Registry
    ) -> None:
        alice = ledger.app.create_token("alice", "operator")[1]
        mallory = ledger.app.create_token("mallory", "operator")[1]
        registry.publish(alice, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6")))
        files = stored_files(ledger)
        with pytest.raises(Forbidden, match="mallory is not an owner of kaze"):
            registry.publish(mallory, body(metadata("kaze", "0.1.7"), crate_bytes("kaze", "0.1.7")))
        assert stored_files(ledger) == files
        refused = [e for e in ledger.history("kaze") if e["event"] == "CrateRequestRefused"]
        assert [(e["actor"], e["action"], e["version"]) for e in refused] == [("mallory", "publish", "0.1.7")]
        ledger.views.catch_up()
        assert [r[0] for r in ledger.db.query("SELECT version FROM view_versions")] == ["0.1.6"]
        with pytest.raises(Forbidden):
            registry.yank(mallory, "kaze", "0.1.6")

        ledger.app.add_owner("kaze", "mallory", "operator")
        registry.publish(mallory, body(metadata("kaze", "0.1.7"), crate_bytes("kaze", "0.1.7")))
        ledger.app.remove_owner("kaze", "mallory", "operator")
        with pytest.raises(Forbidden):
            registry.yank(mallory, "kaze", "0.1.7")

    def test_a_crate_adopted_without_owners_is_refused_until_one_is_added(
        self, ledger: Ledger, registry: Registry
    ) -> None:
        """A crate recorded through the library (or imported) has no owners: nobody publishes to it."""
        from tests.conftest import make_line

        ledger.publish(make_line("kaze", "0.1.6"), "import")
        alice = ledger.app.create_token("alice", "operator")[1]
        with pytest.raises(Forbidden, match="has no owners yet"):
            registry.publish(alice, body(metadata("kaze", "0.1.7"), crate_bytes("kaze", "0.1.7")))
        ledger.app.add_owner("kaze", "alice", "operator")
        assert (
            registry.publish(alice, body(metadata("kaze", "0.1.7"), crate_bytes("kaze", "0.1.7"))).user
            == "alice"
        )


class TestBadBodies:
    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda b: b[:-10], "truncated|ends|short|past the end"),
            (lambda b: struct.pack("<I", 10**6) + b[4:], "length|past the end|truncated"),
            (lambda b: struct.pack("<I", 5) + b"{nope" + struct.pack("<I", 1) + b"x", "JSON|json"),
            (lambda b: b + b"trailing", "trailing|after|extra"),
        ],
    )
    def test_each_bad_framing_is_refused_and_writes_nothing(
        self, ledger: Ledger, registry: Registry, make: Any, message: str
    ) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        good = body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6"))
        position = events_of(ledger)
        with pytest.raises(Invalid, match=message):
            registry.publish(token, make(good))
        assert stored_files(ledger) == []
        assert events_of(ledger) == position

    @pytest.mark.parametrize(
        ("meta", "message"),
        [
            (metadata("kaze?", "0.1.6"), "name"),
            (metadata("kaze", "0.1"), "version"),
            (
                metadata(
                    "kaze",
                    "0.1.6",
                    deps=[
                        {
                            "name": "serde",
                            "version_req": "not a requirement!!",
                            "features": [],
                            "optional": False,
                            "default_features": True,
                            "target": None,
                            "kind": "normal",
                            "registry": None,
                            "explicit_name_in_toml": None,
                        }
                    ],
                ),
                "req|requirement",
            ),
        ],
    )
    def test_invalid_metadata_in_valid_framing_is_refused(
        self, ledger: Ledger, registry: Registry, meta: dict[str, Any], message: str
    ) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        position = events_of(ledger)
        with pytest.raises(Invalid, match=message):
            registry.publish(token, body(meta, crate_bytes("kaze", "0.1.6")))
        assert stored_files(ledger) == []
        assert events_of(ledger) == position

    def test_a_crate_over_the_limit_is_refused(self, ledger: Ledger, registry: Registry) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        big = b"\0" * (MAX_CRATE + 1)
        with pytest.raises(Invalid) as refused:
            registry.publish(token, body(metadata("kaze", "0.1.6"), big))
        assert refused.value.details.get("field") == "crate_size"
        assert stored_files(ledger) == []


class TestYankAndFiles:
    def test_yank_and_unyank_by_the_owner(self, ledger: Ledger, registry: Registry) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        registry.publish(token, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6")))
        registry.yank(token, "kaze", "0.1.6")
        ledger.views.catch_up()
        assert ledger.db.query("SELECT state FROM view_versions") == [("yanked",)]
        registry.unyank(token, "kaze", "0.1.6")
        ledger.views.catch_up()
        assert ledger.db.query("SELECT state FROM view_versions") == [("published",)]
        actors = [e["actor"] for e in ledger.history("kaze", "0.1.6") if e["event"].startswith("Version")]
        assert actors == ["alice", "alice", "alice"]

    def test_the_audit_reports_a_version_whose_file_is_missing(
        self, ledger: Ledger, registry: Registry
    ) -> None:
        token = ledger.app.create_token("alice", "operator")[1]
        published = registry.publish(token, body(metadata("kaze", "0.1.6"), crate_bytes("kaze", "0.1.6")))
        assert ledger.audit().counts["missing_file"] == 0
        for path in stored_files(ledger):
            path.unlink()
        report = ledger.audit()
        assert report.counts["missing_file"] == 1
        assert not report.consistent
        (found,) = [d for d in report.discrepancies if d.cls == "missing_file"]
        assert (found.crate, found.version) == ("kaze", "0.1.6")
        assert published.cksum in found.difference


def test_owners_survive_the_crates_snapshots(ledger: Ledger) -> None:
    """A crate is snapshotted every 100 events: its owners are kept in the snapshot and read back."""
    from tests.conftest import make_line

    for n in range(105):
        ledger.app.publish(make_line("kaze", f"0.1.{n}"), "alice", owner="alice")
    ledger.app.add_owner("kaze", "bob", "operator")
    crate = ledger.app.find_crate("kaze")
    assert crate is not None
    assert list(crate.owners) == ["alice", "bob"]
    assert ledger.app.snapshots is not None
    assert list(ledger.app.snapshots.get(crate.id))  # a snapshot was taken and holds the owners
