"""Prometheus metrics: valid text exposition, every named metric, and counts that match the ledger."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any
from uuid import uuid4

import pytest

from ledger.adapters.telemetry import exposition, views_registry
from ledger.bootstrap import open_ledger
from ledger.domain.names import collision_key, index_path
from ledger.services.ledger import Ledger
from ledger.services.publishing import Receipt
from ledger.settings import Settings
from projections.consistency import CLASSES

ACTOR = "alice"
LineFactory = Callable[..., dict[str, Any]]
SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')
NAMED = {
    "ledger_store_up",
    "ledger_scans_total",
    "ledger_repairs_total",
    "ledger_versions_out_of_sync",
    "ledger_versions",
    "ledger_oldest_pending_age_seconds",
    "ledger_queue_depth",
    "ledger_oldest_open_job_age_seconds",
    "ledger_projection_lag_events",
    "ledger_last_confirmed_push_timestamp_seconds",
    "ledger_log_position",
}


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with open_ledger(Settings(store=store_url)) as opened:
        yield opened


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, labels); fails on any line that is not valid exposition text."""
    assert text.endswith("\n")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    typed: set[str] = set()
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in {"gauge", "counter"}, line
            typed.add(name)
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        assert name in typed, f"{name} has no # TYPE line before it"
        assert name in helped, f"{name} has no # HELP line before it"
        labels = tuple(sorted((m["key"], m["value"]) for m in LABEL.finditer(match["labels"] or "")))
        samples[(name, labels)] = float(match["value"])
    return samples


def render_metrics(ledger: Ledger) -> str:
    """What ``ledger metrics`` prints: the views' figures in Prometheus text."""
    return exposition(views_registry(lambda: nullcontext(ledger)))


def _commit() -> str:
    return (uuid4().hex + uuid4().hex)[:40]


def sync(ledger: Ledger, receipt: Receipt) -> None:
    """Record a confirmed push of the crate's whole file, then the job's completion."""
    ledger.views.catch_up()
    rows = ledger.db.query(
        "SELECT version, vers_key, state, digest FROM view_versions "
        "WHERE crate_key = ? AND state <> 'deleted' ORDER BY seq",
        (collision_key(receipt.crate),),
    )
    job = ledger.app.get_job(receipt.job)
    commit = _commit()
    job.confirmed(
        crate=receipt.crate,
        commit=commit,
        remote_head=commit,
        method="read-back",
        path=index_path(receipt.crate),
        entries=[[v, k, s == "yanked", d] for v, k, s, d in rows],
        target="git",
    )
    job.completed(commit=commit)
    ledger.app.save_jobs([job])


def fail(ledger: Ledger, receipt: Receipt) -> None:
    job = ledger.app.get_job(receipt.job)
    job.failed(reason="unconfirmed", detail="no status", remote_head=None, next_retry=None, target="git")
    ledger.app.save_jobs([job])


def abandon(ledger: Ledger, receipt: Receipt) -> None:
    job = ledger.app.get_job(receipt.job)
    job.abandoned(reason="deleted from the queue by hand")
    ledger.app.save_jobs([job])


class TestExposition:
    def test_empty_ledger_reports_every_metric_as_zero(self, ledger: Ledger) -> None:
        """A ledger with no events exposes every named metric, every class and state included, at zero."""
        samples = parse(render_metrics(ledger))
        assert {name for name, _ in samples} == NAMED
        for cls in CLASSES:
            assert samples[("ledger_versions_out_of_sync", (("class", cls),))] == 0
        for state in ("published", "yanked", "deleted"):
            assert samples[("ledger_versions", (("state", state),))] == 0
        assert samples.pop(("ledger_store_up", ())) == 1
        assert all(value == 0 for value in samples.values())


class TestCounts:
    def test_counts_match_a_known_scenario(self, ledger: Ledger, line: LineFactory) -> None:
        """Every figure agrees with a scenario of synced, pending, stuck, lost and mismatched versions."""
        started = time.time()
        sync(ledger, ledger.publish(line("alpha", "1.0.0"), ACTOR))  # in sync
        ledger.publish(line("alpha", "1.1.0"), ACTOR)  # pending
        fail(ledger, ledger.publish(line("beta", "0.1.0"), ACTOR))  # stuck: failing
        abandon(ledger, ledger.publish(line("gamma", "0.1.0"), ACTOR))  # lost
        sync(ledger, ledger.publish(line("delta", "0.1.0"), ACTOR))
        abandon(ledger, ledger.yank("delta", "0.1.0", ACTOR))  # yank_mismatch
        ledger.publish(line("epsilon", "0.1.0"), ACTOR)
        ledger.delete("epsilon", "0.1.0", ACTOR, "malware")  # deleted before it reached the index
        ledger.views.catch_up()
        ledger.publish(line("zeta", "0.1.0"), ACTOR)  # pending, and not yet in the views
        head = ledger.views.head()
        behind = head - ledger.views.position()
        assert behind == 3  # registered, published, enqueued

        samples = parse(render_metrics(ledger))
        finished = time.time()

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert {cls: value("ledger_versions_out_of_sync", **{"class": cls}) for cls in CLASSES} == {
            "pending": 2,
            "stuck": 1,
            "lost": 1,
            "foreign": 0,
            "phantom": 0,
            "yank_mismatch": 1,
            "content_mismatch": 0,
            "missing_file": 0,
        }
        assert {s: value("ledger_versions", state=s) for s in ("published", "yanked", "deleted")} == {
            "published": 5,
            "yanked": 1,
            "deleted": 1,
        }
        assert value("ledger_queue_depth") == 5  # alpha 1.1.0, beta, epsilon twice, zeta
        assert value("ledger_projection_lag_events") == behind
        assert value("ledger_log_position") == head
        assert 0 < value("ledger_oldest_pending_age_seconds") <= finished - started
        assert 0 < value("ledger_oldest_open_job_age_seconds") <= finished - started
        assert value("ledger_oldest_open_job_age_seconds") >= value("ledger_oldest_pending_age_seconds")
        assert started <= value("ledger_last_confirmed_push_timestamp_seconds") <= finished

    def test_lag_is_measured_before_catching_up(self, ledger: Ledger, line: LineFactory) -> None:
        """The lag says how far behind the views were; scraping catches them up, so the next scrape says 0."""
        ledger.publish(line("kaze", "0.1.6"), ACTOR)
        assert parse(render_metrics(ledger))[("ledger_projection_lag_events", ())] == 3
        assert ledger.views.lag() == 0
        assert parse(render_metrics(ledger))[("ledger_projection_lag_events", ())] == 0
