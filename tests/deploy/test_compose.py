"""docker-compose.yml and its edge proxy are wired like the Kubernetes manifests."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import ADMIN_PORT, DEPLOY, ROOT, ROUTES, SERVICES, sluice_variables, yaml

from libs.common.settings import variable_names

NGINX_CONF = DEPLOY / "compose" / "nginx.conf"
Compose = dict[str, Any]


def test_every_sluice_variable_is_a_known_setting() -> None:
    used = sluice_variables((ROOT / "docker-compose.yml").read_text())
    assert used, "compose configures sluice through SLUICE_* variables"
    assert used <= set(variable_names()), used - set(variable_names())


@pytest.mark.parametrize(("name", "port"), SERVICES.items())
def test_each_service_runs_its_command_on_its_port(compose: Compose, name: str, port: int) -> None:
    service = compose["services"][name]
    assert service["command"] == [name]
    assert service["image"] == "sluice:local"
    assert service["build"] == "."
    assert service["environment"][f"SLUICE_{name.upper()}_PORT"] == str(port)
    assert service["environment"]["SLUICE_NATS_URL"] == "nats://nats:4222"
    assert service["environment"]["SLUICE_REDIS_URL"] == "redis://redis:6379/0"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("name", ["streamer", "runner"])
def test_scaled_services_have_no_fixed_name_or_host_port(compose: Compose, name: str) -> None:
    service = compose["services"][name]
    assert "container_name" not in service
    assert "ports" not in service


def test_backing_services_are_pinned_and_redis_persists(compose: Compose) -> None:
    services = compose["services"]
    assert services["nats"]["image"] == "nats:2.10-alpine"
    assert services["redis"]["image"] == "redis:7-alpine"
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_streamer_stop_grace_outlasts_its_drain(compose: Compose) -> None:
    streamer = compose["services"]["streamer"]
    grace = int(streamer["stop_grace_period"].removesuffix("s"))
    assert grace > float(streamer["environment"]["SLUICE_DRAIN_TIMEOUT_S"])


def test_only_the_edge_and_observability_publish_ports(compose: Compose) -> None:
    published = {name for name, service in compose["services"].items() if "ports" in service}
    assert published == {"edge", "prometheus", "grafana"}


def test_observability_profile_holds_collector_prometheus_grafana(compose: Compose) -> None:
    profiled = {
        n for n, s in compose["services"].items() if "observability" in s.get("profiles", [])
    }
    assert profiled == {"otel-collector", "prometheus", "grafana"}


def test_bind_mounts_exist_in_the_repository(compose: Compose) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_prometheus_scrapes_every_service_port_as_its_job() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [(sd["names"], sd["port"]) for sd in job["dns_sd_configs"]]
        for job in config["scrape_configs"]
    }
    assert jobs == {name: [([name], ADMIN_PORT)] for name in SERVICES}


def nginx_locations() -> list[tuple[str, str, str]]:
    """(modifier, pattern, upstream variable) for each location of the edge config."""
    text = NGINX_CONF.read_text()
    blocks = re.findall(r"location\s+(=|~\*?|\^~)?\s*(\S+)\s*\{([^}]*)\}", text)
    found = []
    for modifier, pattern, body in blocks:
        target = re.search(r"proxy_pass\s+http://\$(\w+);", body)
        found.append((modifier, pattern, target.group(1) if target else "local"))
    return found


def nginx_route(path: str) -> str:
    """nginx's choice: exact match, else first regex, else longest prefix."""
    locations = nginx_locations()
    for modifier, pattern, target in locations:
        if modifier == "=" and pattern == path:
            return target
    for modifier, pattern, target in locations:
        if modifier.startswith("~") and re.search(pattern, path):
            return target
    prefixes = [(p, t) for m, p, t in locations if not m and path.startswith(p)]
    return max(prefixes, key=lambda pair: len(pair[0]))[1]


@pytest.mark.parametrize(("path", "expected"), ROUTES.items())
def test_edge_routes_like_the_ingress(path: str, expected: str) -> None:
    assert nginx_route(path) == expected


def test_edge_upstreams_point_at_the_service_ports() -> None:
    upstreams = dict(re.findall(r"set \$(\w+) (\w+:\d+);", NGINX_CONF.read_text()))
    assert upstreams == {name: f"{name}:{SERVICES[name]}" for name in ("gateway", "streamer")}


def test_edge_streams_unbuffered_and_upgrades_websockets() -> None:
    text = NGINX_CONF.read_text()
    assert "proxy_buffering off;" in text
    assert re.search(r"proxy_read_timeout 3600s;", text)
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
