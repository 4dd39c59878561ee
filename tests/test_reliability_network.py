"""The reliability suite's network (:mod:`reliability.network`): OpenBao in a namespace of
our own, reached over a veth, and the faults put between them; then nothing left behind.

Every test tears its network down and checks, from the host, that no veth, nftables
table, route, process or namespace mount of it stays, on success and after an exception.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from reliability import network as network_module
from reliability.network import DelayRelay, InNamespaceBao, IsolatedNetwork

from .conftest import requires_root

pytestmark = requires_root

#: A request's deadline while a fault is on: the faults must show well within it.
TIMEOUT = 2.0


def _namespace_mounts() -> set[str]:
    """Mounts a named netns would add to the host's table (nsfs, or under /run/netns)."""
    found = set()
    with open("/proc/1/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            kind = fields[fields.index("-") + 1]
            if kind == "nsfs" or fields[4].startswith(("/run/netns", "/var/run/netns")):
                found.add(line)
    return found


def _output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _leftovers(net: IsolatedNetwork, mounts_before: set[str]) -> list[str]:
    """What of ``net`` the host still has."""
    found = []
    if net.host_interface in _output("ip", "-o", "link"):
        found.append(f"veth {net.host_interface}")
    if net.table in _output("nft", "list", "tables"):
        found.append(f"nft table {net.table}")
    if hasattr(net, "network") and str(net.network) in _output(
        "ip", "route", "show", "table", "all"
    ):
        found.append(f"route to {net.network}")
    if net.pids():
        found.append(f"processes {net.pids()}")
    found += [f"mount {line.strip()}" for line in _namespace_mounts() - mounts_before]
    return found


@pytest.fixture
def net() -> Iterator[IsolatedNetwork]:
    """A network of the test's own, checked for leftovers once closed."""
    mounts = _namespace_mounts()
    network = IsolatedNetwork()
    with network:
        yield network
    assert _leftovers(network, mounts) == []


@pytest.fixture
def bao(net: IsolatedNetwork) -> Iterator[InNamespaceBao]:
    server = InNamespaceBao(net)
    yield server
    server.stop()


@pytest.fixture
def client(bao: InNamespaceBao) -> Iterator[hvac.Client]:
    """A root client with a short deadline, a secret written through it."""
    vault = bao.client(timeout=TIMEOUT)
    vault.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "s3cr3t"})
    yield vault
    vault.adapter.close()


def _read(vault: hvac.Client) -> Any:
    response = vault.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    return response["data"]["data"]["password"]


