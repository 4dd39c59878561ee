"""The network isolator: a task in a network namespace of its own (mode ``none``) cannot
reach the host, keeps its secrets, and leaves no namespace behind. Real namespaces; the
servers listen on the host's loopback only."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from isolators import firewall
from isolators.bridge import (
    BRIDGE_PREFIX,
    FORWARDING_MARKER,
    STATE_DIR,
    VETH_PREFIX,
    bridges,
)
from isolators.network import (
    NETNS_DIR,
    NetworkIsolator,
    create_namespace,
    namespace_prefix,
    parse_blocked,
    remove_namespace,
)
from mesos_secrets.containerizer.launcher import resolve_user
from mesos_secrets.errors import ConfigError, IsolatorError
from mesos_secrets.isolator import ContainerConfig, LaunchInfo
from mesos_secrets.mesos import CommandInfo, ContainerInfo, ContainerType
from mesos_secrets.testing import canary
from reliability.network import InNamespaceBao, IsolatedNetwork
from resolvers.value import ValueResolver

from .bao import Bao
from .conftest import requires_root
from .registry import Registry
from .test_images import ImageRunner, docker_config, layout, registry  # noqa: F401 (fixtures)
from .test_run import BIN, Runner, sha, wait_for, wait_running, wait_until

pytestmark = requires_root

ISOLATION = "network,environment_secret,volume_secret"

#: Run by the task (``python3 -c "$PROBE" PORT``): can it reach the host's server, does
#: its own loopback work, which interfaces and which network namespace does it have.
PROBE = """
import os, socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    print("host-reached")
except OSError as error:
    print("host-unreachable", type(error).__name__)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=5)
peer, _ = server.accept()
client.sendall(b"ping")
assert peer.recv(4) == b"ping"
print("own-loopback-works")
print("interfaces", ",".join(name for _, name in socket.if_nameindex()))
print("netns", os.readlink("/proc/self/ns/net"))
"""

#: A server on the task's loopback (``python3 -c "$SERVE" PORT``), for checks.
SERVE = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(8)
while True:
    server.accept()[0].close()
"""


@pytest.fixture(scope="module", autouse=True)
def _netns_dir() -> None:
    """``/run/netns`` becomes a mount of its own when the first namespace is made there
    (pyroute2 does as ``ip netns add`` does): made before any test's residue snapshot,
    so that it is no test's residue."""
    path = NETNS_DIR / f"mesos-secrets-test-setup-{os.getpid()}"
    create_namespace(path)
    remove_namespace(path)


class HostServer:
    """A TCP server on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port: int = self.socket.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.socket.close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[HostServer]:
    found = HostServer()
    yield found
    found.close()


def ours(runtime: Path) -> list[str]:
    """The namespaces of ``runtime``'s containers: in /run/netns, and as `ip netns` lists
    them."""
    prefix = namespace_prefix(runtime)
    on_disk = [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)]
    listed = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True).stdout
    return sorted(on_disk) + [
        f"ip netns: {line}" for line in listed.splitlines() if line.startswith(prefix)
    ]


def _config(isolation: str, options: dict[str, Any], resolver: str = "") -> str:
    lines = [f"isolation = {json.dumps(isolation)}"]
    lines += [f"resolver = {json.dumps(resolver)}"] if resolver else []
    lines += ["", "[isolators.network]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def bridge_residue() -> list[str]:
    """What of any bridge of ours the host has: bridges, veths, nftables tables, leases,
    IPv4 forwarding left on by us."""
    with IPRoute() as ipr:
        links = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    found = [f"link {n}" for n in links if n.startswith((BRIDGE_PREFIX, VETH_PREFIX))]
    found += [f"nft table {t}" for t in firewall.tables()]
    found += [f"leases {n}" for n in bridges()]
    if (STATE_DIR / FORWARDING_MARKER).exists():
        found.append("IPv4 forwarding left on")
    return found


def random_subnet() -> str:
    """A /24 of 10.213.0.0/16 no route of the host's overlaps."""
    with IPRoute() as ipr:
        routed = [
            ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False)
            for r in ipr.get_routes(family=socket.AF_INET)
            if r.get_attr("RTA_DST")
        ]
    while True:
        subnet = ipaddress.IPv4Network(f"10.213.{random.randrange(256)}.0/24")
        if not any(subnet.overlaps(other) for other in routed):
            return str(subnet)


class NetRunner(Runner):
    """Runs specs with the network isolator, configured as the test says (a bridge on a
    range of the test's own)."""

    def __init__(self, tmp_path: Path, home: Path) -> None:
        super().__init__(tmp_path, home)
        self.file = self.config = tmp_path / "config.toml"
        self.subnet = random_subnet()
        self.configure(mode="none")

    def configure(self, isolation: str = ISOLATION, bao: Bao | None = None, **options: Any) -> None:
        """The isolator's ``options``; the store: the embedded one, or ``bao``."""
        options.setdefault("subnet", self.subnet)
        if bao is None:
            self.file.write_text(_config(isolation, options))
            return
        vault = f'\n[resolvers.vault]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n'
        self.file.write_text(_config(isolation, options, "vault") + vault)

    def assert_no_residue(self) -> None:
        super().assert_no_residue()
        assert ours(self.runtime) == []
        assert bridge_residue() == []


@pytest.fixture
def runner(tmp_path: Path, home: Path) -> NetRunner:
    return NetRunner(tmp_path, home)


