"""A cgroup per container: every process it ever starts, counted and killed together.

A PID namespace already ends with its first process; the cgroup is what lets the
containerizer see and kill a container's processes from outside, whatever state its
front end, its init or its runtime (runc) are in: KILL, SHUTDOWN, a normal exit, and
``recover`` after a crash all end with :meth:`Cgroups.kill`. As in Mesos' launcher:

- cgroup v1 (what this kind of host has): the ``freezer`` hierarchy (the container is
  frozen, every process in it gets SIGKILL, then it is thawed, so nothing can fork
  between the listing and the kill) and the ``pids`` hierarchy (a count of every
  process, and a place for a limit), both at ``<hierarchy>/mesos-secrets/<container>``;
- cgroup v2 (a host where ``/sys/fs/cgroup`` is the unified hierarchy):
  ``mesos-secrets/<container>``, killed with ``cgroup.kill`` (Linux 5.14+; freeze and
  kill before that). The init lives in the leaf ``init``: v2 keeps processes out of
  cgroups whose children have controllers (runc's ``task``).

A task in an image runs under runc with ``cgroupsPath`` ``mesos-secrets/<container>/task``,
inside the container's cgroup, so one freeze or ``cgroup.kill`` covers it too.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

__all__ = ["ROOT", "Cgroups", "V1Cgroups", "V2Cgroups", "detect"]

log = logging.getLogger(__name__)

#: The cgroup every container's cgroup is made under (Mesos: ``--cgroups_root=mesos``).
ROOT = "mesos-secrets"
_KILL_TIMEOUT_S = 60.0
_FREEZE_RETRY_S = 10.0


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) for every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            separator = fields.index("-")
            fstype = fields[separator + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields[4], fstype, set(fields[separator + 3].split(","))))
    return found


def detect() -> Cgroups | None:
    """The host's cgroups, or None when we cannot use them (not root, none mounted)."""
    if os.geteuid() != 0:
        return None
    v1: dict[str, Path] = {}
    every: list[Path] = []  # runc makes its cgroup in each, the hybrid cgroup2 one included
    for point, fstype, options in _mounts():
        if fstype == "cgroup2" and point == "/sys/fs/cgroup":
            return V2Cgroups(Path(point))
        every.append(Path(point))
        if fstype == "cgroup":
            for controller in ("freezer", "pids"):
                if controller in options:
                    v1[controller] = Path(point)
    if "freezer" in v1:
        return V1Cgroups(v1["freezer"], v1.get("pids"), every)
    log.warning("no cgroup freezer here: a container's processes are tracked by namespace only")
    return None


class Cgroups(abc.ABC):
    """The cgroups of containers on this host."""

    @abc.abstractmethod
    def create(self, container_id: str) -> list[str]:
        """Make the container's cgroups; returns the ``cgroup.procs`` files its init joins."""

    @abc.abstractmethod
    def exists(self, container_id: str) -> bool: ...

    @abc.abstractmethod
    def pids(self, container_id: str) -> set[int]:
        """Every process in the container's cgroups (host pids)."""

    @abc.abstractmethod
    def kill(self, container_id: str) -> None:
        """Kill every process of the container, and wait until they are gone."""

    @abc.abstractmethod
    def remove(self, container_id: str) -> None:
        """Remove the container's (empty) cgroups, and those runc made under them."""

    @staticmethod
    def runc_path(container_id: str) -> str:
        """runc's ``linux.cgroupsPath`` for the container's task: inside its cgroup."""
        return f"/{ROOT}/{container_id}/task"

    def _wait_empty(self, container_id: str, deadline: float) -> None:
        while self.pids(container_id):
            if time.monotonic() > deadline:
                raise OSError(
                    errno.ETIMEDOUT,
                    f"processes of container {container_id} still alive "
                    f"{_KILL_TIMEOUT_S:.0f}s after SIGKILL",
                )
            time.sleep(0.005)


def _procs(directory: Path) -> set[int]:
    """Processes in ``directory`` and every cgroup under it."""
    found: set[int] = set()
    for path, _, _ in os.walk(directory):
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as procs:
                found.update(int(line) for line in procs if line.strip())
        except FileNotFoundError:
            continue
    return found


