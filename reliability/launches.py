"""The launches the suite makes, each with canary values of its own, and how each ended.

A launch is the real ``mesos-secrets run`` in a process of its own, on a spec whose task
checks its secrets itself (a SHA-256 of each, compared in the task: no value on any
command line) and prints ``all-checks-passed``. Its secrets are fresh canaries, put in
the store the launch reads: the embedded store, OpenBao, or OpenBao through the node
agent. A fault (:data:`FAULTS`) is injected before or during the launch.

Every launch ends one of four ways:

- ``succeeded``: exit 0, the task's checks passed;
- ``failed_clearly``: a non-zero exit with our one-line error (``mesos-secrets:
  error: ...``) and no traceback, or the end the fault itself forced (the task killed:
  128+9; ``run`` killed);
- ``failed_unclearly``: anything else (a traceback, a wrong value, an error that names
  nothing);
- ``hung``: still running at the deadline (then killed).

After each launch (and, for a killed ``run``, after the next launch has recovered what
it left) :mod:`.sweep` looks for the canaries where they must never be and for what the
launch left behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from mesos_secrets.testing import canary
from resolvers.local import LocalStore
from tests import residue
from tests.bao import Bao, free_port, stop_process
from tests.hostile import SilentServer, SlowProxy
from tests.node_agent import NodeAgent

from .cluster import NoForwardingProxy, RaftCluster
from .network import DelayRelay, InNamespaceBao, IsolatedNetwork
from .sweep import encodings

__all__ = [
    "FAULTS",
    "Lab",
    "Launched",
    "Outcome",
    "Prepared",
    "execute",
    "launch",
    "prepare",
    "recover",
]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "mesos-secrets"
#: A launch still running this long after it started has hung (the resolvers' own
#: deadlines are 10 s; a launch that needs more than this is not going to end).
DEADLINE_S = 60.0
#: What the task prints once every check passed.
PASSED = b"all-checks-passed"
#: The one line our command prints when it fails.
ERROR_LINE = b"mesos-secrets: error: "
#: What no launch may print, whatever it ends in.
CRASHES = (b"Traceback (most recent call last)", b"Fatal Python error", b"panic: ")
#: The secret volume's tmpfs holds 1 MiB by default: a secret over it cannot be written.
OVERSIZED = 2 * 1024 * 1024

#: The faults a launch from a private image (kind ``image``) is made under.
IMAGE_FAULTS = ("none", "missing-secret", "task-killed", "run-killed")

#: Faults of the raft cluster's.
CLUSTER_FAULTS = ("leader-killed", "standby-forwards", "standby-redirects")

#: fault -> (the stores it applies to, what it may end in)
FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "none": (("local", "vault", "agent"), ("succeeded",)),
    "missing-secret": (("local", "vault", "agent"), ("failed_clearly",)),
    "store-unreachable": (("vault",), ("failed_clearly",)),
    "store-silent": (("vault",), ("failed_clearly",)),
    "store-slow": (("vault",), ("succeeded", "failed_clearly")),
    "store-trickling": (("vault",), ("succeeded", "failed_clearly")),
    "store-sealed": (("vault",), ("succeeded", "failed_clearly")),
    "full-tmpfs": (("local", "vault"), ("failed_clearly",)),
    "store-disk-full": (("local",), ("failed_clearly",)),
    "net-loss": (("vault",), ("succeeded", "failed_clearly")),
    "net-latency": (("vault",), ("succeeded", "failed_clearly")),
    "net-partition": (("vault",), ("succeeded", "failed_clearly")),
    "leader-killed": (("vault",), ("succeeded", "failed_clearly")),
    "standby-forwards": (("vault",), ("succeeded",)),
    "standby-redirects": (("vault",), ("succeeded",)),
    "task-killed": (("local", "vault", "agent"), ("failed_clearly",)),
    "run-killed": (("local", "vault", "agent"), ("succeeded", "failed_clearly")),
    "agent-killed": (("agent",), ("succeeded", "failed_clearly")),
}


@attrs.define
class Outcome:
    """How one launch ended, and what the sweep found after it."""

    kind: str  # "app" or "pod"
    store: str  # "local", "vault", "agent"
    fault: str
    result: str  # succeeded, failed_clearly, failed_unclearly, hung
    seconds: float
    exit_status: int | None
    detail: str  # one line: the error, or why it is unclear
    expected: bool  # the result is one the fault may end in
    leaks: list[str] = attrs.field(factory=list)
    #: What a fault that strikes while the launch runs did (None: it found nothing to
    #: strike, the launch having ended first); faults set up before the launch say so.
    injected: str | None = "before the launch"
    residue: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Lab:
    """What the launches share: a directory, the embedded store, an OpenBao dev server,
    a second one to seal, a node agent in front of the first, a runtime directory."""

    def __init__(self, directory: Path, *, deadline: float | None = None) -> None:
        self.directory = directory
        #: The vault resolver's deadline for ``run`` (None: its default, 10 s).
        self.deadline = deadline
        directory.mkdir(parents=True, exist_ok=True)
        self.home = directory / "store"
        self.runtime = directory / "runtime"
        self.logs = directory / "logs"
        self.logs.mkdir(exist_ok=True)
        #: The audit trail of every ``run`` and executor.
        self.audit = self.logs / "audit.log"
        self.local = LocalStore(self.home)
        self._stack = contextlib.ExitStack()
        try:
            #: A file system of 256 KiB for a store whose disk is full.
            self.small = directory / "small"
            self.small.mkdir(exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(self.small)],
                check=True,
            )
            self._stack.callback(
                subprocess.run, ["umount", "-l", str(self.small)], check=False, capture_output=True
            )
            self.bao = Bao(directory / "bao")
            self._stack.callback(self.bao.stop)
            self.sealable = Bao(directory / "bao-sealable")
            self._stack.callback(self.sealable.stop)
            #: OpenBao in a network namespace of the lab's own, over a veth.
            self.network = IsolatedNetwork().start()
            self._stack.callback(self.network.close)
            self.netbao = InNamespaceBao(self.network, directory / "bao-netns")
            self.network.callback(self.netbao.stop)
            #: Three OpenBao nodes in raft, whose standbys forward (or redirect) reads.
            self.cluster = RaftCluster(directory / "cluster", standby_reads=False)
            self._stack.callback(self.cluster.close)
            self.agent = self._start_agent()
            self._stack.callback(self._stop_agent)
        except BaseException:
            self._stack.close()
            raise
        self.count = 0
        self._numbers = threading.Lock()
        self._registry: Any = None
        self.registry_password = ""

    def next_number(self) -> int:
        """A number for a new launch, unique in the lab (launches may start at once)."""
        with self._numbers:
            self.count += 1
            return self.count

    # --- the shared parts ---------------------------------------------------------------

    def _start_agent(self) -> NodeAgent:
        agent_dir = self.directory / "agent"
        return NodeAgent(
            agent_dir,
            resolver="vault",
            extra=f'[resolvers.vault]\naddress = "{self.bao.address}"\n'
            f'token = "{self.bao.root_token}"\n',
            agent="cache_ttl = 30\n",
        )

    def _stop_agent(self) -> None:
        if self.agent.process is not None and self.agent.process.poll() is None:
            self.agent.stop()
        self.agent.cleanup()

    def registry(self) -> Any:
        """A private registry (Debian's docker-registry, TLS, htpasswd) holding busybox,
        its password a canary of the lab's; started on first use."""
        if self._registry is None:
            from tests.registry import Registry, build_busybox  # noqa: PLC0415 (slow)

            self.registry_password = canary()
            layout = self.directory / "image" / "layout"
            layout.parent.mkdir(parents=True, exist_ok=True)
            build_busybox(layout)
            registry = Registry(self.directory / "registry", {"pull": self.registry_password})
            self._stack.callback(registry.stop)
            registry.push(
                layout,
                "latest",
                "private/busybox:latest",
                user="pull",
                password=self.registry_password,
            )
            self._registry = registry
            (self.directory / "images.toml").write_text(
                self._base_config() + f'[images]\nstore = "{self.directory / "images"}"\n'
                f'ca_bundle = "{registry.ca.ca.cert}"\n'
            )
        return self._registry

    def pull_secret(self) -> bytes:
        """A Docker config for the registry (its value holds the password canary)."""
        registry = self.registry()
        auth = base64.b64encode(f"pull:{self.registry_password}".encode()).decode()
        return json.dumps({"auths": {registry.host: {"auth": auth}}}).encode()

    def _base_config(self) -> str:
        """The resolver's deadline, and the audit trail the sweep reads."""
        deadline = f"deadline = {self.deadline}\n" if self.deadline else ""
        return f'[audit]\nfile = "{self.audit}"\n[resolvers.vault]\n{deadline}'

    def restart_agent(self) -> None:
        """Start the node agent again (after a fault killed it)."""
        if self.agent.process is not None and self.agent.process.poll() is None:
            return
        self.agent.start()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def environment(
        self,
        store: str,
        *,
        address: str | None = None,
        home: Path | None = None,
        image: bool = False,
        bao: Bao | _Cluster | None = None,
    ) -> dict[str, str]:
        """``run``'s environment for ``store``: ``bao`` the OpenBao it reads (its address
        overridden by ``address``), ``home`` the embedded store, ``image`` the configuration
        with the lab's image store and registry CA."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VAULT_", "BAO_", "MESOS_SECRETS_"))
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        config = self.directory / ("images.toml" if image else "run.toml")
        if not config.exists():
            config.write_text(self._base_config())
        env.update(
            PYTHONPATH=str(ROOT),
            MESOS_SECRETS_HOME=str(home or self.home),
            MESOS_SECRETS_CONFIG=str(config),
        )
        if store == "local":
            env["MESOS_SECRETS_RESOLVER"] = "local"
        elif store == "vault":
            env.update(
                MESOS_SECRETS_RESOLVER="vault",
                VAULT_ADDR=address or (bao or self.bao).address,
                VAULT_TOKEN=(bao or self.bao).root_token,
            )
        else:
            env.update(
                MESOS_SECRETS_RESOLVER="agent", MESOS_SECRETS_AGENT_SOCKET=str(self.agent.socket)
            )
        return env

    def put(
        self,
        store: str,
        name: str,
        fields: dict[str, bytes],
        *,
        bao: Bao | _Cluster | None = None,
        home: Path | None = None,
    ) -> None:
        """``fields`` under ``name`` where ``store`` reads it (``home``: that embedded store)."""
        if store == "local":
            local = self.local if home is None else LocalStore(home)
            try:
                local.put(name, fields)
            finally:
                # No connection left open: the sweep reads the database file in this
                # process, and closing any descriptor of it drops SQLite's POSIX locks.
                local.close()
            return
        if isinstance(bao, _Cluster):
            self.cluster.put_secret(name.strip("/"), {k: v.decode() for k, v in fields.items()})
            return
        client = (bao or self.bao).client()
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path=name.strip("/"),
                secret={k: v.decode() for k, v in fields.items()},
                mount_point="secret",
            )
        finally:
            client.adapter.close()


# --- one launch ---------------------------------------------------------------------------


def _spec(
    kind: str,
    name: str,
    env_value: str,
    file_value: str,
    marker: str,
    linger: float,
    image: str = "",
) -> dict[str, Any]:
    """An app or a pod whose task checks an environment and a file secret, then stays
    ``linger`` seconds (long enough for a fault to find it running)."""
    script = "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = {_sha(env_value)}',
            f'test "$(sha256sum < secrets/db | cut -c1-64)" = {_sha(file_value)}',
            "echo all-checks-passed",
            # Not a comment: busybox sh execs a last command in place of itself.
            f"sleep {linger:g}; true {marker}",
        ]
    )
    secrets = {
        "db": {"source": f"{name}@password"},
        "dbfile": {"source": f"{name}@file"},
    }
    if kind == "image":
        spec = _spec("app", name, env_value, file_value, marker, linger)
        spec["id"] = "/reliability/image"
        spec["secrets"]["pull"] = {"source": f"{name}@pull"}
        spec["container"]["docker"] = {"image": image, "pullConfig": {"secret": "pull"}}
        return spec
    if kind == "app":
        return {
            "id": "/reliability/app",
            "cmd": script,
            "env": {"DB_PASSWORD": {"secret": "db"}},
            "secrets": secrets,
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": "secrets/db", "secret": "dbfile"}],
            },
        }
    return {
        "id": "/reliability/pod",
        "containers": [
            {
                "name": "c",
                "resources": {"cpus": 0.1, "mem": 32},
                "exec": {"command": {"shell": script}},
                "environment": {"DB_PASSWORD": {"secret": "db"}},
                "volumeMounts": [{"name": "s", "mountPath": "secrets/db"}],
            }
        ],
        "volumes": [{"name": "s", "secret": "dbfile"}],
        "secrets": secrets,
    }


@attrs.define
class Launched:
    """What :func:`launch` hands the sweep: the outcome, the canaries, the files."""

    outcome: Outcome
    canaries: tuple[str, ...]
    work: Path
    output: bytes
    recovered: bool = False


@attrs.define
class Prepared:
    """A launch ready to go: its spec written, its secrets stored."""

    number: int
    kind: str
    store: str
    fault: str
    canaries: tuple[str, ...]
    marker: str
    spec: Path
    work: Path


def prepare(lab: Lab, kind: str, store: str, fault: str, rng: random.Random) -> Prepared:
    """Store fresh canaries for a launch of ``kind`` from ``store`` and write its spec."""
    number = lab.next_number()
    env_value, file_value = canary(), canary()
    marker = f"reliability-task-{number}-{rng.getrandbits(32):08x}"
    name = f"/reliability/l{number}"
    fields = {"password": env_value.encode(), "file": file_value.encode()}
    image = ""
    if kind == "image":
        fields["pull"] = lab.pull_secret()
        image = f"{lab.registry().host}/private/busybox:latest"
    if fault == "full-tmpfs":
        fields["file"] = file_value.encode() + b"x" * OVERSIZED
    if fault != "missing-secret":
        lab.put(
            store,
            name,
            fields,
            bao=_store_for(lab, fault),
            home=lab.small / "store" if fault == "store-disk-full" else None,
        )
    spec = lab.directory / "specs" / f"l{number}.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    # A task still running when its run is killed: the container must die with run.
    linger = {"task-killed": 30.0, "run-killed": 30.0, "agent-killed": 0.5}.get(fault, 0.0)
    spec.write_text(json.dumps(_spec(kind, name, env_value, file_value, marker, linger, image)))
    work = lab.directory / "work" / f"l{number}"
    canaries = (env_value, file_value) + ((lab.registry_password,) if image else ())
    return Prepared(number, kind, store, fault, canaries, marker, spec, work)


def execute(
    lab: Lab, prepared: Prepared, rng: random.Random, *, fresh_pull: bool = True
) -> Launched:
    """Run a prepared launch with its fault injected; how it ended. ``fresh_pull``: an
    image is pulled again (its credentials used again) rather than taken from the image
    store (not while other launches use the store)."""
    fault, store = prepared.fault, prepared.store
    target = _store_for(lab, fault)
    with _fault(lab, fault, rng) as (address, during):
        env = lab.environment(
            store,
            address=address or (target.address if store == "vault" else None),
            home=lab.small / "store" if fault == "store-disk-full" else None,
            image=prepared.kind == "image",
            bao=target,
        )
        if prepared.kind == "image" and fresh_pull:
            shutil.rmtree(lab.directory / "images", ignore_errors=True)
        argv = [
            str(BIN),
            "run",
            str(prepared.spec),
            "--work-dir",
            str(prepared.work),
            "--runtime-dir",
            str(lab.runtime),
        ]
        live = Live.of(lab, prepared.kind, prepared.marker, rng, prepared.canaries)
        outcome, output = _watch(argv, env, during, live)
    outcome.kind, outcome.store, outcome.fault = prepared.kind, store, fault
    outcome.expected = outcome.result in FAULTS[fault][1]
    return Launched(outcome, prepared.canaries, prepared.work, output)


@attrs.frozen
class _Cluster:
    """The raft cluster, as a launch's store: the token; a node's address is the fault's."""

    address: str
    root_token: str


def _store_for(lab: Lab, fault: str) -> Bao | _Cluster:
    """The OpenBao a launch with ``fault`` reads."""
    if fault == "store-sealed":
        return lab.sealable
    if fault in CLUSTER_FAULTS:
        return _Cluster(lab.cluster.leader().address, lab.cluster.root_token)
    return lab.netbao if fault.startswith("net-") else lab.bao


def launch(lab: Lab, kind: str, store: str, fault: str, rng: random.Random) -> Launched:
    """One launch of ``kind`` from ``store`` with ``fault`` injected."""
    return execute(lab, prepare(lab, kind, store, fault, rng), rng)


#: Where in a launch a fault that strikes while it runs may strike: after a random
#: delay, or once something is seen from outside: its container claimed (then come its
#: cgroups, its image, its secrets), its secrets read (the audit trail has a new record;
#: then come its volumes and its process), its task running.
MOMENTS = ("delay", "claimed", "resolved", "running")
#: ... and, from a private image, while the image is being pulled.
IMAGE_MOMENTS = (*MOMENTS, "pulling")
#: The moments at which a store fault still finds the launch reading: its container is
#: claimed just before its image is provisioned and its secrets resolved.
READING = ("delay", "claimed")
#: How long to wait for a moment before taking the launch to have ended without it.
MOMENT_S = 20.0


@attrs.define
class Live:
    """A launch under way, for what a fault does while it runs."""

    process: subprocess.Popen[bytes]
    marker: str  # in the task's command line
    rng: random.Random
    canaries: tuple[str, ...]
    #: Where the moments of :data:`MOMENTS` are seen: the runtime directory, the image
    #: store, the launch's work directory (None: only a delay).
    runtime: Path | None = None
    images: Path | None = None
    moments: tuple[str, ...] = ("delay",)
    #: The audit trails, and their sizes before the launch.
    audits: tuple[tuple[Path, int], ...] = ()
    #: Where a canary was seen while the task ran, outside the task.
    leaks: list[str] = attrs.field(factory=list)
    #: What the fault did while the launch ran (None: nothing yet).
    injected: str | None = None
    #: The task's processes still alive 5 s after its front end was killed.
    outlived: list[int] = attrs.field(factory=list)
    #: The processes there before the launch.
    known: frozenset[int] = attrs.field(
        factory=lambda: frozenset(int(e) for e in os.listdir("/proc") if e.isdigit())
    )
    #: The container claims and the image downloads there before the launch.
    claims: frozenset[str] = frozenset()
    partials: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        lab: Lab,
        kind: str,
        marker: str,
        rng: random.Random,
        canaries: tuple[str, ...],
    ) -> Live:
        """A launch of ``kind`` about to start (its process set once started)."""
        images = lab.directory / "images"
        live = cls(
            None,  # type: ignore[arg-type]
            marker,
            rng,
            canaries,
            runtime=lab.runtime,
            images=images,
            moments=IMAGE_MOMENTS if kind == "image" else MOMENTS,
            audits=tuple((path, _size(path)) for path in (lab.audit, lab.agent.audit)),
        )
        live.claims = _listing(lab.runtime / "containers")
        live.partials = _listing(images / "tmp")
        return live

    def claimed(self) -> bool:
        return self.runtime is not None and bool(
            _listing(self.runtime / "containers") - self.claims
        )

    def pulling(self) -> bool:
        return self.images is not None and bool(_listing(self.images / "tmp") - self.partials)

    def resolved(self) -> bool:
        return any(_size(path) > size for path, size in self.audits)

    def running(self) -> bool:
        return bool(_pids_with(self.marker))

    def moment(self, delay: float, among: tuple[str, ...] | None = None) -> str | None:
        """Wait for a moment of the launch, one of ``among`` (default: :attr:`moments`)
        chosen at random (a delay: up to ``delay`` seconds); what it was, or None if the
        launch ended first."""
        moment = self.rng.choice([m for m in among or self.moments if m in self.moments])
        if moment == "delay":
            time.sleep(self.rng.uniform(0.0, delay))
            return "after a random delay" if self.process.poll() is None else None
        seen: Callable[[], bool] = getattr(self, moment)
        deadline = time.monotonic() + MOMENT_S
        while self.process.poll() is None and time.monotonic() < deadline:
            if seen():
                return f"once {moment}"
            time.sleep(0.002)
        return None

    def strike(
        self,
        delay: float,
        act: Callable[[], bool | None],
        what: str,
        among: tuple[str, ...] | None = None,
    ) -> str | None:
        """At a moment of the launch (:meth:`moment`), if it still runs: ``act()``. What
        was done and when, or None if the launch ended first (or ``act`` said False:
        nothing to strike)."""
        moment = self.moment(delay, among)
        if moment is None or self.process.poll() is not None or act() is False:
            return None
        return f"{what} {moment}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _listing(directory: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(directory))
    except OSError:
        return frozenset()


