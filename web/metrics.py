"""Prometheus metrics of one application instance (its own registry, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "concilia_http_requests",
            "HTTP requests served, by route pattern and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "concilia_http_request_seconds",
            "Time to serve an HTTP request",
            ["route"],
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "concilia_sign_ins",
            "Sign-in attempts by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.mails = Counter(
            "concilia_mails",
            "Mails handled by the outbox worker, by resulting status",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