def _kill_each(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _rmdir_tree(directory: Path) -> None:
    """Remove a cgroup and the cgroups under it, deepest first (EBUSY: retried briefly)."""
    if not directory.is_dir():
        return
    paths = [Path(path) for path, _, _ in os.walk(directory)]
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        for attempt in range(200):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != errno.EBUSY or attempt == 199:
                    raise
                time.sleep(0.005)


class V1Cgroups(Cgroups):
    """cgroup v1: ``freezer`` (required) and ``pids`` (where mounted); ``every`` cgroup
    mount, for removal."""

    def __init__(self, freezer: Path, pids: Path | None, every: list[Path]) -> None:
        self.freezer = freezer
        self.pids_root = pids
        self.every = every

    def _at(self, hierarchy: Path, container_id: str) -> Path:
        return hierarchy / ROOT / container_id

    def create(self, container_id: str) -> list[str]:
        joined = []
        for hierarchy in (self.freezer, self.pids_root):
            if hierarchy is not None:
                path = self._at(hierarchy, container_id)
                path.mkdir(parents=True)
                joined.append(str(path / "cgroup.procs"))
        return joined

    def exists(self, container_id: str) -> bool:
        return self._at(self.freezer, container_id).is_dir()

    def pids(self, container_id: str) -> set[int]:
        return _procs(self._at(self.freezer, container_id))

    def freeze(self, container_id: str) -> None:
        self._set_state(container_id, "FROZEN")

    def thaw(self, container_id: str) -> None:
        self._set_state(container_id, "THAWED")

    def _set_state(self, container_id: str, state: str) -> None:
        path = self._at(self.freezer, container_id) / "freezer.state"
        path.write_text(state, encoding="ascii")
        deadline = time.monotonic() + _FREEZE_RETRY_S
        while path.read_text(encoding="ascii").strip() != state:
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, f"container {container_id} is stuck freezing")
            path.write_text(state, encoding="ascii")
            time.sleep(0.001)

    def kill(self, container_id: str) -> None:
        if not self.exists(container_id):
            return
        deadline = time.monotonic() + _KILL_TIMEOUT_S
        while True:
            try:
                self.freeze(container_id)
            except OSError as error:
                # Mesos (MESOS-1758): a process stuck in FREEZING; kill what we see, retry.
                log.warning("%s; killing its processes and trying again", error.strerror)
            _kill_each(self.pids(container_id))
            self.thaw(container_id)
            try:
                self._wait_empty(container_id, min(deadline, time.monotonic() + 1.0))
            except OSError:
                if time.monotonic() > deadline:
                    raise
            else:
                return

    def remove(self, container_id: str) -> None:
        """Every hierarchy's: runc makes the task's cgroup in all that are mounted."""
        for hierarchy in self.every:
            _rmdir_tree(self._at(hierarchy, container_id))


class V2Cgroups(Cgroups):
    """cgroup v2, the unified hierarchy at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _at(self, container_id: str) -> Path:
        return self.root / ROOT / container_id

    def create(self, container_id: str) -> list[str]:
        leaf = self._at(container_id) / "init"
        leaf.mkdir(parents=True)
        return [str(leaf / "cgroup.procs")]

    def exists(self, container_id: str) -> bool:
        return self._at(container_id).is_dir()

    def pids(self, container_id: str) -> set[int]:
        return _procs(self._at(container_id))

    def kill(self, container_id: str) -> None:
        directory = self._at(container_id)
        if not directory.is_dir():
            return
        deadline = time.monotonic() + _KILL_TIMEOUT_S
        if (directory / "cgroup.kill").exists():
            (directory / "cgroup.kill").write_text("1", encoding="ascii")
        else:  # before Linux 5.14
            (directory / "cgroup.freeze").write_text("1", encoding="ascii")
            _kill_each(self.pids(container_id))
            (directory / "cgroup.freeze").write_text("0", encoding="ascii")
        self._wait_empty(container_id, deadline)

    def remove(self, container_id: str) -> None:
        _rmdir_tree(self._at(container_id))