def probing_app(port: int, value: str) -> dict[str, Any]:
    """Checks its env and file secrets, then probes the network (:data:`PROBE`)."""
    script = "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = {sha(value)}',
            f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha(value)}',
            "echo secrets-delivered",
            f'python3 -c "$PROBE" {port}',
        ]
    )
    return {
        "cmd": script,
        "env": {"DB_PASSWORD": {"secret": "db"}, "PROBE": PROBE},
        "secrets": {"db": {"source": "/myapp/db@password"}},
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
        },
    }


def run_probe(
    runner: NetRunner,
    server: HostServer,
    *,
    labels: dict[str, str] | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run :func:`probing_app` (with ``labels``) against ``server``, with a canary in the
    store; ``quiet``: without -vv, as a user sees it."""
    value = canary()
    runner.store.put("/myapp/db", {"password": value})
    spec = probing_app(server.port, value)
    if labels is not None:
        spec["labels"] = labels
    return runner.run_quiet(spec) if quiet else runner.run(spec)


def host_namespace() -> str:
    return os.readlink("/proc/self/ns/net")


class TestNoneMode:
    def test_task_cannot_reach_the_host(self, runner: NetRunner, server: HostServer) -> None:
        """A server on the host's loopback refuses the task (its 127.0.0.1 is its own), the
        task's own loopback works, it has no other interface, its secrets arrive."""
        result = run_probe(runner, server)
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "secrets-delivered" in out
        assert "host-unreachable ConnectionRefusedError" in out
        assert "own-loopback-works" in out
        assert "interfaces lo\n" in out
        assert f"netns {host_namespace()}" not in out
        assert server.accepted == 0
        runner.assert_no_residue()

    def test_host_mode_reaches_the_host(self, runner: NetRunner, server: HostServer) -> None:
        """The default mode is the host's network, as without the isolator."""
        runner.configure()
        result = run_probe(runner, server)
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "secrets-delivered" in out
        assert "host-reached" in out
        assert f"netns {host_namespace()}" in out
        wait_until(lambda: server.accepted == 1, timeout=5)
        runner.assert_no_residue()

    @pytest.mark.parametrize("protocol", ["COMMAND", "MESOS_TCP"])
    def test_checks_probe_the_tasks_network(self, runner: NetRunner, protocol: str) -> None:
        """A COMMAND health check enters the task's network namespace with the rest, a
        TCP one probes from it: each reaches a server on the task's loopback, on a port
        nothing on the host's has."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # free on the host: closed before the task runs
        check: dict[str, Any] = {
            "protocol": protocol,
            "gracePeriodSeconds": 0,
            "intervalSeconds": 1,
            "delaySeconds": 0,
            "maxConsecutiveFailures": 5,
        }
        if protocol == "COMMAND":
            check["command"] = {
                "value": "python3 -c 'import socket; "
                f'socket.create_connection(("127.0.0.1", {port}), timeout=2)\''
            }
        else:
            check["port"] = port
        spec = {
            "cmd": f'python3 -c "$SERVE" {port} & sleep 4',
            "env": {"SERVE": SERVE},
            "healthChecks": [check],
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert b"is healthy" in result.stderr
        runner.assert_no_residue()


class TestNothingLeft:
    def test_after_failure(self, runner: NetRunner) -> None:
        result = runner.run({"cmd": "exit 3"})
        assert result.returncode == 3
        runner.assert_no_residue()

    def test_after_a_launch_that_fails(self, runner: NetRunner) -> None:
        """The namespace is made before the launch fails: it goes all the same."""
        result = runner.run({"args": ["/no/such/program"]})
        assert result.returncode == 1
        assert b"cannot start the task" in result.stderr
        runner.assert_no_residue()

    def test_after_a_kill(self, runner: NetRunner) -> None:
        process = runner.start({"cmd": "touch started; sleep 60"}, "--grace-period", "0.5")
        wait_running(process)
        wait_for(runner.work / "started")
        assert len(ours(runner.runtime)) == 2  # in /run/netns, and listed by ip netns
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 128 + signal.SIGTERM, err.decode()
        runner.assert_no_residue()

    @pytest.mark.parametrize("mode", ["none", "bridge"])
    def test_front_end_killed_then_recovered(self, runner: NetRunner, mode: str) -> None:
        """run dies by SIGKILL: the task dies with it, its namespace stays (a mount, no
        process holds it), and on a bridge its veth, lease and rules, until the next
        front end's recover removes them."""
        runner.configure(mode=mode)
        process = runner.start({"cmd": "touch started; sleep 60"})
        wait_for(runner.work / "started")
        process.kill()
        process.wait()
        process.communicate()
        assert len(ours(runner.runtime)) == 2
        if mode == "bridge":
            left = bridge_residue()
            assert any(line.startswith("link msv") for line in left), left
            assert any(line.startswith("nft table") for line in left), left
        result = runner.run({"cmd": "true"})
        assert result.returncode == 0, result.stderr.decode()
        assert b"cleaning up orphaned container" in result.stderr
        runner.assert_no_residue()

    @pytest.mark.parametrize("mode", ["none", "bridge"])
    def test_twenty_concurrent_tasks(self, runner: NetRunner, mode: str) -> None:
        """Twenty front ends at once, each recovering as it starts while the others
        prepare: twenty tasks running at the same time, in distinct namespaces, none left
        afterwards; on a bridge, twenty distinct addresses of its range.

        No task ends before all twenty run (each says so by a file in its sandbox): an
        address is free again once its task has ended, so only tasks alive together must
        hold distinct ones."""
        runner.configure(mode=mode)
        address = "ip -4 -o addr show eth0 | awk '{print $4}'; " if mode == "bridge" else ""
        spec = runner.spec(
            {
                "cmd": f"{{ readlink /proc/self/ns/net; {address}}} > up.new && mv up.new up; "
                "while [ ! -e go ]; do sleep 0.05; done; cat up"
            }
        )
        works = [runner.tmp / f"work-{i}" for i in range(20)]
        processes = [
            subprocess.Popen(
                [
                    str(BIN),
                    "--config",
                    str(runner.config),
                    "run",
                    str(spec),
                    "--work-dir",
                    str(work),
                    "--runtime-dir",
                    str(runner.runtime),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for work in works
        ]
        try:
            wait_until(
                lambda: (
                    all((work / "up").exists() for work in works)
                    or any(p.poll() is not None for p in processes)
                ),
                timeout=120,
            )
            assert len([n for n in ours(runner.runtime) if "ip netns" not in n]) == 20
        finally:
            for work in works:
                work.mkdir(parents=True, exist_ok=True)
                (work / "go").touch()
            results = [process.communicate(timeout=120) for process in processes]
        assert [p.returncode for p in processes] == [0] * 20, [e.decode() for _, e in results]
        namespaces = {out.decode().split()[0] for out, _ in results}
        assert len(namespaces) == 20
        assert host_namespace() not in namespaces
        if mode == "bridge":
            addresses = {ipaddress.IPv4Interface(out.decode().split()[1]) for out, _ in results}
            assert len(addresses) == 20
            assert all(a.network == ipaddress.IPv4Network(runner.subnet) for a in addresses)
        runner.assert_no_residue()


class TestRefused:
    """One line each, saying what is wrong and where."""

    def test_unknown_mode(self, runner: NetRunner) -> None:
        runner.configure(mode="airgap")
        result = runner.run_quiet({"cmd": "true"})
        assert result.returncode == 1
        assert result.stderr.decode().splitlines() == [
            "mesos-secrets: error: [isolators.network] mode = 'airgap': not a network mode "
            "(host, none or bridge)"
        ]

    def test_named_container_network(self, runner: NetRunner) -> None:
        result = runner.run_quiet(
            {"cmd": "true", "networks": [{"mode": "container", "name": "dcos"}]}
        )
        assert result.returncode == 1
        (line,) = result.stderr.decode().splitlines()
        assert "container network 'dcos' (container.network_infos[0].name; Marathon: " in line
        assert "named container (CNI) networks are not supported" in line
        runner.assert_no_residue()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"subnet": "10.0.0.1/16"}, r"subnet = '10.0.0.1/16': not an IPv4 network"),
            ({"subnet": "8.8.0.0/16"}, r"subnet = '8.8.0.0/16': not a private range"),
            ({"subnet": "10.0.0.0/31"}, r"subnet = '10.0.0.0/31': too small"),
            ({"blocked": ["vault.example:8200"]}, r"blocked\[0\] = 'vault.example:8200': not an"),
            ({"blocked": ["10.0.0.1:0"]}, r"blocked\[0\] = '10.0.0.1:0': the port must be"),
            ({"blocked": "10.0.0.1, [fd00::1"}, r"blocked\[1\] = '\[fd00::1': an IPv6 address"),
        ],
    )
    def test_bad_options(self, tmp_path: Path, options: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=r"^\[isolators\.network\] " + message):
            NetworkIsolator.from_options(ValueResolver(), tmp_path, **options)

    def test_blocked_addresses(self) -> None:
        assert [
            str(parse_blocked(entry))
            for entry in ("10.0.0.5", "10.0.0.0/24", "10.0.0.5:8200", "fd00::1", "[fd00::1]:8200")
        ] == ["10.0.0.5", "10.0.0.0/24", "10.0.0.5:8200", "fd00::1", "[fd00::1]:8200"]

    def test_two_network_namespaces(self) -> None:
        first = LaunchInfo(network_namespace=Path("/run/netns/a"))
        with pytest.raises(IsolatorError, match="sets the network namespace"):
            first.merge(LaunchInfo(network_namespace=Path("/run/netns/b")), "other")
        assert first.merge(LaunchInfo(), "other").network_namespace == Path("/run/netns/a")


