"""The bridge ``bridge``-mode tasks are joined to, and the addresses they get on it.

One bridge per private range (``[isolators.network] subnet``) on a host, shared by every
front end configured with that range: ``msbr-<tag>``, ``tag`` standing for the range. It
has the range's first address and is the tasks' default route; its nftables table
(:mod:`isolators.firewall`) is made with it. Each task gets a veth pair: ``eth0`` in its
network namespace, with an address of the range, and ``msv<id>`` on the bridge as an
*isolated* port (the kernel forwards nothing from one isolated port to another: tasks on
the bridge reach each other only through the host, by their host ports, under the
rules). The bridge goes, with its table, when its last task does.

Addresses are leased in a directory of the host's (:data:`STATE_DIR`), not of a runtime
directory, since the bridge is the host's: ``<STATE_DIR>/<bridge>/<address>``, a file
naming the task's network namespace, made with ``O_EXCL``. A lease whose namespace is
gone is stale (a namespace is made before its lease, and outlives it) and is taken
back. Every change to a bridge, its leases and its table is made under one lock, an
``flock`` of :data:`STATE_DIR`, which is never removed: it is held for milliseconds.

Everything is done through netlink (pyroute2), in threads: what is done in the task's
namespace, by a thread that joins it (``setns``) and ends; nothing forks but ``nft``.

IPv4 forwarding must be on for tasks to reach past the host. If it is off when a bridge
is made, it is turned on and a marker says so; when the last of our bridges goes, it is
turned off again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import attrs

from mesos_secrets import linux

from . import firewall

__all__ = [
    "BRIDGE_PREFIX",
    "STATE_DIR",
    "VETH_PREFIX",
    "AddressesExhausted",
    "Attachment",
    "Bridge",
    "bridge_name",
    "bridges",
    "netlink_errors",
    "veth_name",
]

log = logging.getLogger(__name__)

#: Where bridges' leases live (the host's; on tmpfs, gone with the bridges at reboot).
STATE_DIR = Path("/run/mesos-secrets-network")
BRIDGE_PREFIX = "msbr-"
VETH_PREFIX = "msv"
#: The marker: IPv4 forwarding was off before our first bridge.
FORWARDING_MARKER = "ip_forward-was-off"
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: Where named network namespaces are (``ip netns``'s directory).
_NETNS_DIR = Path("/run/netns")


class AddressesExhausted(OSError):
    """Every address of the range is leased."""


@attrs.frozen
class Attachment:
    """A task's place on a bridge."""

    bridge: str
    address: ipaddress.IPv4Address
    veth: str


def bridge_name(subnet: ipaddress.IPv4Network) -> str:
    """``msbr-`` and 8 hex digits standing for ``subnet`` (at most 15 characters)."""
    return BRIDGE_PREFIX + hashlib.sha256(str(subnet).encode()).hexdigest()[:8]


def veth_name(namespace: str) -> str:
    """The host side of the veth of the task whose network namespace is ``namespace``:
    ``msv`` and 12 hex digits standing for it."""
    return VETH_PREFIX + hashlib.sha256(namespace.encode()).hexdigest()[:12]


def bridges() -> list[str]:
    """Our bridges on this host (by their leases' directories)."""
    try:
        return sorted(n for n in os.listdir(STATE_DIR) if n.startswith(BRIDGE_PREFIX))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and the lock with it


def _in_namespace(namespace: Path, work: Callable[[], None]) -> None:
    """Run ``work`` in a thread that has joined the network namespace at ``namespace``."""

    def joined() -> None:
        fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
        work()

    linux.in_own_thread(joined)


@contextlib.contextmanager
def netlink_errors() -> Iterator[None]:
    """pyroute2's NetlinkError as the OSError it stands for."""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    try:
        yield
    except NetlinkError as error:
        raise OSError(error.code, f"netlink: {os.strerror(error.code)}") from None


def _sysctl(path: str, value: str) -> None:
    """Write ``/proc/sys/<path>`` (of the calling thread's network namespace)."""
    with open(f"/proc/sys/{path}", "w", encoding="ascii") as out:
        out.write(value)


