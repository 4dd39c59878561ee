"""Shared fixtures: every test gets an empty environment for mesos-secrets' variables."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from . import residue
from .bao import Bao

settings.register_profile(
    "default",
    deadline=None,  # CI machines are slow and shared; speed lives in `make bench`
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_OUR_VARIABLES = (
    "MESOS_SECRETS_HOME",
    "MESOS_SECRETS_RESOLVER",
    "MESOS_SECRETS_CONFIG",
    "MESOS_SECRETS_AGENT_SOCKET",
    *(
        f"{prefix}_{name}"
        for prefix in ("VAULT", "BAO")
        for name in ("ADDR", "TOKEN", "CACERT", "CLIENT_CERT", "CLIENT_KEY", "NAMESPACE")
    ),
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's store or configuration."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)


@pytest.fixture(autouse=True)
def _fresh_kv_versions() -> Iterator[None]:
    """The Vault resolver keeps each mount's KV version per process, by address: tests'
    servers come and go on ports the next test's server may get again."""
    yield
    vault = sys.modules.get("resolvers.vault")
    if vault is not None:
        vault._KV_VERSIONS.clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded store directory, also set as MESOS_SECRETS_HOME."""
    path = tmp_path / "store"
    monkeypatch.setenv("MESOS_SECRETS_HOME", str(path))
    return path


requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: tmpfs mounts and mount namespaces"
)

#: User nobody's uid and gid.
NOBODY = 65534


def as_nobody(action: Callable[[], object]) -> str:
    """Run ``action`` in a child process as user nobody: "" or what it raised."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        said = b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
        except BaseException as error:  # told to the parent
            said = repr(error).encode()
        os.write(write, said)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(child, 0)
    return said


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
def _no_residue(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test, as root, fails if it leaves a process in a container's namespaces, a
    mount in the host's table or a cgroup of ours behind (and that residue is removed, so
    one failure does not spill into the next tests)."""
    if os.geteuid() != 0:
        yield
        return
    before = residue.snapshot()
    yield
    after, found = residue.settled_residue(before)
    if found:
        after.clean_after(before)
        pytest.fail(f"{request.node.name} left residue: " + "; ".join(found), pytrace=False)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A real OpenBao dev server over HTTP, for the whole session."""
    server = Bao(tmp_path_factory.mktemp("bao"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A real OpenBao dev server over TLS, plus a listener that requires client certs."""
    server = Bao(tmp_path_factory.mktemp("bao-tls"), tls=True)
    yield server
    server.stop()


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[Bao]:
    """A server of the test's own, to seal or stop; it keeps an audit log of requests."""
    server = Bao(tmp_path / "bao", audit=True)
    yield server
    server.stop()