def _config_for(sandbox: Path, container_id: str) -> ContainerConfig:
    return ContainerConfig(
        container_id=container_id,
        sandbox=sandbox,
        user=resolve_user(None),
        command=CommandInfo(value="true"),
        container=ContainerInfo(type=ContainerType.MESOS),
    )


class TestIsolator:
    def test_prepare_then_cleanup(self, tmp_path: Path) -> None:
        """A namespace with its loopback up, journalled; cleanup removes both, twice."""
        isolator = NetworkIsolator(ValueResolver(), tmp_path / "runtime", mode="none")
        info = isolator.prepare(_config_for(tmp_path, "c1"))
        assert info is not None
        assert info.network_namespace is not None
        name = info.network_namespace.name
        try:
            assert name == namespace_prefix(tmp_path / "runtime") + "c1"
            link = subprocess.run(
                ["ip", "-n", name, "-o", "link"], capture_output=True, text=True, check=True
            ).stdout
            assert link.count("\n") == 1  # lo, nothing else
            assert "lo:" in link
            assert ",UP," in link
            journal = isolator.container_dir("c1") / "namespace.json"
            assert json.loads(journal.read_text()) == {"mode": "none", "namespace": name}
        finally:
            isolator.cleanup("c1")
            isolator.cleanup("c1")
        assert not info.network_namespace.exists()
        assert not isolator.container_dir("c1").exists()

    def test_host_mode_makes_nothing(self, tmp_path: Path) -> None:
        isolator = NetworkIsolator(ValueResolver(), tmp_path / "runtime")
        assert isolator.prepare(_config_for(tmp_path, "c1")) is None
        assert ours(tmp_path / "runtime") == []

    def test_recover_removes_only_its_own_leftovers(self, tmp_path: Path) -> None:
        """Of the namespaces named for this runtime directory, those whose container is
        neither alive nor claimed (since) go; another runtime directory's stay."""
        runtime = tmp_path / "runtime"
        isolator = NetworkIsolator(ValueResolver(), runtime, mode="none")
        gone, alive, claimed = (isolator.prefix + cid for cid in ("gone", "alive", "claimed"))
        foreign = namespace_prefix(tmp_path / "other") + "gone"
        (runtime / "containers" / "claimed").mkdir(parents=True)
        names = (gone, alive, claimed, foreign)
        try:
            for name in names:
                create_namespace(NETNS_DIR / name)
            isolator.recover(["alive"])
            assert not (NETNS_DIR / gone).exists()
            assert all((NETNS_DIR / name).exists() for name in (alive, claimed, foreign))
        finally:
            for name in names:
                remove_namespace(NETNS_DIR / name)

    def test_container_id_that_cannot_name_a_namespace(self, tmp_path: Path) -> None:
        isolator = NetworkIsolator(ValueResolver(), tmp_path / "runtime", mode="none")
        with pytest.raises(IsolatorError, match="cannot name a network namespace"):
            isolator.prepare(_config_for(tmp_path, "a" * 200))
        assert ours(tmp_path / "runtime") == []


