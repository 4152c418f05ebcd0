"""TLS and mutual TLS against a real server, with certificates made by the
openssl command line for each test run."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest

from agentbus import AgentBusClient
from agentbus.errors import AgentBusError
from agentbus.aio import AsyncAgentBusClient
from conftest import Server

KEY = "tls-key"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(dir: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=dir)


def issue(dir: Path, ca: str, name: str, san: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=dir)
    (dir / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=dir)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dir = tmp_path_factory.mktemp("certs")
    make_ca(dir, "ca")
    make_ca(dir, "clients")
    issue(dir, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    issue(dir, "clients", "agent", "URI:opencode://backend")
    return dir


def tls_server(certs: Path, mutual: bool) -> Server:
    extra = ["--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")]
    if mutual:
        extra += ["--tls-client-ca", str(certs / "clients.pem")]
    return Server(api_key=KEY, extra=extra)


def test_tls_with_a_ca_file(certs: Path) -> None:
    server = tls_server(certs, mutual=False)
    try:
        with AgentBusClient(f"https://{server.address}", KEY, ca_file=str(certs / "ca.pem")) as bus:
            assert bus.list_agents() == []
        # Without the CA the server's certificate is not trusted.
        with AgentBusClient(f"https://{server.address}", KEY, timeout=5) as untrusted:
            with pytest.raises(AgentBusError):
                untrusted.list_agents()
    finally:
        server.stop()


def test_mutual_tls_sync_and_async(certs: Path) -> None:
    server = tls_server(certs, mutual=True)
    files = {"ca_file": str(certs / "ca.pem"), "cert_file": str(certs / "agent.pem"), "key_file": str(certs / "agent.key")}
    try:
        with AgentBusClient(f"https://{server.address}", KEY, **files) as bus:
            assert bus.list_agents() == []

        async def run() -> None:
            async with AsyncAgentBusClient(f"https://{server.address}", KEY, **files) as bus:
                assert await bus.list_agents() == []

        asyncio.run(run())
        with AgentBusClient(f"https://{server.address}", KEY, ca_file=str(certs / "ca.pem"), timeout=5) as anonymous:
            with pytest.raises(AgentBusError):
                anonymous.list_agents()
    finally:
        server.stop()


def test_tls_files_are_checked() -> None:
    with pytest.raises(ValueError, match="go together"):
        AgentBusClient("https://127.0.0.1:1", cert_file="a.pem")
    with pytest.raises(ValueError, match="not both"):
        AgentBusClient("https://127.0.0.1:1", ca_file="ca.pem", credentials=grpc.ssl_channel_credentials())
