"""TLS and mutual TLS against a real server, with certificates made by the
openssl command line for each test run."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
from pathlib import Path

import grpc
import pytest

import agentbus
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


def test_agent_token_over_tls(certs: Path, uid: str) -> None:
    """An admin issues a token; a client holding only that token acts as its
    agent and nothing else, until the token is revoked."""
    me, other = f"opencode://tok-{uid}", f"claude-code://tok-{uid}"
    server = tls_server(certs, mutual=False)
    address, ca = f"https://{server.address}", str(certs / "ca.pem")
    try:
        with AgentBusClient(address, KEY, ca_file=ca, timeout=10) as admin:
            issued = admin.issue_agent_token(me, ttl=dt.timedelta(hours=1), description="tls test")
            assert re.fullmatch(r"abt_[0-9a-f]{64}", issued.token) and issued.token_id
            expires_in = agentbus.to_datetime(issued.expires_at) - dt.datetime.now(dt.timezone.utc)
            assert dt.timedelta(minutes=59) < expires_in <= dt.timedelta(hours=1)
            admin.register_agent(other)

            with AgentBusClient(address, token=issued.token, ca_file=ca, timeout=10) as agent:
                assert agent.register_agent(me).descriptor.agent_id == me
                with pytest.raises(agentbus.PermissionDeniedError):
                    agent.register_agent(f"opencode://not-me-{uid}")
                admin.send(other, me, payload={"n": 1})
                with agent.inbox(me, idle_timeout=5) as inbox:
                    assert agentbus.payload_of(next(inbox)) == {"n": 1}
                assert agent.send(me, other, payload="hi").accepted
                with pytest.raises(agentbus.PermissionDeniedError):
                    agent.send(other, me)
                with pytest.raises(agentbus.PermissionDeniedError):
                    agent.inbox(other).receive(timeout=5)
                with pytest.raises(agentbus.PermissionDeniedError):
                    agent.list_agent_tokens(me)

                [listed] = admin.list_agent_tokens(me)
                assert (listed.token_id, listed.agent_id, listed.description) == (issued.token_id, me, "tls test")
                assert listed.expires_at == issued.expires_at and listed.HasField("created_at")
                assert issued.token not in str(listed)

                # Revoking ends the token's open stream and fails its next call.
                admin.send(other, me, payload={"n": 2})
                with agent.inbox(me, auto_ack=False) as inbox:
                    assert inbox.receive(timeout=5) is not None  # the stream is open
                    admin.revoke_agent_token(issued.token_id, agent_id=me)
                    with pytest.raises(agentbus.UnauthenticatedError):
                        inbox.receive(timeout=5)
                with pytest.raises(agentbus.UnauthenticatedError):
                    agent.get_agent(me)
    finally:
        server.stop()


def test_tls_files_are_checked() -> None:
    with pytest.raises(ValueError, match="go together"):
        AgentBusClient("https://127.0.0.1:1", cert_file="a.pem")
    with pytest.raises(ValueError, match="not both"):
        AgentBusClient("https://127.0.0.1:1", ca_file="ca.pem", credentials=grpc.ssl_channel_credentials())