class NetImageRunner(ImageRunner):
    def __init__(self, tmp_path: Path, home: Path, images: Registry, mode: str) -> None:
        super().__init__(tmp_path, home, images)
        self.subnet = random_subnet()
        # Top-level keys come before the [images] table.
        options = {"mode": mode, "subnet": self.subnet}
        self.config.write_text(_config(ISOLATION, options) + self.config.read_text())


@pytest.mark.parametrize("mode", ["none", "host"])
def test_image_task(
    tmp_path: Path,
    home: Path,
    registry: Registry,  # noqa: F811 (the fixture)
    server: HostServer,
    mode: str,
) -> None:
    """A task in an image (runc) in mode none cannot reach the host's server, and gets its
    secret; in mode host it reaches it (the probe works)."""
    runner = NetImageRunner(tmp_path, home, registry, mode)
    runner.store.put("/registry/pull", {"config": docker_config(registry)})
    runner.store.put("/app/db", {"password": "db-password"})
    cmd = "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha("db-password")}',
            f"if nc -w 3 127.0.0.1 {server.port} </dev/null; then echo host-reached; "
            "else echo host-unreachable; fi",
            "ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' , | sed 's/^/interfaces /'",
            "echo",
            "echo netns $(readlink /proc/self/ns/net)",
        ]
    )
    spec = runner.app(cmd=cmd)
    spec["env"] = {"DB": {"secret": "db"}}
    result = runner.run(spec)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    if mode == "none":
        assert "host-unreachable" in out
        assert "interfaces lo,\n" in out
        assert f"netns {host_namespace()}" not in out
        assert server.accepted == 0
    else:
        assert "host-reached" in out
        assert f"netns {host_namespace()}" in out
        wait_until(lambda: server.accepted == 1, timeout=5)
    runner.assert_no_residue()
    assert ours(runner.runtime) == []


def test_image_task_on_the_bridge(
    tmp_path: Path,
    home: Path,
    registry: Registry,  # noqa: F811 (the fixture)
) -> None:
    """A task in an image (runc joins the namespace the OCI spec names) on the bridge:
    an address of the range, its secret, and the host reaches it through its port
    mapping."""
    runner = NetImageRunner(tmp_path, home, registry, "none")
    runner.store.put("/registry/pull", {"config": docker_config(registry)})
    runner.store.put("/app/db", {"password": "db-password"})
    cmd = "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha("db-password")}',
            "ip -4 -o addr show eth0 | awk '{print \"address\", $4}'",
            'touch "$MESOS_SANDBOX/serving"',
            "echo from-the-image | nc -l -p 8080",
        ]
    )
    port = free_host_port()
    spec = runner.app(
        cmd=cmd, portMappings=[{"containerPort": 8080, "hostPort": port, "protocol": "tcp"}]
    )
    spec["env"] = {"DB": {"secret": "db"}}
    spec["networks"] = [{"mode": "container/bridge"}]
    out, _, got = reach_through(runner, spec, port, runner.work / "serving")
    assert got == b"from-the-image\n"
    (line,) = [x for x in out.decode().splitlines() if x.startswith("address ")]
    address = ipaddress.IPv4Interface(line.split()[1])
    assert address.network == ipaddress.IPv4Network(runner.subnet)
    runner.assert_no_residue()
    assert ours(runner.runtime) == []
    assert bridge_residue() == []


