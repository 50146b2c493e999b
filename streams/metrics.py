"""Every Prometheus metric of the worker, declared once, here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CATALOG_SINK_LAG = Gauge(
    "catalog_sink_lag", "Catalog changes not yet written to the catalog database",
    ["partition"])
CATALOG_SINK_ROWS = Counter(
    "catalog_sink_rows_total", "Cover records handed to the catalog database, by result",
    ["result"])  # changed | unchanged (older or identical version)
CATALOG_SINK_RETRIES = Counter(
    "catalog_sink_retries_total", "Catalog batches retried after a transient database error")
CATALOG_SINK_BATCH_SECONDS = Histogram(
    "catalog_sink_batch_seconds", "Time to write one batch to the catalog database",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

# --- the HTTP shim ---
SHIM_REQUESTS = Counter(
    "shim_requests_total", "HTTP requests to the shim", ["method", "route", "status"])
SHIM_LATENCY = Histogram(
    "shim_request_duration_seconds", "Time to answer a shim request", ["route"])
SHIM_PUBLISH_FAILURES = Counter(
    "shim_publish_failures_total", "Requests refused with 503 because the broker did not ack")
