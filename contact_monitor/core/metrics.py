"""The process's metrics, in Prometheus' text format at `/metrics` (prometheus-client).

One registry per app (not the library's global one), so that several apps in one process, as in
the tests, count apart. With `--workers N` each worker counts its own requests: scrape each, or
run one worker per container.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FLUSH_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


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

    def observe_batch(self, collection: str, size: int, seconds: float) -> None:
        self.batch_size.labels(collection).observe(size)
        self.batch_seconds.labels(collection).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read when scraped (subscribers, open websockets, ...)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)