#: Run by a task on the bridge (``python3 -c "$BRIDGE_PROBE" HOST ALLOWED STORE``): can
#: it reach the allowed server and the store, both on HOST; then it serves one
#: connection on its port 8080, for the test to reach it through its port mapping.
BRIDGE_PROBE = """
import socket, sys
host, allowed, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def reach(port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "reached"
    except OSError as error:
        return f"unreachable {type(error).__name__}"
print("allowed", reach(allowed), flush=True)
print("store", reach(store), flush=True)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 8080))
server.listen(1)
open("serving", "w").close()
connection, peer = server.accept()
connection.sendall(b"from-the-task\\n")
connection.close()
print("served", flush=True)
"""

#: A TCP server (``python3 -c "$SERVE_ON" ADDRESS PORT``) that accepts and closes.
SERVE_ON = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(16)
while True:
    server.accept()[0].close()
"""


class Upstream:
    """Beyond the host, in a network namespace of the test's own joined to the host by a
    veth (:class:`reliability.network.IsolatedNetwork`): OpenBao, and a server tasks are
    allowed to reach, both on the namespace's address."""

    def __init__(self, net: IsolatedNetwork, bao: InNamespaceBao) -> None:
        self.net = net
        self.bao = bao
        self.address = net.address
        self.store_port = int(bao.address.rsplit(":", 1)[1])
        self.allowed_port = self.store_port + 1 if self.store_port < 65535 else 1025
        net.popen([sys.executable, "-c", SERVE_ON, net.address, str(self.allowed_port)])
        wait_until(lambda: _connects(net.address, self.allowed_port), timeout=30)


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with IsolatedNetwork() as net:
        bao = InNamespaceBao(net)
        try:
            yield Upstream(net, bao)
        finally:
            bao.stop()


def reach_through(
    runner: Runner, spec: dict[str, Any], port: int, ready: Path
) -> tuple[bytes, bytes, bytes]:
    """Start ``spec``; once ``ready`` exists, read what the host gets from its port
    ``port`` (the task's mapping); the run's output and errors, and what was read. The
    run must succeed."""
    process = runner.start(spec)
    got = b""
    try:
        wait_for(ready)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            got = client.recv(100)
    finally:
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    return out, err, got


def free_host_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bridge_app(upstream: Upstream, host_port: int) -> dict[str, Any]:
    """Checks its env and file secrets, then :data:`BRIDGE_PROBE`; on the bridge, its
    port 8080 mapped to ``host_port``."""
    script = "; ".join(
        [
            "set -e",
            'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = "$WANT"',
            'test "$(sha256sum < secrets/db | cut -c1-64)" = "$WANT"',
            "echo secrets-delivered",
            f'python3 -c "$BRIDGE_PROBE" {upstream.address} {upstream.allowed_port} '
            f"{upstream.store_port}",
        ]
    )
    return {
        "cmd": script,
        "env": {"DB_PASSWORD": {"secret": "db"}, "BRIDGE_PROBE": BRIDGE_PROBE},
        "secrets": {"db": {"source": "/myapp/db@password"}},
        "networks": [{"mode": "container/bridge"}],
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
            "portMappings": [{"containerPort": 8080, "hostPort": host_port, "protocol": "tcp"}],
        },
    }


