"""Prometheus metrics, one registry per app (tests build many apps in one process).

With several workers each process exposes its own counters; scrape each or
aggregate at the gateway.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bff_http_requests_total",
            "HTTP requests by route, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "bff_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Coupon events (bff/events): refreshed by each process's outbox upkeep.
        self.outbox_rows = Gauge(
            "bff_events_outbox_rows",
            "Rows in the events outbox, feed included (from the ends of its ids: about)",
            registry=self.registry,
        )
        self.outbox_unpublished = Gauge(
            "bff_events_outbox_unpublished",
            "Outbox rows the broker has not confirmed yet (relay on only)",
            registry=self.registry,
        )
        self.outbox_lag = Gauge(
            "bff_events_outbox_lag_seconds",
            "Age of the oldest event not yet confirmed by the broker (relay on only)",
            registry=self.registry,
        )
        self.event_deliveries = Counter(
            "bff_events_deliveries",
            "Event deliveries of this process by channel (amqp) and result (confirmed, failed)",
            ("channel", "result"),
            registry=self.registry,
        )
        self.event_failures = Counter(
            "bff_events_relay_failures",
            "Relay rounds of this process that failed (broker or database), then backed off",
            registry=self.registry,
        )
        self.outbox_pruned = Counter(
            "bff_events_outbox_pruned",
            "Outbox rows this process pruned past the retention",
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