During = Callable[[Live], str | None]


@contextlib.contextmanager
def _fault(lab: Lab, fault: str, rng: random.Random) -> Iterator[tuple[str | None, During | None]]:
    """The store address the launch uses (None: the usual one) and what to do while it
    runs (None: nothing), for ``fault``; the fault undone afterwards."""
    if fault == "store-unreachable":
        yield f"http://127.0.0.1:{free_port()}", None  # nothing listens there
    elif fault == "store-silent":
        with SilentServer() as silent:
            yield silent.address(), None
    elif fault == "store-slow":
        with SlowProxy(lab.bao.address, delay=rng.choice([0.2, 1.0, 6.0])) as proxy:
            yield proxy.address(), None
    elif fault == "store-trickling":
        with SlowProxy(lab.bao.address, trickle=rng.choice([0.001, 0.01, 0.1])) as proxy:
            yield proxy.address(), None
    elif fault == "store-sealed":  # before the launch, or in its first 150 ms
        before = rng.random() < 0.5
        if before:
            lab.sealable.seal()
        try:
            yield None, (lambda live: "sealed before") if before else lambda live: _seal(lab, live)
        finally:
            lab.sealable.unseal()
    elif fault == "store-disk-full":
        filler = lab.small / "filler"
        _fill(filler)
        try:
            yield None, None
        finally:
            filler.unlink()
    elif fault in CLUSTER_FAULTS:
        with _cluster_fault(lab, fault, rng) as injected:
            yield injected
    elif fault.startswith("net-"):
        with _network_fault(lab, fault, rng) as injected:
            yield injected
    elif fault == "task-killed":
        yield None, _kill_task
    elif fault == "run-killed":
        yield None, _kill_run
    elif fault == "agent-killed":
        try:
            yield None, lambda live: _kill_agent(lab, live)
        finally:
            lab.restart_agent()
    else:
        yield None, None