class TestBridgeMode:
    def _launch(
        self, runner: NetRunner, upstream: Upstream, **options: Any
    ) -> tuple[str, str, bytes]:
        """Run :func:`bridge_app` against ``upstream``'s OpenBao; its output, run's
        errors, and what the test read through the task's port mapping."""
        value = canary()
        upstream.bao.client().secrets.kv.v2.create_or_update_secret(
            path="myapp/db", secret={"password": value}
        )
        runner.configure(bao=upstream.bao, mode="host", **options)
        host_port = free_host_port()
        spec = bridge_app(upstream, host_port)
        spec["env"]["WANT"] = sha(value)
        out, err, got = reach_through(runner, spec, host_port, runner.work / "serving")
        assert value.encode() not in out + err
        return out.decode(), err.decode(), got

    def test_store_blocked_allowed_server_reached(
        self, runner: NetRunner, upstream: Upstream
    ) -> None:
        """By default the store's address is blocked: the task gets its secrets, reaches
        a server beyond the host (NAT), not OpenBao on the same address; the host
        reaches the task through its port mapping; nothing is left."""
        out, _, got = self._launch(runner, upstream)
        assert "secrets-delivered" in out
        assert "allowed reached" in out
        assert "store unreachable" in out
        assert got == b"from-the-task\n"
        assert "served" in out
        runner.assert_no_residue()

    def test_blocked_from_configuration(self, runner: NetRunner, upstream: Upstream) -> None:
        """``blocked`` replaces the default: the whole upstream address is closed, the
        store's port with it (secrets still arrive: the front end resolves them)."""
        out, _, got = self._launch(runner, upstream, blocked=[upstream.address])
        assert "secrets-delivered" in out
        assert "allowed unreachable" in out
        assert "store unreachable" in out
        assert got == b"from-the-task\n"
        runner.assert_no_residue()

    def test_nothing_blocked(self, runner: NetRunner, upstream: Upstream) -> None:
        """An empty ``blocked`` blocks nothing: the store is reached (what the default
        rule prevents)."""
        out, _, _ = self._launch(runner, upstream, blocked=[])
        assert "allowed reached" in out
        assert "store reached" in out
        runner.assert_no_residue()

    def test_addresses_run_out(self, runner: NetRunner) -> None:
        """A /30 has one address for a task: a second task at once is refused, saying so
        in one line, and nothing of either is left."""
        subnet = ipaddress.IPv4Network(runner.subnet)
        runner.configure(mode="bridge", subnet=str(next(subnet.subnets(new_prefix=30))))
        app = {"cmd": "sleep 2", "cpus": 0.1, "mem": 32}
        result = runner.run_quiet({"apps": [{"id": "one", **app}, {"id": "two", **app}]})
        assert result.returncode == 1
        (line,) = result.stderr.decode().splitlines()
        assert "no address left in " in line
        assert "a larger [isolators.network] subnet gives more" in line
        runner.assert_no_residue()

    def _as_root_in_the_task(self, runner: NetRunner, argv: list[str]) -> str:
        """Run ``argv`` with every capability in the network namespace of a running
        bridge task (a task's own processes have no CAP_NET_RAW nor CAP_NET_ADMIN, which
        the task checks first): what a task that got root could do. Its output."""
        runner.configure(mode="bridge", blocked=[])
        raw = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"
        process = runner.start(
            {
                "cmd": f"python3 -c '{raw}' 2>/dev/null && echo task-has-raw-sockets; "
                "touch started; while [ ! -e go ]; do sleep 0.05; done"
            }
        )
        try:
            wait_for(runner.work / "started")
            (name,) = [n for n in ours(runner.runtime) if "ip netns" not in n]
            done = subprocess.run(
                ["nsenter", f"--net={NETNS_DIR / name}", "--", *argv],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        finally:
            (runner.work / "go").touch()
            out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        assert b"task-has-raw-sockets" not in out
        assert done.returncode == 0, done.stderr
        return done.stdout

    def test_root_in_a_task_cannot_send_to_the_hosts_loopback(self, runner: NetRunner) -> None:
        """The bridge lets the host's 127.0.0.1 be translated into it (route_localnet);
        a packet for 127.0.0.1 forged in a task's network, to the bridge's MAC address,
        must not reach the host's loopback (CVE-2020-8558's kind)."""
        received: list[bytes] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.settimeout(0.5)
            port = listener.getsockname()[1]
            out = self._as_root_in_the_task(runner, [sys.executable, "-c", FORGE, str(port)])
            assert "forged" in out
            with contextlib.suppress(TimeoutError):
                while True:
                    received.append(listener.recv(100))
        assert received == []
        runner.assert_no_residue()

    def test_root_in_a_task_cannot_take_another_address(
        self, runner: NetRunner, upstream: Upstream
    ) -> None:
        """An address added to a task's eth0 reaches nothing: only a task's own address
        passes the host."""
        subnet = ipaddress.IPv4Network(runner.subnet)
        other = subnet.network_address + 200
        probe = (
            "import socket, subprocess, sys\n"
            "subprocess.run(['ip', 'addr', 'add', sys.argv[2] + '/24', 'dev', 'eth0'], check=True)\n"
            "for source in (None, sys.argv[2]):\n"
            "    s = socket.socket()\n"
            "    s.settimeout(2)\n"
            "    if source: s.bind((source, 0))\n"
            "    try:\n"
            "        s.connect((sys.argv[1], int(sys.argv[3]))); print('reached', source)\n"
            "    except OSError: print('unreachable', source)\n"
        )
        argv = [
            sys.executable,
            "-c",
            probe,
            upstream.address,
            str(other),
            str(upstream.allowed_port),
        ]
        out = self._as_root_in_the_task(runner, argv)
        assert out.splitlines() == ["reached None", f"unreachable {other}"]
        runner.assert_no_residue()


#: Run by a root task on the bridge (``python3 -c "$FORGE" PORT``): a UDP datagram for
#: 127.0.0.1:PORT, in an Ethernet frame for the bridge's MAC address, sent raw on eth0.
FORGE = """
import socket, struct, sys, time
port = int(sys.argv[1])
route = open("/proc/net/route").read().split("\\n")[1].split()
gateway = socket.inet_ntoa(struct.pack("<I", int(route[2], 16)))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nudge:  # the gateway's MAC, by ARP
    nudge.sendto(b"", (gateway, 9))
time.sleep(0.3)
arp = [l.split() for l in open("/proc/net/arp").read().splitlines()[1:]]
mac = bytes.fromhex(next(l[3] for l in arp if l[0] == gateway).replace(":", ""))
own = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
    probe.connect((gateway, 9))
    source = socket.inet_aton(probe.getsockname()[0])
payload = b"planted"
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     source, socket.inet_aton("127.0.0.1"))
words = sum(struct.unpack("!10H", header))
while words >> 16:
    words = (words & 0xFFFF) + (words >> 16)
header = header[:10] + struct.pack("!H", ~words & 0xFFFF) + header[12:]
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
    raw.bind(("eth0", 0))
    for _ in range(3):
        raw.send(mac + own + b"\\x08\\x00" + header + udp)
print("forged")
"""


#: A pod's server (``python3 -c "$POD_SERVE" ADDRESS COUNT``): says which namespace and
#: address it has, then answers COUNT connections on its port 8080 and ends.
POD_SERVE = """
import os, socket, sys
print("server netns", os.readlink("/proc/self/ns/net"), flush=True)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 8080))
server.listen(4)
open("serving", "w").close()
for _ in range(int(sys.argv[2])):
    connection, _ = server.accept()
    connection.sendall(b"pod-server\\n")
    connection.close()
print("server done", flush=True)
"""

#: A pod's client (``python3 -c "$POD_CLIENT" HOST_PORT``): reaches its pod's server on
#: 127.0.0.1:8080, then tries the host's server on HOST_PORT.
POD_CLIENT = """
import os, socket, sys, time
print("client netns", os.readlink("/proc/self/ns/net"), flush=True)
deadline = time.monotonic() + 30
while True:
    try:
        with socket.create_connection(("127.0.0.1", 8080), timeout=5) as peer:
            print("client got", peer.recv(100).decode().strip(), flush=True)
        break
    except OSError:
        if time.monotonic() > deadline:
            print("client peer-unreachable", flush=True)
            break
        time.sleep(0.1)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    print("client host-reached", flush=True)
except OSError as error:
    print("client host-unreachable", type(error).__name__, flush=True)
"""


def pod_spec(
    value: str,
    host_server: int,
    *,
    serve_on: str = "127.0.0.1",
    connections: int = 1,
    bridge_port: int | None = None,
) -> dict[str, Any]:
    """A pod of a server and a client that talk over their loopback; the server checks
    its secret first. On a bridge (``bridge_port``), the server's port 8080 is mapped to
    that host port."""
    server: dict[str, Any] = {
        "name": "server",
        "resources": {"cpus": 0.1, "mem": 64},
        "exec": {
            "command": {
                "shell": f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha(value)}; '
                "echo server secrets-delivered; ip -4 -o addr show eth0 2>/dev/null | "
                "awk '{print \"server address\", $4}'; "
                f'exec python3 -c "$POD_SERVE" {serve_on} {connections}'
            }
        },
    }
    spec: dict[str, Any] = {
        "id": "/test/pod",
        "environment": {"DB": {"secret": "db"}, "POD_SERVE": POD_SERVE, "POD_CLIENT": POD_CLIENT},
        "secrets": {"db": {"source": "/myapp/db@password"}},
        "containers": [
            server,
            {
                "name": "client",
                "resources": {"cpus": 0.1, "mem": 64},
                "exec": {
                    "command": {
                        "shell": "ip -4 -o addr show eth0 2>/dev/null | "
                        "awk '{print \"client address\", $4}'; "
                        f'exec python3 -c "$POD_CLIENT" {host_server}'
                    }
                },
            },
        ],
    }
    if bridge_port is not None:
        spec["networks"] = [{"mode": "container/bridge"}]
        server["endpoints"] = [
            {"name": "web", "containerPort": 8080, "hostPort": bridge_port, "protocol": ["tcp"]}
        ]
    return spec


