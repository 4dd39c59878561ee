"""A network of the suite's own, and the faults it can inject into it.

:class:`IsolatedNetwork` is a network namespace joined to the host by a veth pair, with a
/30 from ``10.254.0.0/16`` that clashes with none of the host's routes or addresses. Only
the veth's two ends carry that range: the namespace has no default route and the host
routes the /30 through the veth alone, with an ``unreachable`` route under it so that,
should the veth vanish, nothing meant for the namespace goes out of the host's own
interfaces. Faults, since this kernel has no netem:

- packet loss: an nftables table of the instance's own whose ``numgen random`` rules drop
  a share of what crosses the host's end of the veth, in both directions;
- a partition: the namespace's end of the veth taken down (pyroute2), as if its cable
  were pulled. The host's end keeps its address and route but loses its carrier, so what
  the host sends is dropped silently and connections time out, as across a real
  partition (taking the host's end down would remove its route instead, and every
  connect would fail at once on the ``unreachable`` route);
- latency: :class:`DelayRelay`, a TCP relay on the host's loopback.

:class:`InNamespaceBao` is the tests' OpenBao dev server (:class:`tests.bao.Bao`) started
inside the namespace, listening on its address, so that the host reaches it over the veth.

The namespace needs no mount: it belongs to a small holder process (``unshare --net``)
and is named by ``/proc/PID/ns/net``; processes join it with ``nsenter``. A named netns
(``ip netns add``) would bind-mount a file under ``/run/netns``, which the host's other
tests would see as a new mount in its table. The holder reads its stdin, which only this
process holds open: should the harness die without tearing down, the holder ends with it
and, once what runs inside has gone, the kernel removes the namespace and the veth with
it (the nftables table and the guard route stay until the next ``nft delete table``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import hvac
import requests
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tests.bao import Bao
from tests.hostile import Closing, SlowProxy

__all__ = ["DelayRelay", "InNamespaceBao", "IsolatedNetwork", "TeardownError"]

#: Where the /30s come from: private (RFC 1918), and rarely used by anything else.
TEST_RANGE = ipaddress.IPv4Network("10.254.0.0/16")
#: The metric of the ``unreachable`` route under the veth's (the veth's own has 0).
GUARD_METRIC = 4242
#: How long a process in the namespace has after SIGTERM, before SIGKILL.
STOP_GRACE_S = 5.0

_NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
_UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
_NFT = shutil.which("nft") or "/usr/sbin/nft"


class TeardownError(RuntimeError):
    """Some of the network could not be removed; every step was still tried."""


def _overlaps_host(candidate: ipaddress.IPv4Network, ipr: IPRoute) -> bool:
    """Whether ``candidate`` clashes with one of the host's IPv4 routes (any table, the
    default routes aside) or addresses."""
    for route in ipr.get_routes(family=socket.AF_INET):
        length = route["dst_len"]
        if length == 0:
            continue
        destination = route.get("dst") or route.get("RTA_DST")
        if destination and candidate.overlaps(
            ipaddress.IPv4Network(f"{destination}/{length}", strict=False)
        ):
            return True
    for address in ipr.get_addr(family=socket.AF_INET):
        local = address.get("address") or address.get("IFA_ADDRESS")
        if local and candidate.overlaps(
            ipaddress.IPv4Network(f"{local}/{address['prefixlen']}", strict=False)
        ):
            return True
    return False


def _pick_network(ipr: IPRoute) -> ipaddress.IPv4Network:
    """A random /30 of :data:`TEST_RANGE` that the host does not use."""
    blocks = TEST_RANGE.num_addresses // 4
    for _ in range(200):
        base = TEST_RANGE.network_address + 4 * secrets.randbelow(blocks)
        candidate = ipaddress.IPv4Network(f"{base}/30")
        if not _overlaps_host(candidate, ipr):
            return candidate
    raise RuntimeError(f"no free /30 in {TEST_RANGE}: the host routes all of it")


class IsolatedNetwork:
    """A network namespace (pyroute2) joined to the host by a veth pair, a /30 from a
    private test range that does not clash with the host's routes (see the module).

    A context manager: entering creates everything, leaving removes everything, even
    when the block raised; :meth:`close` may be called any number of times.
    """

    #: The host's end of the veth, and the namespace's.
    host_address: str
    address: str
    #: The /30 both are in.
    network: ipaddress.IPv4Network

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        #: The veth's host end (``msr`` + 8 hex digits); the namespace's end is ``eth0``.
        self.host_interface = f"msr{tag}"
        self.peer_interface = "eth0"
        #: The nftables table of this instance (family ``inet``), present while loss > 0.
        self.table = f"msr_{tag}"
        self._holder: subprocess.Popen[bytes] | None = None
        self._namespace = ""  # /proc/PID/ns/net of the holder
        self._namespace_id = ""  # what that link reads, e.g. "net:[4026532177]"
        self._processes: list[subprocess.Popen[Any]] = []
        self._callbacks: list[Callable[[], object]] = []
        self._guard = False
        self._loss = 0
        self._closed = False

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Create the namespace, the veth and the addresses; on failure undo what was
        done, then raise."""
        if self._closed or self._holder is not None:
            raise RuntimeError("a network is started once")
        try:
            holder = self._start_holder()
            with IPRoute() as ipr:
                self._claim_network(ipr)
                hosts = list(self.network.hosts())
                self.host_address, self.address = str(hosts[0]), str(hosts[1])
                ipr.link(
                    "add",
                    ifname=self.host_interface,
                    kind="veth",
                    peer={"ifname": self.peer_interface, "net_ns_pid": holder},
                )
                (index,) = ipr.link_lookup(ifname=self.host_interface)
                ipr.addr(
                    "add", index=index, address=self.host_address, prefixlen=self.network.prefixlen
                )
                ipr.link("set", index=index, state="up")
            with self._inside() as ns:
                (loopback,) = ns.link_lookup(ifname="lo")
                ns.link("set", index=loopback, state="up")
                (peer,) = ns.link_lookup(ifname=self.peer_interface)
                ns.addr("add", index=peer, address=self.address, prefixlen=self.network.prefixlen)
                ns.link("set", index=peer, state="up")
        except BaseException:
            with contextlib.suppress(TeardownError):
                self.close()
            raise
        return self

    def _start_holder(self) -> int:
        """Start the namespace's holder; its pid."""
        # `unshare` has made the namespace by the time the shell prints; the shell then
        # becomes `cat`, which ends when this process closes its stdin, or dies.
        self._holder = subprocess.Popen(
            [_UNSHARE, "--net", "--", "sh", "-c", "echo ready; exec cat >/dev/null"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline() != b"ready\n":
            raise RuntimeError("unshare --net did not start: is util-linux there, and are we root?")
        self._holder.stdout.close()
        self._namespace = f"/proc/{self._holder.pid}/ns/net"
        self._namespace_id = os.readlink(self._namespace)
        if self._namespace_id == os.readlink("/proc/self/ns/net"):
            raise RuntimeError("unshare --net left the holder in the host's namespace")
        return self._holder.pid

    def _claim_network(self, ipr: IPRoute) -> None:
        """Pick a /30 and add its guard route, which another instance that picked the same
        /30 at the same time cannot add again (the kernel says EEXIST): pick anew then."""
        for _ in range(10):
            self.network = _pick_network(ipr)
            try:
                self._guard_route(ipr, "add")
            except NetlinkError as error:
                if error.code != errno.EEXIST:
                    raise
                continue
            self._guard = True
            return
        raise RuntimeError("no /30 could be claimed: every pick was taken meanwhile")

    def _inside(self) -> IPRoute:
        """A netlink socket in the namespace (pyroute2 opens it by path: no mount)."""
        return IPRoute(netns=self._namespace, flags=0)

    def close(self) -> None:
        """Remove everything, in order: what :meth:`callback` was given (last first), the
        processes still in the namespace, the nftables table, the veth, the namespace's
        holder, the guard route. Every step is tried; if some
        failed, :class:`TeardownError` says which once all were tried."""
        if self._closed:
            return
        self._closed = True
        failures: list[str] = []
        for step in (
            self._run_callbacks,
            self._stop_processes,
            self._drop_table,
            self._delete_veth,
            self._stop_holder,
            self._delete_guard,
        ):
            try:
                step()
            except Exception as error:  # noqa: BLE001 (the next steps must still run)
                failures.append(f"{step.__name__}: {error!r}")
        if failures:
            raise TeardownError("; ".join(failures))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def callback(self, function: Callable[[], object]) -> None:
        """Call ``function`` first thing when closing (e.g. a server's own stop)."""
        self._callbacks.append(function)

    def _run_callbacks(self) -> None:
        failures = []
        while self._callbacks:
            function = self._callbacks.pop()
            try:
                function()
            except Exception as error:  # noqa: BLE001 (the others must still run)
                failures.append(repr(error))
        if failures:
            raise RuntimeError("; ".join(failures))

    def pids(self) -> list[int]:
        """Processes in the namespace now, the holder included."""
        if not self._namespace_id:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/ns/net") == self._namespace_id:
                        found.append(int(entry))
        return found

    def _stop_processes(self) -> None:
        holder = self._holder.pid if self._holder else None

        def inside() -> list[int]:
            return [pid for pid in self.pids() if pid != holder]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in inside():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_GRACE_S
            while inside() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not inside():
                break
        for process in self._processes:  # reap ours (a killed child stays a zombie)
            process.wait(timeout=STOP_GRACE_S)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()

    def _drop_table(self) -> None:
        if self._loss:
            self._nft(f"delete table inet {self.table}\n")
            self._loss = 0

    def _delete_veth(self) -> None:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.host_interface):
                with contextlib.suppress(NetlinkError):  # gone with the namespace already
                    ipr.link("del", index=index)

    def _stop_holder(self) -> None:
        if self._holder is None:
            return
        holder, self._holder = self._holder, None
        if holder.stdin is not None:
            holder.stdin.close()  # `cat` reads end-of-file and exits
        if holder.stdout is not None:
            holder.stdout.close()
        try:
            holder.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()

    def _guard_route(self, ipr: IPRoute, command: str) -> None:
        """Add or delete the ``unreachable`` route under the network's /30."""
        ipr.route(
            command,
            dst=str(self.network.network_address),
            dst_len=self.network.prefixlen,
            type="unreachable",
            priority=GUARD_METRIC,
        )

    def _delete_guard(self) -> None:
        if not self._guard:
            return
        with IPRoute() as ipr:
            try:
                self._guard_route(ipr, "del")
            except NetlinkError as error:
                if error.code != errno.ESRCH:
                    raise
        self._guard = False

    # -- what runs inside ---------------------------------------------------------------

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace (``nsenter --net``, which then execs it:
        the process's pid is the program's). ``kwargs`` go to :class:`subprocess.Popen`.
        It is stopped, at the latest, when the network is closed."""
        if self._closed or self._holder is None:
            raise RuntimeError("the network is not up")
        process: subprocess.Popen[Any] = subprocess.Popen(
            [_NSENTER, f"--net={self._namespace}", "--", *argv], **kwargs
        )
        self._processes.append(process)
        return process

    # -- faults -------------------------------------------------------------------------

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets that cross the host's end of the veth, in
        each direction (so a request and its answer both get through with probability
        ``(1 - percent/100)**2`` each packet); ``loss(0)`` removes the rules."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss is a percentage, not {percent}")
        if percent == 0:
            self._drop_table()
            return
        # nft bounds the comparison by the modulus: `< 100` does not parse.
        share = "" if percent == 100 else f"numgen random mod 100 < {percent} "
        rule = f"{share}counter drop"
        ruleset = (
            # Add, delete and re-create in one transaction: the old rules are replaced
            # atomically, whether or not there were any.
            f"add table inet {self.table}\n"
            f"delete table inet {self.table}\n"
            f"table inet {self.table} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority filter - 10; policy accept;\n"
            f'    iifname "{self.host_interface}" {rule}\n'
            f"  }}\n"
            f"  chain output {{\n"
            f"    type filter hook output priority filter - 10; policy accept;\n"
            f'    oifname "{self.host_interface}" {rule}\n'
            f"  }}\n"
            f"}}\n"
        )
        self._nft(ruleset)
        self._loss = percent

    def dropped(self) -> int:
        """Packets the loss rules have dropped since the last :meth:`loss` (0 without)."""
        if not self._loss:
            return 0
        listing = subprocess.run(
            [_NFT, "list", "table", "inet", self.table],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sum(
            int(line.split("packets", 1)[1].split()[0])
            for line in listing.splitlines()
            if "counter packets" in line
        )

    def _nft(self, ruleset: str) -> None:
        result = subprocess.run(
            [_NFT, "-f", "-"], input=ruleset, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft failed: {result.stderr.strip()}")

    def down(self) -> None:
        """Partition: the namespace's end of the veth down (see the module for why that
        end)."""
        self._set_peer("down")

    def up(self) -> None:
        """End the partition."""
        self._set_peer("up")

    def _set_peer(self, state: str) -> None:
        with self._inside() as ns:
            (peer,) = ns.link_lookup(ifname=self.peer_interface)
            ns.link("set", index=peer, state=state)


class InNamespaceBao(Bao):
    """An OpenBao dev server (:class:`tests.bao.Bao`, plain HTTP) inside ``network``,
    listening on its address at a random port: ``address`` is ``http://ns_addr:port``.

    Without ``directory``, its log and home go to a temporary directory removed by
    :meth:`stop`, which the network's teardown calls too (stopping twice is harmless).
    """

    def __init__(self, network: IsolatedNetwork, directory: Path | None = None) -> None:
        self._temporary = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="msr-bao-"))
        try:
            super().__init__(directory, host=network.address, popen=network.popen)
        except BaseException:
            self._remove_directory()
            raise
        network.callback(self.stop)

    def client(self, token: str | None = None, *, timeout: float = 30.0) -> hvac.Client:
        """An hvac client with a ``timeout`` (seconds) on each request, and no proxy
        taken from the environment: the request must cross the veth, nothing else."""
        session = requests.Session()
        session.trust_env = False
        return hvac.Client(
            url=self.address, token=token or self.root_token, timeout=timeout, session=session
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temporary directory."""
        super().stop()
        self._remove_directory()

    def _remove_directory(self) -> None:
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class DelayRelay(Closing):
    """Latency: a TCP relay on the host's ``127.0.0.1`` (random port) to ``target``
    (``host:port`` or a URL), which holds each answer back ``delay`` seconds.

    Answers only: what the client sends goes at once; the first chunk of each answer
    waits ``delay``, and the rest of that answer follows without waiting, as a stream
    would across a slow link. So each request/answer exchange takes at least ``delay``
    more. It is :class:`tests.hostile.SlowProxy` (which the resolvers' deadline tests
    use), given the address of the namespace's server; ``address`` is ``http://`` so
    that an hvac client can be pointed at it.
    """

    def __init__(self, target: str, delay: float) -> None:
        self.delay = delay
        self._proxy = SlowProxy(target, delay=delay)
        self.address = self._proxy.address()

    @property
    def delayed(self) -> int:
        """How many answers were held back so far."""
        return self._proxy.slowed

    def close(self) -> None:
        """Stop listening and close every relayed connection."""
        self._proxy.close()
