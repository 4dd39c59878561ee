"""Shared fixtures: every test gets an empty environment for mesos-secrets' variables."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,  # CI machines are slow and shared; speed lives in `make bench`
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_OUR_VARIABLES = ("MESOS_SECRETS_HOME", "MESOS_SECRETS_RESOLVER", "MESOS_SECRETS_CONFIG")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's store or configuration."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded store directory, also set as MESOS_SECRETS_HOME."""
    path = tmp_path / "store"
    monkeypatch.setenv("MESOS_SECRETS_HOME", str(path))
    return path


requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: tmpfs mounts and mount namespaces"
)


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A runtime directory of the test's own (never /run/mesos-secrets)."""
    return tmp_path / "runtime"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path`` in this process's mount namespace."""
    base = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return [
            line.split()[4]
            for line in info
            if line.split()[4] == base or line.split()[4].startswith(base + "/")
        ]


@pytest.fixture(autouse=True)
def _no_stray_mounts(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing test left mounted under its directory is detached afterwards.

    Tests assert on residue themselves; this only keeps one failure from leaking into
    the machine and the next tests.
    """
    yield
    if os.geteuid() == 0:
        for point in reversed(mounts_under(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)