def said(out: str, what: str) -> set[str]:
    """The values a pod's containers printed after ``what`` (``server netns``…)."""
    return {line.split(" ", 2)[2] for line in out.splitlines() if line.startswith(what + " ")}


class TestPods:
    """A pod's containers share one network namespace, as the nested containers of Mesos'
    default executor share the executor container's; pods do not share one."""

    def test_containers_share_the_pods_namespace(
        self, runner: NetRunner, server: HostServer
    ) -> None:
        """Mode none: the client reaches the server on their shared loopback, nothing of
        the host's, and the secret arrives."""
        value = canary()
        runner.store.put("/myapp/db", {"password": value})
        result = runner.run(pod_spec(value, server.port))
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "server secrets-delivered" in out
        assert "client got pod-server" in out
        assert "client host-unreachable ConnectionRefusedError" in out
        namespaces = said(out, "server netns") | said(out, "client netns")
        assert len(namespaces) == 1
        assert host_namespace() not in namespaces
        assert server.accepted == 0
        assert b"of its pod removed, as it was the last to have it" in result.stderr
        runner.assert_no_residue()

    def test_a_pod_on_the_bridge(self, runner: NetRunner, server: HostServer) -> None:
        """The pod's networks ask for the bridge: one address for both containers, the
        server reached by its sibling on the loopback and by the host through the pod's
        port mapping (the executor's NetworkInfo's)."""
        value = canary()
        runner.store.put("/myapp/db", {"password": value})
        port = free_host_port()
        spec = pod_spec(value, server.port, serve_on="0.0.0.0", connections=2, bridge_port=port)
        out, _, got = reach_through(runner, spec, port, runner.work / "server" / "serving")
        assert got == b"pod-server\n"
        text = out.decode()
        assert "client got pod-server" in text
        addresses = said(text, "server address") | said(text, "client address")
        assert len(addresses) == 1
        assert ipaddress.IPv4Interface(addresses.pop()).network == ipaddress.IPv4Network(
            runner.subnet
        )
        assert len(said(text, "server netns") | said(text, "client netns")) == 1
        runner.assert_no_residue()

    def test_two_pods_apart(self, runner: NetRunner) -> None:
        """Two instances of a pod at once: a namespace each, each shared by its own
        containers only."""
        spec = {
            "id": "/test/pod",
            "containers": [
                {
                    "name": name,
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {
                        "command": {
                            "shell": "readlink /proc/self/ns/net > up.new && mv up.new up; "
                            "while [ ! -e go ]; do sleep 0.05; done"
                        }
                    },
                }
                for name in ("a", "b")
            ],
        }
        works = [runner.tmp / "one", runner.tmp / "two"]
        processes = []
        for work in works:
            command = runner.command(spec)
            command[command.index("--work-dir") + 1] = str(work)
            processes.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
        try:
            wait_until(
                lambda: (
                    all((w / c / "up").exists() for w in works for c in "ab")
                    or any(p.poll() is not None for p in processes)
                ),
                timeout=60,
            )
            seen = [{(w / c / "up").read_text() for c in "ab"} for w in works]
            assert [len(s) for s in seen] == [1, 1], seen
            assert seen[0] != seen[1]
            assert len([n for n in ours(runner.runtime) if "ip netns" not in n]) == 2
        finally:
            for work in works:
                for container in "ab":
                    (work / container).mkdir(parents=True, exist_ok=True)
                    (work / container / "go").touch()
            results = [p.communicate(timeout=60) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], [e.decode() for _, e in results]
        runner.assert_no_residue()

    def test_a_container_that_cannot_start(self, runner: NetRunner) -> None:
        """The second container fails to launch: the first is stopped, and the pod's
        namespace goes with the last of them."""
        spec = {
            "id": "/test/pod",
            "containers": [
                {
                    "name": "a",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"shell": "exec sleep 60"}},
                },
                {
                    "name": "b",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"argv": ["/no/such/program"]}},
                },
            ],
        }
        result = runner.run(spec, "--grace-period", "0.5")
        assert result.returncode != 0
        assert b"cannot start the task" in result.stderr
        runner.assert_no_residue()

    @pytest.mark.parametrize("mode", ["none", "bridge"])
    def test_front_end_killed_then_recovered(self, runner: NetRunner, mode: str) -> None:
        """run dies by SIGKILL with a pod running: the pod's namespace (on a bridge, its
        veth, lease and rules) stays until the next front end's recover, which removes it
        as no container of the pod is left."""
        spec = {
            "id": "/test/pod",
            "containers": [
                {
                    "name": name,
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"shell": "touch started; exec sleep 60"}},
                }
                for name in ("a", "b")
            ],
        }
        if mode == "bridge":
            spec["networks"] = [{"mode": "container/bridge"}]
        process = runner.start(spec)
        wait_for(runner.work / "a" / "started")
        wait_for(runner.work / "b" / "started")
        process.kill()
        process.communicate()
        assert len(ours(runner.runtime)) == 2  # one namespace, in /run/netns and ip netns
        if mode == "bridge":
            left = bridge_residue()
            assert len([line for line in left if line.startswith("link msv")]) == 1, left
        result = runner.run({"cmd": "true"})
        assert result.returncode == 0, result.stderr.decode()
        assert b"cleaning up orphaned container" in result.stderr
        runner.assert_no_residue()


