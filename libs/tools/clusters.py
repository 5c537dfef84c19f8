"""Clusters of real servers on loopback, for the tests that kill nodes.

A NATS cluster is three nats-server processes joined by routes; each has a monitoring
port, so a test can ask which node a service's connection is on (``/connz`` lists
connections by the name the service connected with) before killing that node.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libs.tools.servers import Server, ServerError, find_binary, free_port

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