class Bridge:
    """The bridge of a range: tasks join it (:meth:`attach`) and leave (:meth:`detach`)."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.name = bridge_name(subnet)
        self.table = firewall.table_name(self.name)
        #: The bridge's own address: the range's first, the tasks' gateway.
        self.gateway = next(subnet.hosts())
        self.leases = STATE_DIR / self.name

    def attach(
        self,
        namespace: Path,
        rejects: Iterable[firewall.Reject],
        ports: Iterable[firewall.PortRule],
    ) -> Attachment:
        """Join the namespace at ``namespace`` (its loopback up already) to the bridge:
        an address, a veth pair, a default route, its rules. All or nothing: a failure
        leaves no part of it (the bridge itself goes if no task has it)."""
        veth = veth_name(namespace.name)
        with _locked():
            self._ensure()
            address = self._lease(namespace.name)
            try:
                self._plug(namespace, veth, address)
                firewall.add_task(self.table, address, rejects, ports)
            except BaseException:
                self._unplug(veth, address)
                self._release(address)
                self._remove_if_unused()
                raise
        log.info("network namespace %s: %s on bridge %s", namespace.name, address, self.name)
        return Attachment(self.name, address, veth)

    def detach(self, namespace: str, address: ipaddress.IPv4Address | None = None) -> None:
        """Take the task whose namespace is named ``namespace`` off the bridge: its rules,
        its veth, its lease; the bridge too when it was the last. Idempotent."""
        with _locked():
            if address is None or self._leased().get(address) != namespace:
                # the lease, as it is now: one seen stale may have been taken back since
                # by another front end and leased again (to a live task)
                address = self._leased_by(namespace)
            if address is not None:
                self._unplug(veth_name(namespace), address)
                self._release(address)
            else:
                self._unplug(veth_name(namespace), None)
            self._remove_if_unused()

    def stale(self) -> list[tuple[str, ipaddress.IPv4Address]]:
        """(namespace, address) of leases whose namespace is gone."""
        found = []
        for address, namespace in self._leased().items():
            if not os.path.lexists(_NETNS_DIR / namespace):
                found.append((namespace, address))
        return found

    def collect(self) -> None:
        """Take back stale leases (their rules and veths with them), and remove the bridge
        if no task has it; what ``recover`` does for a range."""
        for namespace, address in self.stale():
            log.warning(
                "bridge %s: taking back %s, whose namespace %s is gone",
                self.name, address, namespace,
            )  # fmt: skip
            self.detach(namespace, address)
        with _locked():
            self._remove_if_unused()

    # Under the lock

    def _ensure(self) -> None:
        """The bridge, up, with its address and table (made if missing)."""
        from pyroute2 import IPRoute  # noqa: PLC0415

        self.leases.mkdir(mode=0o700, exist_ok=True)
        with netlink_errors(), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.name)
            if not found:
                self._forwarding_on()
                ipr.link("add", ifname=self.name, kind="bridge")
                found = ipr.link_lookup(ifname=self.name)
                log.info("bridge %s made for %s", self.name, self.subnet)
            (index,) = found
            own = {
                a.get_attr("IFA_ADDRESS")
                for a in ipr.get_addr(index=index, family=2)  # AF_INET
            }
            if str(self.gateway) not in own:
                ipr.addr(
                    "add", index=index, address=str(self.gateway),
                    prefixlen=self.subnet.prefixlen,
                )  # fmt: skip
            # no IPv6 link-local address for tasks to reach the host by; 127.0.0.1
            # may be translated into the bridge (its host ports, from the host)
            _sysctl(f"net/ipv6/conf/{self.name}/disable_ipv6", "1")
            _sysctl(f"net/ipv4/conf/{self.name}/route_localnet", "1")
            ipr.link("set", index=index, state="up")
        if not firewall.table_exists(self.table):
            firewall.nft(firewall.bridge_commands(self.table, self.name, self.subnet))

    def _leased(self) -> dict[ipaddress.IPv4Address, str]:
        found = {}
        try:
            names = os.listdir(self.leases)
        except FileNotFoundError:
            return {}
        for name in names:
            try:
                address = ipaddress.IPv4Address(name)
                found[address] = (self.leases / name).read_text(encoding="utf-8").strip()
            except (ValueError, OSError):
                continue
        return found

    def _leased_by(self, namespace: str) -> ipaddress.IPv4Address | None:
        for address, holder in self._leased().items():
            if holder == namespace:
                return address
        return None

    def _lease(self, namespace: str) -> ipaddress.IPv4Address:
        taken = self._leased()
        for address in self.subnet.hosts():
            if address == self.gateway or address in taken:
                continue
            try:
                fd = os.open(
                    self.leases / str(address),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(namespace + "\n")
            return address
        # stale leases first, then a clear error
        stale = self.stale()
        if stale:
            for holder, address in stale:
                self._unplug(veth_name(holder), address)
                self._release(address)
            return self._lease(namespace)
        raise AddressesExhausted(
            errno.EADDRNOTAVAIL,
            f"no address left in {self.subnet} on bridge {self.name}: {len(taken)} tasks "
            "hold one each (a larger [isolators.network] subnet gives more)",
        )

    def _release(self, address: ipaddress.IPv4Address) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.leases / str(address)).unlink()

    def _plug(self, namespace: Path, veth: str, address: ipaddress.IPv4Address) -> None:
        with netlink_errors():
            self._plug_in(namespace, veth, address)

    def _plug_in(self, namespace: Path, veth: str, address: ipaddress.IPv4Address) -> None:
        from pyroute2 import IPRoute  # noqa: PLC0415

        with IPRoute() as ipr:
            (bridge,) = ipr.link_lookup(ifname=self.name)
            fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link(
                    "add", ifname=veth, kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": fd},
                )  # fmt: skip
            finally:
                os.close(fd)
            (index,) = ipr.link_lookup(ifname=veth)
            ipr.link("set", index=index, master=bridge)
            ipr.brport("set", index=index, isolated=1)
            _sysctl(f"net/ipv6/conf/{veth}/disable_ipv6", "1")
            ipr.link("set", index=index, state="up")

        def inside() -> None:
            _sysctl("net/ipv6/conf/eth0/disable_ipv6", "1")
            with IPRoute() as ipr:
                (eth0,) = ipr.link_lookup(ifname="eth0")
                ipr.addr("add", index=eth0, address=str(address), prefixlen=self.subnet.prefixlen)
                ipr.link("set", index=eth0, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=str(self.gateway))

        _in_namespace(namespace, inside)

    def _unplug(self, veth: str, address: ipaddress.IPv4Address | None) -> None:
        """Remove the task's rules and veth pair, whatever of them there is."""
        from pyroute2 import IPRoute  # noqa: PLC0415

        if address is not None:
            firewall.remove_task(self.table, address)
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=veth):
                with contextlib.suppress(Exception):  # gone with its namespace meanwhile
                    ipr.link("del", index=index)

    def _remove_if_unused(self) -> None:
        """Remove the bridge, its table and its leases' directory if no task has it."""
        from pyroute2 import IPRoute  # noqa: PLC0415

        if self._leased():
            return
        firewall.delete_table(self.table)
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.name):
                ipr.link("del", index=index)
                log.info("bridge %s removed: no task has it", self.name)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.leases):  # nothing but torn leases
                with contextlib.suppress(OSError):
                    (self.leases / name).unlink()
            self.leases.rmdir()
        self._forwarding_back()

    def _forwarding_on(self) -> None:
        if _IP_FORWARD.read_text().strip() == "0":
            (STATE_DIR / FORWARDING_MARKER).touch()
            _IP_FORWARD.write_text("1")
            log.info("IPv4 forwarding turned on for bridge %s", self.name)

    def _forwarding_back(self) -> None:
        marker = STATE_DIR / FORWARDING_MARKER
        if bridges() or not marker.exists():
            return
        _IP_FORWARD.write_text("0")
        marker.unlink()
        log.info("IPv4 forwarding turned off again: no bridge of ours is left")
