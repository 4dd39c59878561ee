"""Container cgroups, on this host's real hierarchies: v1 freezer and pids, and cgroup v2."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesos_secrets.containerizer import cgroups

from .conftest import requires_root

pytestmark = requires_root


def _v2_mount() -> Path | None:
    for point, fstype, _ in cgroups._mounts():
        if fstype == "cgroup2":
            return Path(point)
    return None


@pytest.fixture(params=["host", "v2"])
def host(request: pytest.FixtureRequest) -> Iterator[cgroups.Cgroups]:
    """What detect() finds here, and cgroup v2 on its own (the unified mount of a hybrid
    host stands in for a v2 host: cgroup.kill and the leaf layout are the same)."""
    if request.param == "host":
        found = cgroups.detect()
        if found is None:
            pytest.skip("no usable cgroups here")
        yield found
    else:
        mount = _v2_mount()
        if mount is None or not (mount / "cgroup.procs").exists():
            pytest.skip("no cgroup v2 mount here")
        yield cgroups.V2Cgroups(mount)


def _start_in(procs: list[str]) -> subprocess.Popen[bytes]:
    """A shell that joins the cgroups, then forks: a parent, a child, a grandchild."""
    joins = "; ".join(f"echo $$ > {path}" for path in procs)
    return subprocess.Popen(["sh", "-c", f"{joins}; (sleep 60 & sleep 60) & sleep 60"])


def test_kill_reaches_every_descendant(host: cgroups.Cgroups) -> None:
    container = str(uuid.uuid4())
    procs = host.create(container)
    try:
        shell = _start_in(procs)
        deadline = 100
        while len(host.pids(container)) < 4 and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.02"], check=True)
        members = host.pids(container)
        assert shell.pid in members
        assert len(members) >= 4
        host.kill(container)
        assert host.pids(container) == set()
        assert shell.wait(timeout=10) == -9
        for pid in members:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
    finally:
        host.remove(container)
    assert not host.exists(container)


def test_kill_and_remove_are_idempotent(host: cgroups.Cgroups) -> None:
    container = str(uuid.uuid4())
    host.create(container)
    host.kill(container)
    host.remove(container)
    host.kill(container)
    host.remove(container)
    assert not host.exists(container)


def test_runc_path_is_inside_the_container(host: cgroups.Cgroups) -> None:
    assert host.runc_path("c") == f"/{cgroups.ROOT}/c/task"


def test_v1_pids_counts_the_whole_tree() -> None:
    found = cgroups.detect()
    if not isinstance(found, cgroups.V1Cgroups) or found.pids_root is None:
        pytest.skip("no cgroup v1 pids hierarchy here")
    container = str(uuid.uuid4())
    procs = found.create(container)
    try:
        shell = _start_in(procs)
        current = found.pids_root / cgroups.ROOT / container / "pids.current"
        for _ in range(100):
            if int(current.read_text()) >= 4:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert int(current.read_text()) >= 4
        found.kill(container)
        shell.wait(timeout=10)
        for _ in range(250):  # zombies count until the host's init reaps the orphans
            if int(current.read_text()) == 0:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert int(current.read_text()) == 0
    finally:
        found.remove(container)


def test_detect_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cgroups.detect() is None
