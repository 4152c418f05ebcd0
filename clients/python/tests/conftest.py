"""Fixtures: real agentbus servers on 127.0.0.1 (the binary from $AGENTBUS_BIN,
default ../../target/debug/agentbus relative to clients/python)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

from agentbus import AgentBusClient

PYTHON_DIR = Path(__file__).resolve().parents[1]
DEFAULT_BIN = PYTHON_DIR / ".." / ".." / "target" / "debug" / "agentbus"

# Short timings so redelivery, heartbeats and expiry show up within seconds.
FAST = ["--heartbeat-interval", "1s", "--ack-timeout", "2s", "--retry-backoff", "100ms"]


def server_binary() -> Path:
    path = Path(os.environ.get("AGENTBUS_BIN") or DEFAULT_BIN)
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"agentbus server binary not found at {path}: build it with `cargo build` "
            "at the repository root, or set AGENTBUS_BIN"
        )
    return path


class Server:
    """One `agentbus serve` process."""

    def __init__(
        self,
        *,
        port: int = 0,
        data_dir: Optional[str] = None,
        api_key: Optional[str] = None,
        extra: Optional[list[str]] = None,
    ):
        self.binary = server_binary()
        self.api_key = api_key
        self.data_dir = data_dir
        self.log_path = Path(tempfile.mkstemp(prefix="agentbus-test-", suffix=".log")[1])
        args = [str(self.binary), "serve", "--listen", f"127.0.0.1:{port}"]
        args += ["--data-dir", data_dir] if data_dir else ["--store", "memory"]
        if api_key:
            args += ["--api-key", api_key]
        args += extra if extra is not None else FAST
        self.args = args
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BUS_")}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self.address = self._read_address(timeout=20)
        self.port = int(self.address.rsplit(":", 1)[1])

    def _read_address(self, timeout: float) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            found.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        line = found[0].strip() if found else ""
        prefix = "agentbus listening on "
        if not line.startswith(prefix):
            self.kill()
            raise RuntimeError(f"server did not start (stdout: {line!r}); log:\n{self.log_path.read_text()}")
        return line[len(prefix):]

    def client(self, api_key: Optional[str] = None, **kwargs) -> AgentBusClient:
        return AgentBusClient(self.address, api_key if api_key is not None else self.api_key, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def start_server() -> Iterator:
    """Factory: start_server(port=0, data_dir=None, api_key=None, extra=None)."""
    servers: list[Server] = []

    def start(**kwargs) -> Server:
        server = Server(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """A shared in-memory server without an API key (tests use unique ids)."""
    return start_server()


@pytest.fixture(scope="session")
def auth_server(start_server) -> Server:
    """A shared in-memory server that requires API key `test-key`."""
    return start_server(api_key="test-key")


@pytest.fixture
def client(server) -> Iterator[AgentBusClient]:
    with server.client(timeout=10) as c:
        yield c


@pytest.fixture
def uid() -> str:
    """A short unique suffix for agent, session and message ids."""
    return uuid.uuid4().hex[:10]


def pytest_report_header(config):
    import agentbus

    return [f"agentbus {agentbus.__version__} from {Path(agentbus.__file__).parent}", f"server: {server_binary()}"]
