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
from pathlib import Path

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