def _eventually(attempt: Callable[[], Any], within: float) -> Any:
    """``attempt()``'s value, retried on network errors for up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return attempt()
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise


def _fails_in_time(vault: hvac.Client) -> float:
    """How long a read took to fail (it must fail)."""
    started = time.monotonic()
    with pytest.raises(requests.RequestException):
        _read(vault)
    return time.monotonic() - started


class TestIsolatedNetwork:
    def test_bao_is_reached_over_the_veth(
        self, net: IsolatedNetwork, bao: InNamespaceBao, client: hvac.Client
    ) -> None:
        """The server runs in the namespace, on its address; the host reads a secret from
        it through the veth, and only through the veth."""
        assert bao.address.startswith(f"http://{net.address}:")
        assert net.network.subnet_of(network_module.TEST_RANGE)
        assert os.readlink(f"/proc/{bao.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert bao.process.pid in net.pids()
        assert f"dev {net.host_interface}" in _output("ip", "route", "get", net.address)
        assert _read(client) == "s3cr3t"
        inside = net.popen(["ip", "-o", "-4", "route"], stdout=subprocess.PIPE, text=True)
        routes, _ = inside.communicate(timeout=10)
        assert "default" not in routes  # nothing routes beyond the veth
        assert str(net.network) in routes

    def test_full_loss_fails_a_read_and_no_loss_restores_it(
        self, net: IsolatedNetwork, client: hvac.Client
    ) -> None:
        """At 100 % every packet on the veth is dropped: a read fails at its deadline, not
        at once; loss(0) removes the rules and reads work again."""
        net.loss(100)
        assert net.table in _output("nft", "list", "tables")
        assert TIMEOUT - 0.5 < _fails_in_time(client) < TIMEOUT + 2
        assert net.dropped() > 0
        net.loss(0)
        assert net.table not in _output("nft", "list", "tables")
        assert _eventually(lambda: _read(client), within=5) == "s3cr3t"

    def test_partial_loss_drops_some_packets_yet_reads_get_through(
        self, net: IsolatedNetwork, client: hvac.Client
    ) -> None:
        """At 30 % packets are dropped, and reads still succeed, some after a retry."""
        net.loss(30)
        reads = 0
        while reads < 3 or (not net.dropped() and reads < 30):  # a read is a few packets
            assert _eventually(lambda: _read(client), within=10) == "s3cr3t"
            reads += 1
        assert net.dropped() > 0

    def test_loss_is_a_percentage(self, net: IsolatedNetwork) -> None:
        with pytest.raises(ValueError, match="percentage"):
            net.loss(101)

    def test_link_down_partitions_and_up_heals(
        self, net: IsolatedNetwork, client: hvac.Client
    ) -> None:
        """With the link down reads time out (silently dropped, as across a partition,
        never sent anywhere else); up again, they work."""
        assert _read(client) == "s3cr3t"
        net.down()
        assert TIMEOUT - 0.5 < _fails_in_time(client) < TIMEOUT + 2
        assert f"dev {net.host_interface}" in _output("ip", "route", "get", net.address)
        net.up()
        assert _eventually(lambda: _read(client), within=5) == "s3cr3t"

    def test_relay_adds_at_least_its_delay(self, bao: InNamespaceBao, client: hvac.Client) -> None:
        """Each answer through the relay comes ``delay`` later; straight, it does not."""
        started = time.monotonic()
        _read(client)
        straight = time.monotonic() - started
        with DelayRelay(bao.address, delay=0.5) as relay:
            assert relay.address.startswith("http://127.0.0.1:")
            slow = hvac.Client(url=relay.address, token=bao.root_token, timeout=5)
            for _ in range(2):  # a new connection, then a kept one
                started = time.monotonic()
                assert _read(slow) == "s3cr3t"
                assert time.monotonic() - started >= 0.5
            slow.adapter.close()
            assert relay.delayed == 2
        assert straight < 0.5


class TestAddresses:
    def test_two_networks_never_share_a_range(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Both picked the same /30 at once: the second to claim it picks another."""
        same = ipaddress.IPv4Network("10.254.200.0/30")
        picks: list[ipaddress.IPv4Network] = []
        real = network_module._pick_network

        def pick(ipr: Any) -> ipaddress.IPv4Network:
            picks.append(same if len(picks) < 2 else real(ipr))
            return picks[-1]

        monkeypatch.setattr(network_module, "_pick_network", pick)
        with IsolatedNetwork() as first, IsolatedNetwork() as second:
            assert first.network == same
            assert not second.network.overlaps(same)
            assert len(picks) == 3


class TestTeardown:
    def test_an_exception_in_the_block_leaves_nothing(self) -> None:
        """Raised with a server running, loss on and the link down: all of it goes."""
        mounts = _namespace_mounts()
        net = IsolatedNetwork()
        started: list[InNamespaceBao] = []

        def fail_inside() -> None:
            with net:
                started.append(InNamespaceBao(net))
                net.loss(50)
                net.down()
                assert len(net.pids()) == 2  # the holder and the server
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_inside()
        (bao,) = started
        assert _leftovers(net, mounts) == []
        assert bao.process.poll() is not None
        assert not Path(bao.directory).exists()  # its temporary directory
        net.close()  # again: nothing to do

    def test_a_failed_start_leaves_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """When setting up fails half way (here: no free /30), what was made is undone."""

        def refuse(_: object) -> None:
            raise RuntimeError("no free /30")

        monkeypatch.setattr(network_module, "_pick_network", refuse)
        mounts = _namespace_mounts()
        net = IsolatedNetwork()
        with pytest.raises(RuntimeError, match="no free"), net:
            pass
        assert _leftovers(net, mounts) == []

    def test_popen_after_close_is_refused(self) -> None:
        with IsolatedNetwork() as net:
            pass
        with pytest.raises(RuntimeError, match="not up"):
            net.popen(["true"])
