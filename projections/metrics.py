"""The ledger's counts, ages and lag, read from the views, as metric families.

Every metric is a gauge named ``ledger_*`` (``ledger.adapters.telemetry`` exposes them in Prometheus text
with the worker's own counters). The projection lag is measured before the views are caught up
(it says how far behind they were when scraped); every other figure is read after, so it
describes the whole log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.ports import Database
from projections.consistency import CLASSES, AuditReport
from projections.runner import ViewRunner
from projections.schema import DEFAULT_GRACE_S


class Measured(Protocol):
    """What the metrics read of a ledger: its store, its views and its audit."""

    @property
    def db(self) -> Database: ...
    @property
    def views(self) -> ViewRunner: ...
    def audit(self, *, grace: float = ...) -> AuditReport: ...


VERSION_STATES = ("published", "yanked", "deleted")


@dataclass(frozen=True)
class Metric:
    """One metric family: its name, help text and samples (labels, value)."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    type: str = "gauge"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "help": self.help,
            "type": self.type,
            "samples": [{"labels": labels, "value": value} for labels, value in self.samples],
        }


def collect(ledger: Measured, *, grace: float = DEFAULT_GRACE_S) -> list[Metric]:
    """Every metric, from the views (caught up after the lag is measured)."""
    lag = ledger.views.lag()
    report = ledger.audit(grace=grace)
    now = report.as_of
    db = ledger.db

    counts = report.counts
    pending = [d.since for d in report.discrepancies if d.cls == "pending"]
    by_state = dict.fromkeys(VERSION_STATES, 0)
    for state, count in db.query("SELECT state, COUNT(*) FROM view_versions GROUP BY state ORDER BY state"):
        by_state[str(state)] = int(count)
    open_jobs, oldest_job = db.query("SELECT COUNT(*), MIN(enqueued_at) FROM view_jobs WHERE state = 'open'")[
        0
    ]
    last_push = db.query("SELECT MAX(updated_at) FROM view_index_files WHERE source = 'push'")[0][0]

    return [
        Metric(
            "ledger_versions_out_of_sync",
            "Versions out of sync between the registry and the index, by consistency class.",
            [({"class": cls}, counts[cls]) for cls in CLASSES],
        ),
        Metric(
            "ledger_versions",
            "Versions the registry recorded, by state.",
            [({"state": state}, count) for state, count in by_state.items()],
        ),
        Metric(
            "ledger_oldest_pending_age_seconds",
            "Age of the oldest pending version's open job (0 when nothing is pending).",
            [({}, max(0.0, now - min(pending)) if pending else 0.0)],
        ),
        Metric("ledger_queue_depth", "Open index sync jobs.", [({}, int(open_jobs))]),
        Metric(
            "ledger_oldest_open_job_age_seconds",
            "Age of the oldest open index sync job (0 when the queue is empty).",
            [({}, max(0.0, now - float(oldest_job)) if oldest_job is not None else 0.0)],
        ),
        Metric(
            "ledger_projection_lag_events",
            "Log positions the views were behind the event log when scraped.",
            [({}, lag)],
        ),
        Metric(
            "ledger_last_confirmed_push_timestamp_seconds",
            "Time of the last push confirmed by reading the remote back (0 when none).",
            [({}, float(last_push) if last_push is not None else 0.0)],
        ),
        Metric("ledger_log_position", "The last position in the event log.", [({}, ledger.views.head())]),
    ]


PER_TARGET = frozenset(
    (
        "ledger_versions_out_of_sync",
        "ledger_oldest_pending_age_seconds",
        "ledger_queue_depth",
        "ledger_oldest_open_job_age_seconds",
        "ledger_projection_lag_events",
        "ledger_last_confirmed_push_timestamp_seconds",
    )
)
"""The figures each index target's views answer for themselves; the others are the registry's."""


def collect_targets(cores: Sequence[tuple[str, Measured]], *, grace: float = DEFAULT_GRACE_S) -> list[Metric]:
    """Every metric of a ledger with these index targets (name, core), the first one first.

    One target: :func:`collect` as it is. Several: the figures of :data:`PER_TARGET` once per
    target with a ``target`` label (an alert on them fires for the target that is behind), the
    others once.
    """
    if len(cores) == 1:
        return collect(cores[0][1], grace=grace)
    merged: dict[str, Metric] = {}
    for name, core in cores:
        for metric in collect(core, grace=grace):
            if metric.name not in PER_TARGET:
                merged.setdefault(metric.name, metric)
                continue
            found = merged.setdefault(metric.name, Metric(metric.name, metric.help, [], metric.type))
            found.samples.extend(({**labels, "target": name}, value) for labels, value in metric.samples)
    return list(merged.values())
