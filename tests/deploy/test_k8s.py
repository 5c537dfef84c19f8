"""The kustomize overlays render, validate against the Kubernetes schemas, and are wired."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from deploy_support import (
    ADMIN_PORT,
    OVERLAYS,
    ROUTES,
    SERVICES,
    container,
    env_value,
    of_kind,
    require_module,
    sluice_variables,
    yaml,
)

from libs.common.settings import load_settings, variable_names
from services.runner.runner import HANDOFF_TIMEOUT_S

kubernetes_validate = require_module("kubernetes_validate", "kubernetes-validate")

KUBERNETES_VERSION = "1.30"
# Custom resources have no schema in kubernetes-validate; each is checked by its own test.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}

Objects = dict[str, list[dict[str, Any]]]


def port_number(spec: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in spec["ports"] if p["name"] == port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schema(rendered: Objects, overlay: str) -> None:
    for obj in rendered[overlay]:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_its_own_command_from_the_one_image(
    rendered: Objects, overlay: str
) -> None:
    deployments = of_kind(rendered[overlay], "Deployment")
    assert set(deployments) == set(SERVICES)
    images = {container(d)["image"] for d in deployments.values()}
    assert len(images) == 1, images
    for name, deployment in deployments.items():
        assert container(deployment)["args"] == [name]
        assert "command" not in container(deployment), "the image's ENTRYPOINT is `sluice`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_health_paths_on_the_served_port(rendered: Objects, overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        spec = container(deployment)
        assert [p["containerPort"] for p in spec["ports"]] == [SERVICES[name], ADMIN_PORT]
        assert env_value(deployment, f"SLUICE_{name.upper()}_PORT") == str(SERVICES[name])
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = spec[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert port_number(spec, get["port"]) == SERVICES[name], (name, probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_target_the_container_ports(rendered: Objects, overlay: str) -> None:
    deployments = of_kind(rendered[overlay], "Deployment")
    for name, service in of_kind(rendered[overlay], "Service").items():
        if name not in SERVICES:
            continue
        pod = deployments[name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        public, admin = service["spec"]["ports"]
        for port, number in ((public, SERVICES[name]), (admin, ADMIN_PORT)):
            assert port["port"] == number
            assert port_number(container(deployments[name]), port["targetPort"]) == number


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down(rendered: Objects, overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        spec = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        context = spec["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert {"requests", "limits"} <= spec["resources"].keys(), name


def backend_of(path: str, ingress: dict[str, Any]) -> tuple[str, Any]:
    """The backend ingress-nginx picks with use-regex: longest path first, ^-anchored."""
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for entry in sorted(paths, key=lambda p: len(p["path"]), reverse=True):
        if re.match(entry["path"], path, re.IGNORECASE):
            service = entry["backend"]["service"]
            return service["name"], service["port"]
    raise AssertionError(f"no Ingress path matches {path}")


@pytest.mark.parametrize(("path", "expected"), ROUTES.items())
def test_ingress_routes_data_plane_to_streamer(rendered: Objects, path: str, expected: str) -> None:
    overlay = "dev"
    (ingress,) = of_kind(rendered[overlay], "Ingress").values()
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    name, port = backend_of(path, ingress)
    assert name == expected
    service = of_kind(rendered[overlay], "Service")[name]
    assert port["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_ingress_keeps_streams_open_and_unbuffered(rendered: Objects) -> None:
    (ingress,) = of_kind(rendered["dev"], "Ingress").values()
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_sluice_variable_is_a_known_setting(rendered: Objects, overlay: str) -> None:
    used = sluice_variables(yaml.safe_dump_all(rendered[overlay]))
    assert used, "the manifests configure sluice through SLUICE_* variables"
    assert used <= set(variable_names()), used - set(variable_names())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streamer_grace_period_outlasts_prestop_and_drain(rendered: Objects, overlay: str) -> None:
    streamer = of_kind(rendered[overlay], "Deployment")["streamer"]
    pod = streamer["spec"]["template"]["spec"]
    command = container(streamer)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = env_value(streamer, "SLUICE_DRAIN_TIMEOUT_S")
    drain_s = float(drain) if drain else load_settings({}).drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runner_hands_over_at_once_and_its_grace_period_outlasts_handoff_and_drain(
    rendered: Objects, overlay: str
) -> None:
    runner = of_kind(rendered[overlay], "Deployment")["runner"]
    pod = runner["spec"]["template"]["spec"]
    assert "lifecycle" not in container(runner), "no preStop delays the handoff"
    drain = env_value(runner, "SLUICE_DRAIN_TIMEOUT_S")
    drain_s = float(drain) if drain else load_settings({}).drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] > HANDOFF_TIMEOUT_S + drain_s
    assert runner["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_use_the_agreed_signals(rendered: Objects, overlay: str) -> None:
    hpas = of_kind(rendered[overlay], "HorizontalPodAutoscaler")
    signals = {
        name: (m.get("pods") or m.get("resource"))["metric" if m["type"] == "Pods" else "name"]
        for name, hpa in hpas.items()
        for m in hpa["spec"]["metrics"]
    }
    assert signals == {
        "streamer": {"name": "sluice_streamer_open_connections"},
        "runner": {"name": "sluice_runner_slots_in_use"},
        "gateway": "cpu",
    }
    deployments = of_kind(rendered[overlay], "Deployment")
    for hpa in hpas.values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_disruption_budget(rendered: Objects, overlay: str) -> None:
    budgets = set(of_kind(rendered[overlay], "PodDisruptionBudget"))
    stateful = set(of_kind(rendered[overlay], "StatefulSet"))
    assert set(SERVICES) <= budgets <= set(SERVICES) | stateful


def admitted_sources(objects: list[dict[str, Any]], app: str) -> list[Any]:
    """The `from` lists of every NetworkPolicy that selects pods labelled `app`."""
    return [rule.get("from") for rule in rules_for(objects, app, "ingress")]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) selects `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(
        e["operator"] == "In" and labels.get(e["key"]) in e["values"]
        for e in selector.get("matchExpressions", [])
    )


def rules_for(objects: list[dict[str, Any]], app: str, direction: str) -> list[dict[str, Any]]:
    """The ingress or egress rules of every NetworkPolicy that selects pods labelled `app`."""
    labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "sluice"}
    return [
        rule
        for policy in of_kind(objects, "NetworkPolicy").values()
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get(direction, [])
    ]


def egress_ports(objects: list[dict[str, Any]], app: str) -> set[tuple[int, str]]:
    return {
        (port["port"], port["protocol"])
        for rule in rules_for(objects, app, "egress")
        for port in rule["ports"]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_both_ways_unless_allowed(rendered: Objects, overlay: str) -> None:
    default_deny = of_kind(rendered[overlay], "NetworkPolicy")["default-deny"]["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy in of_kind(rendered[overlay], "NetworkPolicy").values():
        for direction in ("ingress", "egress"):
            for rule in policy["spec"].get(direction, []):
                peers = rule.get("from" if direction == "ingress" else "to")
                assert peers, f"{policy['metadata']['name']}: a {direction} rule open to all"
                assert rule.get("ports"), f"{policy['metadata']['name']}: every port open"


EDGE = {"namespaceSelector": {"matchLabels": {"sluice.io/edge": "true"}}}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_gateway_and_streamer_take_traffic_from_the_edge(
    rendered: Objects, overlay: str
) -> None:
    for app in SERVICES:
        sources = [peer for peers in admitted_sources(rendered[overlay], app) for peer in peers]
        assert MONITORING in sources, f"{app} must admit metric scrapes"
        assert (EDGE in sources) == (app in {"gateway", "streamer"}), app
        assert not [s for s in sources if s not in (EDGE, MONITORING)], (app, sources)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_dns_nats_redis_and_only_runners_the_internet(
    rendered: Objects, overlay: str
) -> None:
    objects = rendered[overlay]
    for app in SERVICES:
        assert {(53, "UDP"), (4222, "TCP"), (6379, "TCP")} <= egress_ports(objects, app), app
        blocks = [
            peer["ipBlock"]
            for rule in rules_for(objects, app, "egress")
            for peer in rule["to"]
            if "ipBlock" in peer
        ]
        assert bool(blocks) == (app == "runner"), app
    outside = [r for r in rules_for(objects, "runner", "egress") if "ipBlock" in r["to"][0]]
    assert [p["port"] for rule in outside for p in rule["ports"]] == [443]
    assert "10.0.0.0/8" in outside[0]["to"][0]["ipBlock"]["except"]


def test_dev_runs_nats_and_redis_reachable_only_from_sluice(rendered: Objects) -> None:
    objects = rendered["dev"]
    statefulsets = of_kind(objects, "StatefulSet")
    assert set(statefulsets) == {"nats", "redis"}
    assert "--appendonly" in container(statefulsets["redis"])["args"]
    for app in ("nats", "redis"):
        assert admitted_sources(objects, app) == [
            [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sluice"}}}]
        ]
    for deployment in of_kind(objects, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "sluice"


def secret_refs(deployment: dict[str, Any]) -> list[str]:
    return [e["secretRef"]["name"] for e in container(deployment)["envFrom"] if "secretRef" in e]


def test_dev_generates_the_secrets_the_pods_read(rendered: Objects) -> None:
    secrets = {
        s["metadata"]["name"].rsplit("-", 1)[0]: s
        for s in of_kind(rendered["dev"], "Secret").values()
    }
    assert set(secrets) == {"sluice-secrets", "sluice-models"}
    assert {"SLUICE_SECRET", "SLUICE_API_KEYS"} <= secrets["sluice-secrets"]["data"].keys()
    models = base64.b64decode(secrets["sluice-models"]["data"]["SLUICE_MODELS"]).decode()
    assert load_settings({"SLUICE_MODELS": models}).models, "SLUICE_MODELS must parse"
    names = [s["metadata"]["name"] for s in secrets.values()]
    for deployment in of_kind(rendered["dev"], "Deployment").values():
        assert sorted(secret_refs(deployment)) == sorted(names)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_routes_and_their_keys_come_from_a_secret(rendered: Objects, overlay: str) -> None:
    """SLUICE_MODELS carries upstream API keys: never in a ConfigMap or a plain env value."""
    for config in of_kind(rendered[overlay], "ConfigMap").values():
        assert "SLUICE_MODELS" not in config.get("data", {})
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        assert env_value(deployment, "SLUICE_MODELS") is None, name
        optional = [e["secretRef"] for e in container(deployment)["envFrom"] if "secretRef" in e]
        assert {"name": "sluice-models", "optional": True} in [
            {**ref, "name": ref["name"].rsplit("-", 1)[0]} if overlay == "dev" else ref
            for ref in optional
        ], name


def test_prod_runs_clustered_nats_and_a_managed_redis_cluster_over_tls(rendered: Objects) -> None:
    objects = rendered["prod"]
    assert not of_kind(objects, "Secret"), "secrets exist already: none is generated"
    (nats,) = of_kind(objects, "StatefulSet").values()
    assert nats["metadata"]["name"] == "nats" and nats["spec"]["replicas"] == 3
    args = container(nats)["args"]
    routes = next(a for a in args if a.startswith("--routes=")).removeprefix("--routes=")
    assert routes.split(",") == [f"nats://nats-{i}.nats:6222" for i in range(3)]
    assert "--tls" in args and "--user=$(NATS_USER)" in args and "--pass=$(NATS_PASSWORD)" in args
    tls_volume = next(v for v in nats["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == "nats-tls"
    assert of_kind(objects, "PodDisruptionBudget")["nats"]["spec"]["maxUnavailable"] == 1
    assert admitted_sources(objects, "nats") == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sluice"}}}],
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}],
    ]
    assert {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}],
        "ports": [{"port": 6222, "protocol": "TCP"}],
    } in rules_for(objects, "nats", "egress"), "default-deny egress: NATS routes are let out"

    (config,) = of_kind(objects, "ConfigMap").values()
    assert "SLUICE_NATS_URL" not in config["data"] and "SLUICE_REDIS_URL" not in config["data"]
    assert config["data"]["SLUICE_REDIS_CLUSTER"] == "true"
    settings = load_settings(config["data"])
    assert settings.redis_cluster and settings.nats_tls_ca == "/etc/sluice/ca/nats-ca.crt"
    for deployment in of_kind(objects, "Deployment").values():
        assert secret_refs(deployment) == ["sluice-secrets", "sluice-models"], (
            "the URLs with their passwords come from sluice-secrets"
        )
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        assert mounts["/etc/sluice/ca"] == "backing-ca"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["backing-ca"]["secret"]["secretName"] == "nats-tls"


def test_prod_servicemonitor_scrapes_every_service(rendered: Objects) -> None:
    (monitor,) = of_kind(rendered["prod"], "ServiceMonitor").values()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert set(expression["values"]) == set(SERVICES)
    for name in SERVICES:
        service = of_kind(rendered["prod"], "Service")[name]
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == name
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_endpoints_are_on_the_admin_port_which_the_edge_never_routes(
    rendered: Objects, overlay: str
) -> None:
    (config,) = [c for c in of_kind(rendered[overlay], "ConfigMap").values()]
    assert config["data"]["SLUICE_ADMIN_PORT"] == str(ADMIN_PORT)
    ingresses = of_kind(rendered[overlay], "Ingress").values()
    routes = of_kind(rendered[overlay], "HTTPRoute").values()
    assert len([*ingresses, *routes]) == 1, "one edge per overlay"
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["port"] == {"name": "http"}
    for route in routes:
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                assert backend["port"] == SERVICES[backend["name"]] != ADMIN_PORT
