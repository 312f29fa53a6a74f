"""The process's metrics, in Prometheus' text format at `/metrics` (prometheus-client).

One registry per app (not the library's global one), so that several apps in one process, as in
the tests, count apart. With `--workers N` each worker counts its own requests: scrape each, or
run one worker per container.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FLUSH_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

M = TypeVar("M", bound=MetricWrapperBase)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tracking = Counter(
            "cm_tracking_requests",
            "Tracking requests by endpoint and result: recorded, skipped (bot, DNT, policy), failed.",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cm_insert_batch_size",
            "Documents per group-commit batch, by collection.",
            ["collection"],
            buckets=BATCH_SIZES,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "cm_insert_batch_seconds",
            "Time to write one group-commit batch, by collection.",
            ["collection"],
            buckets=FLUSH_SECONDS,
            registry=self.registry,
        )

        # Labelled children, looked up once per label values (`labels()` costs more than `inc()`;
        # every label here has a fixed, small set of values).
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: M, *labels: str) -> M:
        found = self._children.get((metric, labels))
        if found is None:
            found = self._children[(metric, labels)] = metric.labels(*labels)
        return found  # type: ignore[return-value]  # labels() answers the metric's own type

    def count(self, endpoint: str, result: str) -> None:
        """One tracking request (`cm_tracking_requests`)."""
        self.child(self.tracking, endpoint, result).inc()

    def observe_batch(self, collection: str, size: int, seconds: float) -> None:
        self.child(self.batch_size, collection).observe(size)
        self.child(self.batch_seconds, collection).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read when scraped (subscribers, open websockets, ...)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)
