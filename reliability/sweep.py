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
directory, a veth, an entry in ``/tmp``, a partial image download, a holding the node
agent still records for a caller that is gone, a store token an executor did not revoke.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from tests import residue
from tests.node_agent import request

if TYPE_CHECKING:
    from .launches import Lab, Launched

__all__ = [
    "Baseline",
    "baseline",
    "canaries_in_files",
    "check",
    "encodings",
    "files_holding",
]

#: What :func:`mesos_secrets.testing.canary` makes.
CANARY_SHAPE = re.compile(rb"CANARY[A-Za-z0-9]{24}")
#: The same in hex (any case).
HEX_SHAPE = re.compile(rb"(?i:43414e415259(?:[0-9a-f]{2}){24})")
#: A run of base64 long enough to hold a canary (30 bytes: 40 characters), standard or
#: URL-safe, padded or not.
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{40,}")
#: Files larger than this are read in part only (none of ours should be).
MAX_READ = 64 * 1024 * 1024
#: The shared temporary directory, watched for what a launch leaves (only listed).
TMP = Path(tempfile.gettempdir())
#: How every temporary file or directory of ours is named there.
OURS = "mesos-secrets"


@attrs.frozen
class Baseline:
    """What was there before a launch."""

    snapshot: residue.Snapshot
    links: frozenset[str]
    tmp: frozenset[str]
    cores: frozenset[Path]
    pids: frozenset[int]
    partials: frozenset[Path] = frozenset()
    #: None: not looked at (no lab given).
    tokens: frozenset[str] | None = None


def _links() -> frozenset[str]:
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    return frozenset(line.split(":")[1].strip().split("@")[0] for line in listing.splitlines())


def _tmp() -> frozenset[str]:
    """Our entries in the shared temporary directory (``run``'s default sandboxes and
    runtime directory; whatever else the machine's other users put there is theirs)."""
    return frozenset(name for name in os.listdir(TMP) if name.startswith(OURS))


def _cores() -> frozenset[Path]:
    """Core files where the kernel writes them (``core_pattern`` here is ``core``: in
    the crashing process's directory, the suite's own for ``run`` and the executor)."""
    return frozenset(Path.cwd().glob("core*"))


def _partials(lab: Lab) -> frozenset[Path]:
    """Image downloads and unpacks under way in the lab's image store."""
    partial = lab.directory / "images" / "tmp"
    return frozenset(partial.iterdir()) if partial.is_dir() else frozenset()


def tokens(lab: Lab) -> frozenset[str]:
    """The accessors of the tokens alive in the lab's OpenBao (where executors get
    theirs)."""
    client = lab.bao.client()
    try:
        return frozenset(client.auth.token.list_accessors()["data"]["keys"])
    finally:
        client.adapter.close()


#: How long the node agent may take to end the holdings of a caller that died (its
#: sweep runs every 2 s).
HOLDINGS_S = 5.0


def _holdings(lab: Lab) -> list[str]:
    """What the node agent still records as held, once its callers are all gone."""
    deadline = time.monotonic() + HOLDINGS_S
    while True:
        try:
            status, answer = request(lab.agent.socket, "GET", "/v1/status")
        except OSError:
            return []  # not running: a fault killed it, and nothing is held until it is back
        held = answer.get("containers", []) if status == 200 else []
        if not held or time.monotonic() > deadline:
            return [
                f"node agent holding for pid {holder['pid']}: "
                + ", ".join(sorted({s["name"] for s in holder["secrets"]}))
                for holder in held
            ]
        time.sleep(0.1)


