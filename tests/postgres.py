"""A throw-away PostgreSQL server (Debian's), for OpenBao's database secrets engine."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hvac

from .bao import free_port, stop_process


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} not found: is Debian's postgresql installed (make setup)?"
    return found[-1]


class Postgres:
    """Runs as the `postgres` user, on 127.0.0.1 and a random port, password auth over TCP."""

    def __init__(self) -> None:
        self.user = pwd.getpwnam("postgres")
        # Outside pytest's root-only directories: the postgres user must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="mesos-secrets-pg-"))
        os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self.password = secrets.token_hex(12)
        self.port = free_port()
        pwfile = self.directory / "pw"
        pwfile.write_text(self.password)
        os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        data = self.directory / "data"
        self._as_postgres(
            _bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        pwfile.unlink()
        self.process = subprocess.Popen(
            [
                *self._prefix(),
                _bin("postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.directory}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        ):
            assert self.process.poll() is None, "postgres exited"
            assert time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)

    def _prefix(self) -> list[str]:
        return [
            "setpriv",
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--init-groups",
        ]

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(self._prefix() + list(args), check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)  # "fast" shutdown: clients are cut off
        shutil.rmtree(self.directory, ignore_errors=True)


def database_engine(
    root: hvac.Client, database: Postgres, default_ttl: str = "3s"
) -> Callable[[], list[str]]:
    """OpenBao's database engine at ``database/``, role ``app`` on ``database``; returns
    a function listing the leases of ``database/creds/app`` now."""
    root.sys.enable_secrets_engine("database", path="database")
    root.adapter.post(
        "/v1/database/config/pg",
        json={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{database.port}/postgres?sslmode=disable",
            "username": "postgres",
            "password": database.password,
            "allowed_roles": "app",
        },
    )
    root.adapter.post(
        "/v1/database/roles/app",
        json={
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
            ],
            "default_ttl": default_ttl,
            "max_ttl": "120s",
        },
    )

    def leases() -> list[str]:
        try:
            return list(
                root.adapter.list("/v1/sys/leases/lookup/database/creds/app")["data"]["keys"]
            )
        except hvac.exceptions.InvalidPath:
            return []

    return leases
