"""The kustomize overlays render, validate against the Kubernetes schemas, and are wired."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import (
    OVERLAYS,
    ROUTES,
    SERVICES,
    of_kind,
    require_module,
    sluice_variables,
    yaml,
)

from libs.common.settings import load_settings, variable_names

kubernetes_validate = require_module("kubernetes_validate", "kubernetes-validate")

KUBERNETES_VERSION = "1.30"
# Custom resources have no schema in kubernetes-validate; each is checked by its own test.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

Objects = dict[str, list[dict[str, Any]]]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_value(deployment: dict[str, Any], name: str) -> str | None:
    return next(
        (e["value"] for e in container(deployment).get("env", []) if e["name"] == name), None
    )


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
        assert [p["containerPort"] for p in spec["ports"]] == [SERVICES[name]]
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
        (port,) = service["spec"]["ports"]
        assert port["port"] == SERVICES[name]
        assert port_number(container(deployments[name]), port["targetPort"]) == SERVICES[name]


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


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("path", "expected"), ROUTES.items())
def test_ingress_routes_data_plane_to_streamer(
    rendered: Objects, overlay: str, path: str, expected: str
) -> None:
    (ingress,) = of_kind(rendered[overlay], "Ingress").values()
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    name, port = backend_of(path, ingress)
    assert name == expected
    service = of_kind(rendered[overlay], "Service")[name]
    assert port["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_keeps_streams_open_and_unbuffered(rendered: Objects, overlay: str) -> None:
    (ingress,) = of_kind(rendered[overlay], "Ingress").values()
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
    sources = []
    for policy in of_kind(objects, "NetworkPolicy").values():
        selector = policy["spec"]["podSelector"]
        names = [e["values"] for e in selector.get("matchExpressions", [])]
        if any(app in values for values in names):
            sources += [rule.get("from") for rule in policy["spec"].get("ingress", [])]
    return sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_gateway_and_streamer_take_outside_traffic(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    default_deny = of_kind(objects, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for app in SERVICES:
        sources = admitted_sources(objects, app)
        assert sources, f"{app} must at least admit metric scrapes"
        assert (None in sources) == (app in {"gateway", "streamer"}), app


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


def test_dev_generates_the_secret_the_pods_read(rendered: Objects) -> None:
    (secret,) = of_kind(rendered["dev"], "Secret").values()
    assert {"SLUICE_SECRET", "SLUICE_API_KEYS"} <= secret["data"].keys()
    for deployment in of_kind(rendered["dev"], "Deployment").values():
        refs = [
            e["secretRef"]["name"] for e in container(deployment)["envFrom"] if "secretRef" in e
        ]
        assert refs == [secret["metadata"]["name"]]


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

    (config,) = of_kind(objects, "ConfigMap").values()
    assert "SLUICE_NATS_URL" not in config["data"] and "SLUICE_REDIS_URL" not in config["data"]
    assert config["data"]["SLUICE_REDIS_CLUSTER"] == "true"
    settings = load_settings(config["data"])
    assert settings.redis_cluster and settings.nats_tls_ca == "/etc/sluice/ca/nats-ca.crt"
    for deployment in of_kind(objects, "Deployment").values():
        refs = [
            e["secretRef"]["name"] for e in container(deployment)["envFrom"] if "secretRef" in e
        ]
        assert refs == ["sluice-secrets"], "the URLs with their passwords come from it"
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