def baseline(lab: Lab | None = None) -> Baseline:
    pids = frozenset(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    if lab is None:
        return Baseline(residue.snapshot(), _links(), _tmp(), _cores(), pids)
    return Baseline(
        residue.snapshot(), _links(), _tmp(), _cores(), pids, _partials(lab), tokens(lab)
    )


def check(
    lab: Lab, launched: Launched, before: Baseline, *, residue_too: bool = True
) -> tuple[list[str], list[str]]:
    """After ``launched`` ended: where its canaries are, as they are or encoded (leaks),
    and, with ``residue_too``, what it left."""
    found = set()
    needles = {needle for value in launched.canaries for needle in encodings(value)}
    if any(needle in launched.output for needle in needles):
        found.add("the launch's output")
    for pid, command in residue.holders(needles, known=before.pids):
        found.add(f"process {pid}: {command}")
    roots = [launched.work, lab.runtime, lab.home, lab.agent.base, lab.logs, lab.small]
    roots.append(lab.directory / "images")
    roots += [TMP / name for name in _tmp() - before.tmp]
    roots += sorted(_cores() - before.cores)
    found.update(f"file {path}" for path in files_holding(roots, needles))
    return sorted(found), _residue(lab, before) if residue_too else []


def encodings(value: str) -> set[bytes]:
    """``value`` as it is, in hex and in base64 (at each of the three alignments it can
    have inside a longer encoded text, the edge characters left out: a Docker config's
    ``auth`` is the base64 of ``user:password``)."""
    raw = value.encode()
    out = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for skew in range(3):
        data = bytes(skew) + raw
        encoded = base64.b64encode(data)
        first = 1 if skew else 0  # the first group holds padding bytes
        out.add(encoded[first * 4 : (len(data) // 3) * 4])
    return {needle for needle in out if len(needle) >= 16}


def files_holding(roots: Iterable[Path], needles: set[bytes]) -> list[Path]:
    """Every regular file under ``roots`` holding a needle."""
    return [path for path, data in _files(roots) if any(needle in data for needle in needles)]


def _files(roots: Iterable[Path]) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under ``roots`` and what it holds (its first :data:`MAX_READ`
    bytes)."""
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
                    yield path, file.read(MAX_READ)
            except OSError:
                continue


def canaries_in_files(roots: Iterable[Path]) -> dict[Path, set[bytes]]:
    """Every regular file under ``roots`` holding something shaped like a canary, as it
    is, in hex or in base64 (what it holds, as the canary's own text)."""
    found: dict[Path, set[bytes]] = {}
    for path, data in _files(roots):
        values = set(CANARY_SHAPE.findall(data))
        values.update(bytes.fromhex(h.decode()) for h in HEX_SHAPE.findall(data))
        values.update(_in_base64(data))
        if values:
            found[path] = values
    return found


def _in_base64(data: bytes) -> set[bytes]:
    """Canaries inside runs of base64 (standard or URL-safe) in ``data``: each run
    decoded from each of its first four characters, as the encoded text may start
    anywhere in a quantum."""
    found: set[bytes] = set()
    for run in BASE64_RUN.findall(data):
        standard = run.replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):
            chunk = standard[start:]
            if len(chunk) % 4 == 1:  # a lone character decodes to nothing
                chunk = chunk[:-1]
            chunk += b"=" * (-len(chunk) % 4)
            try:
                decoded = base64.b64decode(chunk, validate=True)
            except ValueError:
                continue
            found.update(CANARY_SHAPE.findall(decoded))
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
    found += [f"partial image download {path}" for path in sorted(_partials(lab) - before.partials)]
    if before.tokens is not None:
        found += [f"unrevoked store token {a}" for a in sorted(tokens(lab) - before.tokens)]
        found += _holdings(lab)
    found += [
        f"process {pid}: {command}"
        for pid, command in _new_processes(before.pids)
        if not any(service in command for service in SERVICES)
    ]
    return found


#: What the lab itself starts again while launches run (a node agent or a raft node
#: restarted after a fault): not a launch's leftover.
SERVICES = ("bao server", "mesos-secrets agent", "docker-registry")


def _new_processes(known: frozenset[int]) -> list[tuple[int, str]]:
    """Processes started since ``known`` was taken, still running (zombies aside)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known or int(entry) == os.getpid():
            continue
        try:
            state, parent = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z" and parent != "2":  # not a zombie, not a kernel thread (kthreadd's)
            found.append((int(entry), residue.command_line(int(entry))))
    return found
