"""Prometheus metrics (prometheus_client), one registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter(
            "musicprod_requests_total", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "musicprod_request_latency_seconds",
            "Request latency until the response (for streams: until the last event)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_generated = Counter("musicprod_generated_tokens_total", "Completion tokens generated", registry=r)
        self.prompt_tokens = Counter("musicprod_prompt_tokens_total", "Prompt tokens processed", registry=r)
        self.queue_depth = Gauge("musicprod_queue_depth", "Requests waiting for the model worker", registry=r)
        self.active_rows = Gauge("musicprod_batch_active_rows", "Rows in the batch being generated now", registry=r)
        self.batch_size = Histogram(
            "musicprod_batch_size", "Requests per generated batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.joined = Counter(
            "musicprod_batch_joins_total",
            "Requests that joined a batch already decoding (continuous batching) instead of waiting for it to end",
            registry=r,
        )
        self.cancelled = Counter(
            "musicprod_client_disconnects_total",
            "Requests whose client hung up before the answer was complete; their generation was stopped",
            registry=r,
        )
        self.queue_wait = Histogram(
            "musicprod_queue_wait_seconds", "Time from enqueue to batch start", buckets=LATENCY_BUCKETS, registry=r
        )

    def bind_engine(self, engine) -> None:
        self.queue_depth.set_function(engine.queue_depth)
        self.active_rows.set_function(lambda: engine.active_rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
