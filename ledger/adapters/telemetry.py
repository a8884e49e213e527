"""Prometheus metrics: the worker's counters and histograms, the views' gauges, a scrape endpoint.

Two sources, one registry:

- :class:`WorkerMetrics`: what only the worker process sees, as it happens: pushes attempted (by
  what the pusher reported), confirmed, failed (by reason), read-backs (by outcome), jobs held,
  the duration of each pass and each push, each job's publish-to-confirmed time, and whether the
  remote answered the last time it was asked (``ledger_remote_up``).
- :class:`ViewsCollector`: at every scrape, the views' figures (:func:`projections.metrics.collect`)
  read on a connection of the scrape's own, plus the scans and repairs recorded in the log as
  counters. When the store cannot be reached the scrape still answers, with ``ledger_store_up 0``.

:func:`serve_metrics` exposes a registry on ``GET /metrics`` (prometheus_client's own server, in a
thread of its own), so a Prometheus server scrapes the worker directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.domain.aggregates import IndexRemote
from ledger.domain.errors import LedgerError
from ledger.logs import warn_step
from projections import metrics as views_metrics

if TYPE_CHECKING:
    from ledger.services.ledger import Ledger

PUSH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class WorkerMetrics:
    """The worker's own counters, histograms and gauges, registered in ``registry``: the
    :class:`~ledger.ports.Observer` a worker with a metrics endpoint is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pushes = Counter(
            "ledger_pushes",
            "Pushes attempted, by what the pusher reported (never trusted: see confirmed).",
            ["reported"],
            registry=registry,
        )
        self.confirmed_jobs = Counter(
            "ledger_jobs_confirmed",
            "Index sync jobs confirmed by reading the remote back.",
            registry=registry,
        )
        self.failures = Counter(
            "ledger_push_failures", "Attempts that did not count, by reason.", ["reason"], registry=registry
        )
        self.readbacks = Counter(
            "ledger_readbacks", "Read-backs of the remote, by outcome.", ["outcome"], registry=registry
        )
        self.held_jobs = Counter(
            "ledger_jobs_held",
            "Jobs held because their crate's file holds lines the ledger has no record of.",
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "ledger_worker_pass_duration_seconds",
            "Duration of worker passes that had jobs.",
            registry=registry,
        )
        self.push_seconds = Histogram(
            "ledger_push_duration_seconds", "Duration of each push.", buckets=PUSH_BUCKETS, registry=registry
        )
        self.latency = Histogram(
            "ledger_publish_to_confirmed_seconds",
            "From a job's enqueue (the publish) to its confirmation by read-back.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.remote_up_gauge = Gauge(
            "ledger_remote_up",
            "1 when the index remote answered the worker's last fetch or read-back; 0 otherwise or before.",
            registry=registry,
        )
        for reason in ("rejected", "no_status", "unconfirmed", "timeout", "unreachable", "error"):
            self.failures.labels(reason=reason)  # each series exists from the start, at 0

    # -- what the worker tells (ledger.ports.Observer) ----------------------------------------

    def pass_done(self, seconds: float) -> None:
        self.pass_seconds.observe(seconds)

    def remote_up(self, up: bool) -> None:
        self.remote_up_gauge.set(1 if up else 0)

    def read_back(self, confirmed: bool | None) -> None:
        outcome = "unreachable" if confirmed is None else "confirmed" if confirmed else "unconfirmed"
        self.readbacks.labels(outcome=outcome).inc()

    def pushed(self, reported: str, seconds: float | None) -> None:
        if seconds is not None:
            self.push_seconds.observe(seconds)
        self.pushes.labels(reported=reported).inc()

    def held(self) -> None:
        self.held_jobs.inc()

    def confirmed(self, latencies: Sequence[float]) -> None:
        self.confirmed_jobs.inc(len(latencies))
        for seconds in latencies:
            self.latency.observe(seconds)

    def failed(self, reason: str) -> None:
        self.failures.labels(reason=reason).inc()


class ViewsCollector(Collector):
    """The views' figures at each scrape, on a ledger of the scrape's own (``open_ledger``)."""

    def __init__(self, open_ledger: Callable[[], AbstractContextManager[Ledger]]) -> None:
        self._open = open_ledger
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                with self._open() as ledger:
                    found = list(_view_families(ledger))
            except (LedgerError, OSError) as exc:
                warn_step("metrics_store_unavailable", error=str(exc))
                yield _store_up(0.0)
                return
        yield _store_up(1.0)
        yield from found


def _store_up(value: float) -> Metric:
    return GaugeMetricFamily(
        "ledger_store_up", "1 when the scrape could read the ledger's store, else 0.", value=value
    )


def _view_families(ledger: Ledger) -> Iterator[Metric]:
    cores = [(core.target, core) for core in ledger.each_target()]
    for metric in views_metrics.collect_targets(cores):
        labels = sorted({key for sample, _ in metric.samples for key in sample})
        family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
        for sample, value in metric.samples:
            family.add_metric([sample[k] for k in labels], value)
        yield family
    scans = CounterMetricFamily("ledger_scans", "Scans of the real index recorded in the log.")
    scans.add_metric([], ledger.log.count_with_topic(IndexRemote.IndexScanned.TOPIC))
    yield scans
    repairs = CounterMetricFamily("ledger_repairs", "Repairs of the index recorded in the log.")
    repairs.add_metric([], ledger.log.count_with_topic(IndexRemote.RepairApplied.TOPIC))
    yield repairs


def views_registry(open_ledger: Callable[[], AbstractContextManager[Ledger]]) -> CollectorRegistry:
    """A registry holding the views' figures only (what ``ledger metrics`` prints)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewsCollector(open_ledger))
    return registry


def worker_registry(
    open_ledger: Callable[[], AbstractContextManager[Ledger]],
) -> tuple[CollectorRegistry, WorkerMetrics]:
    """The worker's endpoint: its own metrics, and the views' read on a ledger opened per scrape."""
    registry = views_registry(open_ledger)
    return registry, WorkerMetrics(registry)


def exposition(registry: CollectorRegistry) -> str:
    """The registry's metrics as Prometheus text."""
    return generate_latest(registry).decode()


class MetricsServer:
    """``GET /metrics`` for a registry, served by prometheus_client in a thread of its own."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``GET /metrics`` for ``registry`` (port 0: any free port) until ``close()``."""
    return MetricsServer(registry, port, host)
