"""What a platform team checks before adopting the manifests: rollouts, sizing, probes,
placement, identities, admission, the Gateway API route, alert rules, pinned images."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import DEPLOY, OVERLAYS, ROUTES, SERVICES, container, env_value, of_kind, yaml

from libs.common.service import READY_REDIS_TIMEOUT_S
from libs.common.settings import load_settings

Objects = dict[str, list[dict[str, Any]]]
GIB = 1024**3
# What a streamer process holds besides its connections' buffers (Python, aiohttp, NATS,
# Redis clients, telemetry), with a wide margin over the ~100 MiB it uses idle.
STREAMER_BASELINE_BYTES = 256 * 1024**2


def quantity_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"Ki": 1024, "Mi": 1024**2, "Gi": GIB, None: 1}[unit]


def quantity_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(
    rendered: Objects, overlay: str
) -> None:
    """A replicas field on an HPA target resets the count on every apply."""
    targets = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in of_kind(rendered[overlay], "HorizontalPodAutoscaler").values()
    }
    assert targets == {"gateway", "streamer", "runner"}
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        assert ("replicas" in deployment["spec"]) == (name not in targets), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streamer_connection_buffers_fit_its_memory_limit(rendered: Objects, overlay: str) -> None:
    streamer = of_kind(rendered[overlay], "Deployment")["streamer"]
    settings = load_settings(
        {
            e["name"]: e["value"]
            for e in container(streamer)["env"]
            if e["name"].startswith("SLUICE_") and "value" in e
        }
    )
    worst = settings.max_connections * settings.conn_buffer_bytes + STREAMER_BASELINE_BYTES
    limit = quantity_bytes(container(streamer)["resources"]["limits"]["memory"])
    assert worst <= limit, f"{worst / GIB:.2f} GiB of buffers over a {limit / GIB:.2f} GiB limit"
    resources = container(streamer)["resources"]
    assert resources["requests"] == resources["limits"], "Guaranteed QoS for connection holders"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_process_services_are_limited_to_one_core(rendered: Objects, overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        resources = container(deployment)["resources"]
        assert quantity_cores(resources["limits"]["cpu"]) <= 1, name
        requested = quantity_cores(resources["requests"]["cpu"])
        assert 0 < requested <= quantity_cores(resources["limits"]["cpu"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streamer_scales_on_cpu_as_well_as_connections(rendered: Objects, overlay: str) -> None:
    hpa = of_kind(rendered[overlay], "HorizontalPodAutoscaler")["streamer"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] <= 80
    streamer = of_kind(rendered[overlay], "Deployment")["streamer"]
    per_pod = int(metrics["Pods"]["pods"]["target"]["averageValue"])
    assert per_pod < int(env_value(streamer, "SLUICE_MAX_CONNECTIONS") or 0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_dependency_blip_leaves_pods_in_their_endpoints(rendered: Objects, overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        spec = container(deployment)
        readiness = spec["readinessProbe"]
        assert readiness["timeoutSeconds"] > READY_REDIS_TIMEOUT_S, name
        assert readiness["periodSeconds"] * readiness["failureThreshold"] >= 30, name
        startup = spec["startupProbe"]
        assert startup["httpGet"]["path"] == "/healthz", name
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, name
        assert "initialDelaySeconds" not in spec["livenessProbe"], "the startup probe gates it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_over_zones_and_nodes(rendered: Objects, overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]
        constraints = pod["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in constraints:
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector.items() <= pod["metadata"]["labels"].items(), name
            assert selector["app.kubernetes.io/name"] == name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_own_service_account(rendered: Objects, overlay: str) -> None:
    accounts = of_kind(rendered[overlay], "ServiceAccount")
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert accounts[name]["automountServiceAccountToken"] is False
        assert pod["automountServiceAccountToken"] is False


def restricted(pod: dict[str, Any]) -> bool:
    """The Pod Security "restricted" standard's container and pod requirements."""
    context = pod.get("securityContext", {})
    for spec in pod["containers"]:
        own = spec.get("securityContext", {})
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            return False
        if own.get("allowPrivilegeEscalation") is not False:
            return False
        if own.get("capabilities", {}).get("drop") != ["ALL"]:
            return False
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {}))
        if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(rendered: Objects, overlay: str) -> None:
    (namespace,) = of_kind(rendered[overlay], "Namespace").values()
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    workloads = [*of_kind(rendered[overlay], "Deployment").values()]
    workloads += of_kind(rendered[overlay], "StatefulSet").values()
    for workload in workloads:
        assert restricted(workload["spec"]["template"]["spec"]), workload["metadata"]["name"]


def route_backend(route: dict[str, Any], path: str) -> tuple[str, dict[str, str]]:
    """Exact first, then regular expressions, then the longest prefix (whole segments)."""
    entries = [(m["path"], rule) for rule in route["spec"]["rules"] for m in rule["matches"]]

    def hit(kind: str, matches: Any) -> list[tuple[int, dict[str, Any]]]:
        return [(len(p["value"]), r) for p, r in entries if p["type"] == kind and matches(p)]

    candidates = (
        hit("Exact", lambda p: p["value"] == path)
        or hit("RegularExpression", lambda p: re.fullmatch(p["value"], path))
        or hit(
            "PathPrefix",
            lambda p: p["value"] == "/" or path == p["value"] or path.startswith(p["value"] + "/"),
        )
    )
    assert candidates, f"no HTTPRoute match for {path}"
    rule = max(candidates, key=lambda c: c[0])[1]
    (backend,) = rule["backendRefs"]
    return backend["name"], rule["timeouts"]


@pytest.mark.parametrize(("path", "expected"), ROUTES.items())
def test_prod_httproute_routes_like_the_ingress(
    rendered: Objects, path: str, expected: str
) -> None:
    (route,) = of_kind(rendered["prod"], "HTTPRoute").values()
    assert not of_kind(rendered["prod"], "Ingress"), "one edge: the HTTPRoute replaces it"
    assert route["spec"]["hostnames"]
    name, timeouts = route_backend(route, path)
    assert name == expected
    long_lived = path.endswith(("/events", "/ws")) or path in {
        "/v1/chat/completions",
        "/v1/control",
    }
    assert (timeouts["request"] == "1h") == long_lived, (path, timeouts)
    assert timeouts["backendRequest"] == timeouts["request"]


def test_httproute_backends_are_the_service_ports(rendered: Objects) -> None:
    (route,) = of_kind(rendered["prod"], "HTTPRoute").values()
    for rule in route["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            assert backend["port"] == SERVICES[backend["name"]]


def test_prometheusrule_is_generated_from_the_alert_rules(rendered: Objects) -> None:
    (rule,) = of_kind(rendered["prod"], "PrometheusRule").values()
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], "run `make prometheusrule`"


DIGEST = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_third_party_images_are_pinned_by_digest(rendered: Objects, overlay: str) -> None:
    for workload in of_kind(rendered[overlay], "StatefulSet").values():
        for spec in workload["spec"]["template"]["spec"]["containers"]:
            assert DIGEST.match(spec["image"]), spec["image"]
