"""The Grafana dashboard asks only for metrics the code exports, with labels they carry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from streams import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / (
    "covers.json")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\[[^\]]*\])?")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
PROMQL_WORDS = {"sum", "rate", "increase", "max", "min", "avg", "by", "histogram_quantile",
                "le", "count", "topk"}


def _exported() -> dict[str, set[str]]:
    """Every sample name the worker and the shim can export -> its label names."""
    metrics.faust_monitor()  # Faust's sensor registers its metrics on first use
    names: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",), "summary": ("_sum", "_count")}
    for collector in list(REGISTRY._collector_to_names):  # no public walk of the collectors
        if isinstance(collector, MetricWrapperBase):
            labels = set(collector._labelnames)
            for suffix in suffixes[collector._type]:
                names[collector._name + suffix] = labels | (
                    {"le"} if suffix == "_bucket" else set())
        else:  # the process and platform collectors: no labels worth grouping by
            names.update({s.name: set() for f in collector.collect() for s in f.samples})
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _series(expr: str) -> list[tuple[str, str]]:
    found = []
    for name, labels, _ in SELECTOR.findall(expr):
        if name in PROMQL_WORDS or name.startswith("$") or not (labels or "_" in name):
            continue
        found.append((name, labels))
    return found


def test_every_expression_names_exported_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    exported = _exported()
    assert "cover_jobs_total" in exported and "faust_messages_received_total" in exported
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            series = _series(expr.replace("$__rate_interval", "5m"))
            assert series, expr
            for name, labels in series:
                assert name in exported, f"{panel['title']}: no metric {name}"
                used.add(name)
                for label in re.findall(r"(\w+)\s*=~?", labels):
                    assert label in exported[name], f"{name} has no label {label}"
                for group in GROUPING.findall(expr):
                    for label in (g.strip() for g in group.split(",")):
                        assert label in exported[name], f"{expr}: {name} lacks {label}"
    # What the dashboard is for: throughput, latency, errors by reason, lag, dead letters.
    assert {"cover_jobs_total", "image_processing_duration_seconds_bucket",
            "cover_consumer_lag", "cover_dead_letters_total",
            "cover_stage_duration_seconds_bucket", "cover_retries_total"} <= used


def test_a_typo_is_caught() -> None:
    exported = _exported()
    ((name, _),) = _series('sum(rate(cover_job_total{outcome="processed"}[5m]))')
    assert name not in exported


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
