"""What containers may leave behind, looked at from the host, and who holds a value.

A snapshot lists the PID and mount namespaces that processes are in, the host's mount
table and our cgroups; comparing one taken after a test with one taken before shows what
the test left: a process still running in a container's namespaces, a mount, a cgroup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import attrs

from mesos_secrets.containerizer import cgroups

__all__ = [
    "Snapshot",
    "command_line",
    "holders",
    "host_mount_changes",
    "processes_holding",
    "snapshot",
]


def _namespaces() -> dict[tuple[str, str], set[int]]:
    """(kind, namespace) -> pids in it, for PID and mount namespaces."""
    found: dict[tuple[str, str], set[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in ("pid", "mnt"):
            try:
                namespace = os.readlink(f"/proc/{entry}/ns/{kind}")
            except OSError:
                continue
            found.setdefault((kind, namespace), set()).add(int(entry))
    return found


def _mounts() -> set[tuple[str, str, str]]:
    """(mount point, filesystem type, source) of the host's mount table."""
    found = set()
    with open("/proc/1/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            separator = fields.index("-")
            found.add((fields[4], fields[separator + 1], fields[separator + 2]))
    return found


def _cgroups() -> set[Path]:
    roots = {Path(point) / cgroups.ROOT for point, _, _ in cgroups._mounts()}
    return {child for root in roots if root.is_dir() for child in root.iterdir() if child.is_dir()}


@attrs.frozen
class Snapshot:
    namespaces: dict[tuple[str, str], set[int]]
    mounts: set[tuple[str, str, str]]
    cgroups: set[Path]

    def residue(self, before: Snapshot) -> list[str]:
        """What is here now and was not ``before``, one line each."""
        found = []
        for key in sorted(set(self.namespaces) - set(before.namespaces)):
            pids = sorted(self.namespaces[key])
            found.append(f"{key[0]} namespace {key[1]} still in use by pid(s) {pids}")
        found += [f"mount {m[0]} ({m[1]}, {m[2]})" for m in sorted(self.mounts - before.mounts)]
        found += [f"cgroup {path}" for path in sorted(self.cgroups - before.cgroups)]
        return found

    def clean_after(self, before: Snapshot) -> None:
        """Remove what a failed test left, so that the next tests start clean."""
        for key in set(self.namespaces) - set(before.namespaces):
            for pid in self.namespaces[key]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for point, _, _ in sorted(self.mounts - before.mounts, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        host = cgroups.detect()
        for path in self.cgroups - before.cgroups:
            if host is not None:
                host.kill(path.name)
                host.remove(path.name)


def snapshot() -> Snapshot:
    return Snapshot(_namespaces(), _mounts(), _cgroups())


def settled_residue(before: Snapshot, timeout: float = 5.0) -> tuple[Snapshot, list[str]]:
    """Residue, once what is on its way out has had ``timeout`` seconds to go."""
    deadline = time.monotonic() + timeout
    while True:
        after = snapshot()
        found = after.residue(before)
        if not found or time.monotonic() > deadline:
            return after, found
        time.sleep(0.05)


@contextlib.contextmanager
def host_mount_changes() -> Iterator[list[str]]:
    """Watch the host's mount table while the block runs; the list gets every change."""
    before = Path("/proc/1/mountinfo").read_text()
    changes: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            now = Path("/proc/1/mountinfo").read_text()
            if now != before:
                changes.append(now)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield changes
    finally:
        done.set()
        watcher.join()


def processes_holding(value: str | bytes) -> list[int]:
    """Every process whose environment or command line holds ``value`` (as root)."""
    needle = value.encode() if isinstance(value, str) else value
    return [pid for pid, _ in holders({needle})]


def holders(
    needles: Collection[bytes], *, known: Collection[int] | None = None
) -> list[tuple[int, str]]:
    """Every process but this one whose command line or environment holds one of
    ``needles``, with its command line. With ``known``, a process whose command line or
    environment cannot be read is one too (root reads every process's), unless it is one
    of ``known`` (there before: the machine's own init)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid, readable, unreadable = int(entry), [], None
        for name in ("environ", "cmdline"):
            try:
                readable.append(Path(f"/proc/{entry}/{name}").read_bytes())
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone
            except OSError as error:
                unreadable = error.strerror
        if any(needle in data for data in readable for needle in needles):
            found.append((pid, command_line(pid)))
        elif unreadable and known is not None and pid not in known:
            found.append((pid, f"unreadable ({unreadable})"))
    return found


def command_line(pid: int, width: int = 80) -> str:
    """``pid``'s command line, its arguments joined by spaces, at most ``width`` long."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ")[:width].decode(errors="replace")
