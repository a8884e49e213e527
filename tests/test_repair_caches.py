"""Repair planning keeps what it read beside the clone: what it keeps never changes a plan.

The shapes of the files at the last commit planned, and the database view's fingerprints at the
last log position planned, are reused only where git and the views say nothing changed; a
missing, damaged or foreign copy means reading everything again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.domain.names import index_path
from ledger.services import repair as repair_module
from ledger.services import repair_caches
from ledger.services.ledger import Ledger
from tests.conftest import make_line
from tests.test_repair import (
    ACTOR,
    bare_remote,
    file_of,
    opened,
    publish_and_sync,
    push_straight,
    remote_file,
)

CRATES = ("serde", "rand", "tokio", "kaze")


def kept(ledger: Ledger) -> tuple[Path, Path]:
    folder = ledger.index().path
    return folder / repair_caches.SHAPES_FILE, folder / repair_caches.REGISTRY_FILE


def seeded(ledger: Ledger) -> None:
    for name in CRATES:
        publish_and_sync(ledger, make_line(name, "1.0.0"), make_line(name, "1.1.0"))
    first = ledger.repair()
    assert first.confirmed
    assert all(path.exists() for path in kept(ledger))


@pytest.mark.parametrize("damage", ["none", "missing", "garbled", "foreign log", "unknown commit"])
def test_a_lost_line_is_found_whatever_was_kept(store_url: str, tmp_path: Path, damage: str) -> None:
    remote = bare_remote(tmp_path)
    with opened(store_url, remote, tmp_path) as ledger:
        seeded(ledger)
        shapes, registry = kept(ledger)
        push_straight(remote, {index_path("rand"): file_of(make_line("rand", "1.0.0"))})
        if damage == "missing":
            shapes.unlink()
            registry.unlink()
        elif damage == "garbled":
            shapes.write_text(shapes.read_text()[:-30])
            registry.write_text(registry.read_text().replace("\t", " ", 2))
        elif damage == "foreign log":
            lines = registry.read_text().split("\n")
            lines[2] = "0" * 64
            registry.write_text("\n".join(lines))
        elif damage == "unknown commit":
            lines = shapes.read_text().split("\n")
            lines[1] = "1" * 40
            shapes.write_text("\n".join(lines))
        dry = ledger.repair(dry_run=True)
        assert [(c.path, c.added) for c in dry.changes] == [(index_path("rand"), ["1.1.0"])]
        result = ledger.repair()
        assert [(c.path, c.added) for c in result.changes] == [(index_path("rand"), ["1.1.0"])]
        assert remote_file(remote, index_path("rand")) == file_of(
            make_line("rand", "1.0.0"), make_line("rand", "1.1.0")
        )
        assert ledger.repair().changed == 0
        assert ledger.audit().consistent


def test_changes_in_the_ledger_after_the_kept_position_are_planned(store_url: str, tmp_path: Path) -> None:
    """A yank, a deletion and a new version recorded since the last plan, none of them synced."""
    remote = bare_remote(tmp_path)
    with opened(store_url, remote, tmp_path) as ledger:
        seeded(ledger)
        ledger.yank("serde", "1.0.0", ACTOR)
        ledger.delete("tokio", "1.1.0", ACTOR, reason="malware")
        ledger.publish(make_line("kaze", "2.0.0"), ACTOR)
        ledger.publish(make_line("fresh", "0.1.0"), ACTOR)
        result = ledger.repair(remove_phantoms=True)  # the deleted version's line goes too
        assert sorted(c.path for c in result.changes) == sorted(
            index_path(name) for name in ("serde", "tokio", "kaze", "fresh")
        )
        assert remote_file(remote, index_path("serde")) == file_of(
            make_line("serde", "1.0.0", yanked=True), make_line("serde", "1.1.0")
        )
        assert remote_file(remote, index_path("tokio")) == file_of(make_line("tokio", "1.0.0"))
        assert remote_file(remote, index_path("fresh")) == file_of(make_line("fresh", "0.1.0"))
        assert ledger.repair().changed == 0


def test_what_is_kept_equals_reading_everything(store_url: str, tmp_path: Path) -> None:
    remote = bare_remote(tmp_path)
    with opened(store_url, remote, tmp_path) as ledger:
        seeded(ledger)
        push_straight(
            remote,
            {
                index_path("kaze"): None,
                index_path("serde"): file_of(make_line("serde", "1.1.0"), make_line("serde", "9.9.9")),
                "notes.txt": b"hello\n",
            },
        )
        ledger.publish(make_line("rand", "2.0.0"), ACTOR)
        ledger.views.catch_up()
        db, index = ledger.db, ledger.index()
        head = index.fetch()
        cached = repair_module._Planner(db, ledger.log, remove_phantoms=False).plan(index, head)
        for path in kept(ledger):
            path.unlink()
        fresh = repair_module._Planner(db, ledger.log, remove_phantoms=False).plan(index, head)
        assert [c.to_dict(entries=True) for c in cached.changes] == [
            c.to_dict(entries=True) for c in fresh.changes
        ]
        assert cached.phantoms == fresh.phantoms
        assert cached.config == fresh.config
        assert {c.path for c in fresh.changes} == {index_path(n) for n in ("kaze", "serde", "rand")}
