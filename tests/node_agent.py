"""``mesos-secrets agent`` for tests: the real command in a process of its own, and raw
requests on its socket."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resolvers.agent import AgentResolver

from .bao import Bao, stop_process

#: This checkout, which the agent imports (not whichever the virtualenv was made from).
ROOT = Path(__file__).resolve().parents[1]
MESOS_SECRETS = Path(sys.executable).parent / "mesos-secrets"


class NodeAgent:
    """``mesos-secrets agent`` in a process of its own, with a configuration file."""

    def __init__(
        self,
        base: Path,
        *,
        resolver: str = "local",
        agent: str = "",
        extra: str = "",
        directory: Path | None = None,
    ) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.directory = directory or base / "run"
        self.directory.mkdir(mode=0o755, exist_ok=True)
        self.socket = self.directory / "agent.sock"
        self.audit = base / "audit.log"
        self.config = base / "agent.toml"
        self.config.write_text(
            f'resolver = "{resolver}"\n{extra}\n'
            f'[audit]\nfile = "{self.audit}"\n'
            f'[agent]\nsocket = "{self.socket}"\n{agent}\n'
        )
        self.log = base / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, *flags: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(PYTHONPATH=str(ROOT), MESOS_SECRETS_CONFIG=str(self.config))
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(MESOS_SECRETS), "agent", *flags], stdout=out, stderr=out, env=env
            )
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                stop_process(self.process)
                raise RuntimeError(f"the agent did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            return request(self.socket, "GET", "/v1/health")[0] == 200
        except OSError:
            return False

    def client(self, **options: Any) -> AgentResolver:
        return AgentResolver(socket=str(self.socket), **options)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        stop_process(self.process, sig)
        return self.process.returncode

    def cleanup(self) -> None:
        """What an agent keeps for the next one: the tmpfs beside its socket, and the
        key of the kept cache in the user's keyring."""
        from mesos_secrets.agent import snapshot

        snapshot.forget(self.socket)

    def records(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def request(
    path: Path,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One raw HTTP exchange on the agent's socket."""
    connection = http.client.HTTPConnection("localhost", timeout=10)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    connection.sock = sock
    try:
        connection.request(method, url, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def resolve(path: Path, *refs: dict[str, str], **headers: str) -> tuple[int, Any]:
    body = json.dumps({"references": list(refs)}).encode()
    return request(path, "POST", "/v1/resolve", body, headers)


def eventually(condition: Callable[[], Any], timeout: float = 20.0, what: str = "it") -> Any:
    """``condition()``'s first true answer, asked every 20 ms for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return result


def bao_agent(base: Path, bao: Bao, key: bytes, agent: str = "") -> NodeAgent:
    """A node agent reading ``bao`` with its root token, checking executors' tokens with
    ``key``; ``agent``: more of its ``[agent]`` table."""
    path = base / "executor.key"
    path.write_bytes(key)
    path.chmod(0o600)
    return NodeAgent(
        base / "node-agent",
        resolver="vault",
        agent=f'executor_secret_key = "{path}"\n{agent}',
        extra=f'[resolvers.vault]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n',
    )