class TestNetworkLabel:
    """``mesos-secrets/network`` asks for a mode where the spec names no network; the
    host's network only if the configuration allows it, as it lets a task reach the
    store."""

    def _probe(self, runner: NetRunner, server: HostServer, label: str) -> tuple[int, str, str]:
        result = run_probe(runner, server, labels={"mesos-secrets/network": label}, quiet=True)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def test_host_refused_by_default(self, runner: NetRunner, server: HostServer) -> None:
        code, out, err = self._probe(runner, server, "host")
        assert code == 1
        assert err.splitlines() == [
            "mesos-secrets: error: the task asks for the host's network (label "
            "mesos-secrets/network), which would let it reach the secret store: network "
            "mode 'none' is configured, and [isolators.network] host_allowed is false"
        ]
        assert out == ""
        runner.assert_no_residue()

    def test_host_when_allowed(self, runner: NetRunner, server: HostServer) -> None:
        runner.configure(mode="none", host_allowed=True)
        code, out, err = self._probe(runner, server, "host")
        assert code == 0, err
        assert "host-reached" in out
        assert f"netns {host_namespace()}" in out
        runner.assert_no_residue()

    def test_none_where_host_is_configured(self, runner: NetRunner, server: HostServer) -> None:
        runner.configure(mode="host")
        code, out, err = self._probe(runner, server, "none")
        assert code == 0, err
        assert "host-unreachable ConnectionRefusedError" in out
        assert "interfaces lo\n" in out
        assert server.accepted == 0
        runner.assert_no_residue()

    def test_a_label_against_the_networks(self, runner: NetRunner) -> None:
        spec = {
            "cmd": "true",
            "networks": [{"mode": "container/bridge"}],
            "labels": {"mesos-secrets/network": "none"},
        }
        result = runner.run_quiet(spec)
        assert result.returncode == 1
        assert result.stderr.decode().splitlines() == [
            "mesos-secrets: error: the task's label mesos-secrets/network says 'none', and "
            "its container.network_infos ask for 'bridge'"
        ]
        runner.assert_no_residue()

    def test_a_pods_label(self, runner: NetRunner, server: HostServer) -> None:
        """On a pod, the label is the pod's (its containers share its network)."""
        runner.configure(mode="host")
        value = canary()
        runner.store.put("/myapp/db", {"password": value})
        spec = pod_spec(value, server.port)
        spec["labels"] = {"mesos-secrets/network": "none"}
        result = runner.run(spec)
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "client got pod-server" in out
        assert "client host-unreachable ConnectionRefusedError" in out
        assert host_namespace() not in said(out, "client netns")
        runner.assert_no_residue()