def recover(lab: Lab) -> Outcome:
    """What the next launch does first: recover the runtime directory (a trivial app,
    whose ``run`` cleans up every container no live ``run`` holds)."""
    spec = lab.directory / "specs" / "recover.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"id": "/reliability/recover", "cmd": "true"}))
    argv = [str(BIN), "run", str(spec), "--runtime-dir", str(lab.runtime)]
    # The node's configuration, its image store included: recovery cleans what a killed
    # pull left there too.
    env = lab.environment("local", image=lab._registry is not None)
    outcome, _ = _watch(argv, env, None, Live(None, "", random.Random(0), ()))  # type: ignore[arg-type]
    return outcome


def _fill(path: Path) -> None:
    """Write ``path`` until its file system has no room left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass  # full
    finally:
        os.close(fd)


def _pids_with(marker: str) -> list[int]:
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def _kill_task(live: Live) -> str | None:
    """SIGKILL the task once it runs (its shell's command line holds the marker); first,
    look for its canaries in every other process's command line and environment."""
    deadline = time.monotonic() + 20
    while live.process.poll() is None and time.monotonic() < deadline:
        pids = _pids_with(live.marker)
        if pids:
            time.sleep(live.rng.uniform(0, 0.1))
            live.leaks += _holders(live)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return "killed the task"
        time.sleep(0.005)
    return None


def _holders(live: Live) -> list[str]:
    """Processes other than the task (its shell, whose command line has the marker, and
    the shell's children) whose command line or environment holds a canary."""
    needles = {needle for value in live.canaries for needle in encodings(value)}
    return [
        f"process {pid} while the task ran: {command}"
        for pid, command in residue.holders(needles, known=live.known)
        if not _is_task(pid, live.marker)
    ]


def _is_task(pid: int, marker: str) -> bool:
    for candidate in (pid, _parent(pid)):
        with contextlib.suppress(OSError):
            if marker.encode() in Path(f"/proc/{candidate}/cmdline").read_bytes():
                return True
    return False


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _network_fault(
    lab: Lab, fault: str, rng: random.Random
) -> Iterator[tuple[str | None, During | None]]:
    """Between ``run`` and the OpenBao in the lab's network namespace: packets lost,
    answers delayed, or the link taken down in the middle of the launch."""
    if fault == "net-loss":
        lab.network.loss(rng.choice([10, 30, 60, 100]))
        try:
            yield None, None
        finally:
            lab.network.loss(0)
    elif fault == "net-latency":
        with DelayRelay(lab.netbao.address, rng.choice([0.05, 0.5, 3.0])) as relay:
            yield relay.address, None
    else:
        try:
            yield None, lambda live: _partition(lab, live)
        finally:
            lab.network.up()


def _seal(lab: Lab, live: Live) -> str | None:
    """Seal the launch's OpenBao while it starts: after a random delay (its reads begin
    some 100 ms in, once the interpreter and the resolver are loaded) or once its
    container is claimed."""
    return live.strike(0.3, lab.sealable.seal, "sealed", READING)


@contextlib.contextmanager
def _cluster_fault(
    lab: Lab, fault: str, rng: random.Random
) -> Iterator[tuple[str | None, During | None]]:
    """Reads through one node of the raft cluster: a standby, which forwards them to the
    leader or (asked not to forward) redirects the client there; or any node while the
    leader is killed, then restarted and waited for once the launch has ended."""
    cluster = lab.cluster
    if fault == "standby-forwards":
        yield rng.choice(cluster.standbys()).address, None
    elif fault == "standby-redirects":
        with NoForwardingProxy(rng.choice(cluster.standbys()).address) as proxy:
            yield proxy.address, None
    else:
        leader = cluster.leader()
        try:
            yield rng.choice(cluster.nodes).address, lambda live: _kill_leader(lab, leader, live)
        finally:
            if not leader.alive:
                cluster.restart(leader)
            cluster.wait_healthy(timeout=60)


def _kill_leader(lab: Lab, leader: Any, live: Live) -> str | None:
    """SIGKILL the raft leader while the launch starts (as :func:`_seal`)."""
    return live.strike(0.3, lambda: lab.cluster.kill(leader), "killed the leader", READING)


def _partition(lab: Lab, live: Live) -> str | None:
    """Take the link to OpenBao down while the launch starts (as :func:`_seal`; up once
    it ends)."""
    return live.strike(0.3, lab.network.down, "partitioned", READING)


def _kill_run(live: Live) -> str | None:
    """SIGKILL ``run`` itself at a moment of the launch."""

    def kill() -> None:
        live.process.kill()
        live.outlived = outliving(live.marker)

    return live.strike(0.6, kill, "killed run")


def outliving(marker: str, within: float = 5.0) -> list[int]:
    """The task's processes (by ``marker``) still there ``within`` seconds after its
    front end died: none may be, as the container dies with its front end."""
    deadline = time.monotonic() + within
    while (pids := _pids_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def _kill_agent(lab: Lab, live: Live) -> str | None:
    """SIGKILL the node agent at a moment of the launch, and start it again."""

    def kill() -> bool:
        agent = lab.agent.process
        if agent is None or agent.poll() is not None:
            return False
        stop_process(agent, signal.SIGKILL)
        lab.restart_agent()
        return True

    return live.strike(0.4, kill, "killed the agent")


def _watch(
    argv: list[str], env: dict[str, str], during: During | None, live: Live
) -> tuple[Outcome, bytes]:
    started = time.monotonic()
    live.process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    process = live.process
    injected = during(live) if during is not None else "before the launch"
    outcome, output = _ended(process, injected, started)
    if live.outlived:
        outcome.result = "failed_unclearly"
        outcome.detail = f"the task (pids {live.outlived}) outlived its killed run"
    outcome.leaks = live.leaks
    outcome.injected = injected
    return outcome, output


def _ended(
    process: subprocess.Popen[bytes], injected: str | None, started: float
) -> tuple[Outcome, bytes]:
    try:
        output, _ = process.communicate(timeout=max(0.0, DEADLINE_S - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            output, _ = process.communicate(timeout=5)
            why = f"still running after {DEADLINE_S:g} s"
        except subprocess.TimeoutExpired:  # what run started holds its output open
            assert process.stdout is not None
            process.stdout.close()
            process.wait()
            output, why = b"", f"something of it outlived run, {DEADLINE_S:g} s in"
        return _outcome("hung", process.returncode, started, why), output
    status = process.returncode
    lines = output.strip().splitlines()
    if any(crash in output for crash in CRASHES):
        return _outcome("failed_unclearly", status, started, "a traceback or a crash"), output
    if status == 0 and PASSED in output:
        return _outcome("succeeded", status, started, ""), output
    if (injected or "").startswith("killed run") and status == -signal.SIGKILL:
        return _outcome("failed_clearly", status, started, "run killed (injected)"), output
    if injected == "killed the task" and status == 128 + signal.SIGKILL:
        return _outcome("failed_clearly", status, started, "the task killed (injected)"), output
    # Our error: exit status 1, and the last line, saying what failed and where.
    if status == 1 and lines and _clear(lines[-1]):
        return _outcome(
            "failed_clearly", status, started, lines[-1].decode(errors="replace")[:300]
        ), output
    last = lines[-1:] or [b""]
    why = f"exit {status}, and not our error line last: {last[0].decode(errors='replace')[:200]}"
    return _outcome("failed_unclearly", status, started, why), output


def _clear(line: bytes) -> bool:
    """Our one-line error, naming a secret, a store (the node agent's socket) or a volume."""
    if not line.startswith(ERROR_LINE):
        return False
    text = line[len(ERROR_LINE) :]
    return any(
        word in text
        for word in (b"'/reliability/", b"http://", b"https://", b"store", b"node agent")
    )


def _outcome(result: str, status: int | None, started: float, detail: str) -> Outcome:
    return Outcome(
        kind="",
        store="",
        fault="",
        result=result,
        seconds=round(time.monotonic() - started, 3),
        exit_status=status,
        detail=detail,
        expected=False,
    )
