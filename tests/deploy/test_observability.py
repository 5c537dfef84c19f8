"""The Grafana dashboard and the Prometheus alert rules load and use the real metric names."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_support import DEPLOY, yaml

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sluice.json"
PROMETHEUS = DEPLOY / "prometheus"

# The metrics the services expose (histograms without their _bucket/_sum/_count suffix).
METRICS = {
    "sluice_streams_submitted_total",
    "sluice_streams_finished_total",
    "sluice_runner_ttft_seconds",
    "sluice_runner_inter_token_seconds",
    "sluice_runner_tokens_total",
    "sluice_runner_slots_in_use",
    "sluice_runner_slots_total",
    "sluice_streamer_open_connections",
    "sluice_streamer_first_frame_seconds",
    "sluice_streamer_delivery_lag_seconds",
    "sluice_streamer_disconnects_total",
    "sluice_streamer_resumes_total",
    "sluice_cancel_to_stop_seconds",
    "sluice_tokens_wasted_total",
    "sluice_coordinator_queue_depth",
    "sluice_coordinator_queue_wait_seconds",
    "sluice_coordinator_rejections_total",
    "sluice_runners_alive",
    "sluice_runner_lost_total",
    "sluice_http_errors_total",
    "sluice_runner_flush_window_seconds",
}
GAUGES = {"sluice_runner_flush_window_seconds"}
HISTOGRAMS = {m for m in METRICS if m.endswith("_seconds")} - GAUGES


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bsluice_[a-z_]+", expr))
    return {
        re.sub(r"_(bucket|sum|count)$", "", n)
        if n.endswith(("_bucket", "_sum", "_count"))
        and re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS
        else n
        for n in names
    }


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_panels_query_only_known_metrics() -> None:
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]) <= METRICS, (panel["title"], target["expr"])


def test_dashboard_shows_every_metric() -> None:
    shown = {
        name for panel in panels() for t in panel["targets"] for name in metric_names(t["expr"])
    }
    assert shown == METRICS


def test_latency_histograms_are_heatmaps() -> None:
    heatmaps = [p for p in panels() if p["type"] == "heatmap"]
    assert {m for p in heatmaps for m in metric_names(p["targets"][0]["expr"])} == HISTOGRAMS
    for panel in heatmaps:
        assert panel["targets"][0]["format"] == "heatmap"
        assert "_bucket[" in panel["targets"][0]["expr"]


def test_dashboard_ids_are_unique_and_provisioned() -> None:
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sluice.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_expr_for_labels_annotations() -> None:
    for rule in rules():
        assert {"alert", "expr", "for", "labels", "annotations"} <= rule.keys(), rule.get("alert")
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description"} <= rule["annotations"].keys()
        assert metric_names(rule["expr"]) <= METRICS, rule["alert"]


def test_alerts_cover_the_agreed_situations() -> None:
    covered = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert {
        "sluice_runner_ttft_seconds",
        "sluice_streamer_delivery_lag_seconds",
        "sluice_streamer_disconnects_total",
        "sluice_runner_lost_total",
        "sluice_coordinator_rejections_total",
        "sluice_coordinator_queue_wait_seconds",
        "sluice_tokens_wasted_total",
    } <= covered
    assert any(rule["expr"].startswith("up{") for rule in rules()), "a service-down alert"


def test_adapter_serves_the_autoscaling_metrics() -> None:
    adapter = yaml.safe_load((PROMETHEUS / "adapter-rules.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert served == {"sluice_streamer_open_connections", "sluice_runner_slots_in_use"}


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool_accepts(promtool: str, args: list[str]) -> None:
    done = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


RUNBOOKS = DEPLOY.parent / "docs" / "runbooks.md"


def test_every_alert_links_its_runbook_section() -> None:
    headings = {
        line.removeprefix("## ").strip().lower()
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules():
        url = urlsplit(rule["annotations"]["runbook_url"])
        assert url.scheme == "https" and url.netloc, rule["alert"]
        assert url.path.endswith("/docs/runbooks.md"), rule["alert"]
        assert url.fragment == rule["alert"].lower() and url.fragment in headings, rule["alert"]


AGGREGATION = re.compile(r"\b(sum|max|min|avg|count)\s*(by\s*\(([^)]*)\))?\s*\(")


def test_every_aggregation_keeps_the_namespace() -> None:
    """Two installations in one Prometheus must not add up into one alert."""
    for rule in rules():
        aggregations = AGGREGATION.findall(rule["expr"])
        for _, by, labels in aggregations:
            assert by, f"{rule['alert']}: an aggregation drops every label"
            assert "namespace" in {label.strip() for label in labels.split(",")}, rule["alert"]


def duration_s(text: str) -> int:
    return sum(
        int(n) * {"s": 1, "m": 60, "h": 3600}[unit] for n, unit in re.findall(r"(\d+)([smh])", text)
    )


def test_runner_lost_outlasts_a_rollout() -> None:
    """A rollout replaces runners within minutes; only losses that go on should page."""
    (rule,) = [r for r in rules() if r["alert"] == "SluiceRunnerLost"]
    assert duration_s(rule["for"]) >= 15 * 60
