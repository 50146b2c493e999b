"""Every Prometheus metric of the worker, declared once, here."""

from __future__ import annotations

import functools

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)
_BYTES = tuple(float(2 ** n) for n in range(10, 28, 2))  # 1 KiB .. 128 MiB

# --- jobs (the image metrics keep the names of the worker this project replaces) ---
IMAGE_PROCESSING_DURATION = Histogram(
    "image_processing_duration_seconds", "Fetch to stored renditions, per job",
    ["preset", "success"], buckets=_SECONDS)
IMAGE_COMPRESSION_RATIO = Histogram(
    "image_compression_ratio", "Source bytes / rendition bytes", ["preset", "variant"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
IMAGE_ORIGINAL_SIZE = Histogram(
    "image_original_size_bytes", "Bytes of each fetched source", ["preset"], buckets=_BYTES)
IMAGE_COMPRESSED_SIZE = Histogram(
    "image_compressed_size_bytes", "Bytes of each rendition", ["preset", "variant"],
    buckets=_BYTES)
JOBS = Counter(
    "cover_jobs_total", "Inputs by outcome (processed, duplicate, skipped, retry, dead_letter) "
    "and reason code", ["outcome", "reason"])
RETRIES = Counter(
    "cover_retries_total", "Inputs sent to a retry tier, by tier (= failed attempts) and reason",
    ["tier", "reason"])
SKIPPED_OFFSETS = Counter(
    "cover_skipped_offsets_total",
    "Input offsets the consumer skipped after a rebalance and the worker read back itself",
    ["topic"])
DEAD_LETTERS = Counter("cover_dead_letters_total", "Dead letters by reason code", ["reason"])
STAGE_DURATION = Histogram(
    "cover_stage_duration_seconds",
    "Time per stage: fetch, decode, render, encode, store (per job), sink (per catalog batch)",
    ["stage"], buckets=_SECONDS)
IN_FLIGHT = Gauge("cover_jobs_in_flight", "Inputs being handled right now")
CONSUMER_LAG = Gauge(
    "cover_consumer_lag", "Input events not yet read, per topic partition",
    ["topic", "partition"])

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


@functools.cache
def faust_monitor() -> PrometheusMonitor:
    """Faust's sensor (``faust_*``: messages, events, table operations, sends, rebalances),
    registered once per process with a fixed prefix, whatever the app id."""
    return PrometheusMonitor(metrics=FaustMetrics.create(REGISTRY, "faust"))
