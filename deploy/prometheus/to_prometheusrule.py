"""Print deploy/prometheus/alerts.yml as a Prometheus Operator PrometheusRule.

alerts.yml stays the one source (promtool checks and tests it); this wraps its groups
for clusters where the operator loads rules. `make prometheusrule` writes the result to
deploy/k8s/components/servicemonitor/prometheusrule.yaml, and a deploy test fails when
the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ALERTS = Path(__file__).with_name("alerts.yml")
HEADER = "# Generated from deploy/prometheus/alerts.yml by `make prometheusrule`: edit that file.\n"


def prometheus_rule(alerts_text: str) -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sluice", "labels": {"app.kubernetes.io/name": "sluice"}},
        "spec": {"groups": yaml.safe_load(alerts_text)["groups"]},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(prometheus_rule(ALERTS.read_text()))
