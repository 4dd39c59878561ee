"""Where a canary must never be, and what a launch must not leave behind.

A canary is a value only one launch's secrets hold (:func:`mesos_secrets.testing.canary`:
``CANARY`` and 24 letters or digits). Once a launch has ended, it may be in no file
outside the task's tmpfs (which is gone by then): not in the sandbox, the runtime
directory, the stores (which keep ciphertext only), the node agent's kept cache (sealed),
the audit trails, the logs, ``/tmp`` or a core file; not in the launch's output; not in
any process's command line or environment. Files are searched for anything shaped like
a canary, so one pass finds every launch's.

Residue is what was not there before the launch: a process in a namespace of its own, a
mount, a cgroup of ours (:mod:`tests.residue`), a container claim in the runtime
directory, a veth, an entry in ``/tmp``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import attrs

from tests import residue

from .launches import Lab, Launched

__all__ = ["Baseline", "baseline", "canaries_in_files", "check"]

#: What :func:`mesos_secrets.testing.canary` makes.
CANARY_SHAPE = re.compile(rb"CANARY[A-Za-z0-9]{24}")
#: Files larger than this are read in part only (none of ours should be).
MAX_READ = 64 * 1024 * 1024
#: The shared temporary directory, watched for what a launch leaves (only listed).
TMP = Path(tempfile.gettempdir())


@attrs.frozen
class Baseline:
    """What was there before a launch."""

    snapshot: residue.Snapshot
    links: frozenset[str]
    tmp: frozenset[str]
    cores: frozenset[Path]


def _links() -> frozenset[str]:
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    return frozenset(line.split(":")[1].strip().split("@")[0] for line in listing.splitlines())


def _tmp() -> frozenset[str]:
    return frozenset(os.listdir(TMP))


def _cores() -> frozenset[Path]:
    """Core files where the kernel writes them (``core_pattern`` here is ``core``: in
    the crashing process's directory, the suite's own for ``run`` and the executor)."""
    return frozenset(Path.cwd().glob("core*"))


def baseline() -> Baseline:
    return Baseline(residue.snapshot(), _links(), _tmp(), _cores())


def check(lab: Lab, launched: Launched, before: Baseline) -> tuple[list[str], list[str]]:
    """After ``launched`` ended: where its canaries are (leaks), and what it left."""
    found = set()
    for value in launched.canaries:
        if value.encode() in launched.output:
            found.add("the launch's output")
        for pid in residue.processes_holding(value):
            found.add(f"process {pid}: {_command(pid)}")
    mine = {value.encode() for value in launched.canaries}
    roots = [launched.work, lab.runtime, lab.home, lab.agent.base, lab.logs]
    roots += [TMP / name for name in _tmp() - before.tmp]
    roots += sorted(_cores() - before.cores)
    for path, values in canaries_in_files(roots).items():
        if values & mine:
            found.add(f"file {path}")
    return sorted(found), _residue(lab, before)


def _command(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")[:80]
            .decode(errors="replace")
        )
    except OSError:
        return "?"


def canaries_in_files(roots: Iterable[Path]) -> dict[Path, set[bytes]]:
    """Every regular file under ``roots`` holding something shaped like a canary."""
    found: dict[Path, set[bytes]] = {}
    for root in roots:
        if root.is_file():
            files: Iterable[Path] = [root]
        elif root.is_dir():
            files = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            continue
        for path in files:
            try:
                with path.open("rb") as file:
                    data = file.read(MAX_READ)
            except OSError:
                continue
            values = set(CANARY_SHAPE.findall(data))
            if values:
                found[path] = values
    return found


def _residue(lab: Lab, before: Baseline) -> list[str]:
    _, found = residue.settled_residue(before.snapshot)
    for kind in ("containers", "sandboxes"):
        claims = lab.runtime / kind
        if claims.is_dir():
            found += [f"runtime claim {claim}" for claim in sorted(claims.iterdir())]
    found += [f"link {name}" for name in sorted(_links() - before.links)]
    found += [f"{TMP / name}" for name in sorted(_tmp() - before.tmp)]
    found += [f"core file {path}" for path in sorted(_cores() - before.cores)]
    return found
