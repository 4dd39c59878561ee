"""``network``: the task's network, so that a task holding secrets cannot reach the store.

Once a task has its secrets it should not be able to talk to the secret store or the
node agent: a compromised task must not replay a leaked bootstrap token, or read other
tasks' secrets with the executor's credentials. Mesos leaves this to CNI plugins; here it
is an isolator of its own, through netlink (pyroute2), never by running ``ip``.

Modes, per task:

- ``host``: the host's network, as without this isolator;
- ``none``: a network namespace of the task's own, with its loopback up and nothing
  else: no interface leads out of it, so neither the store, nor the node agent, nor
  anything on the host's loopback can be reached;
- ``bridge``: a namespace of the task's own joined to a bridge of ours by a veth pair,
  with an address of ``subnet``, a default route, NAT out, its port mappings, and rules
  that reject what it may not reach (:mod:`isolators.bridge`, :mod:`isolators.firewall`).

A task's mode comes from its TaskInfo: ``container.network_infos`` naming Mesos' bridge
network (``mesos-bridge``: Marathon's ``container/bridge``, or a DockerInfo's ``BRIDGE``)
asks for ``bridge``; any other
named network (Marathon's ``container`` networks, CNI networks in Mesos) is refused, as
no CNI plugin is run here. Marathon writes no NetworkInfo for ``host``: in a TaskInfo,
which is all an executor gets, an app that says ``host`` cannot be told from one that
says nothing. Without a NetworkInfo, the task's label ``mesos-secrets/network`` (``host``,
``none``, ``bridge``) says which mode it wants, else it gets the configured ``mode``
(default ``host``). The host's network lets a task reach the store, which the other
modes are there to prevent: a task may ask for it when another mode is configured only if
``host_allowed`` is true.

A pod's containers (the tasks of a task group,
:class:`~mesos_secrets.isolator.ContainerGroup`) share one namespace, as the nested
containers of Mesos' default executor share the executor container's: their mode, port
mappings and label are the pod's (its executor's ContainerInfo and labels). The first
of them to be prepared makes it, named for the executor
(``mesos-secrets-<tag>-_pod-<hash>``); each container's journal names it; the last one's
``cleanup`` removes it, and ``recover`` one that no container's journal names.
Those steps are taken under an ``flock`` of :data:`POD_LOCK` in the runtime directory.

A ``none`` namespace is made in ``prepare``, named, as ``ip netns add`` names one: a file
``/run/netns/mesos-secrets-<tag>-<container id>`` that the namespace is bound to, where
``tag`` stands for the runtime directory, so that names never collide between
containers (a container id is claimed once in a runtime directory) nor between front
ends with other runtime directories, and ``recover`` removes only namespaces of its own
runtime directory. Its name is journalled in the container's runtime directory (never a
value) before it exists. The launchers are given its path (:attr:`LaunchInfo.network_namespace`):
the posix launcher's init joins it before it unshares the rest, runc is told of it in the
OCI spec. Secrets are resolved by the front end in ``prepare``, and the front end never
enters the namespace: its own traffic (and the node agent's) stays in the host's network.

It is made in a thread of its own that unshares its network namespace, has pyroute2 bind
it to its name (``netns.attach``, of ``/proc/thread-self/ns/net``) and brings its
loopback up through a netlink socket opened there (``IPRoute``), then ends: the front end
may be threaded (the executor), so nothing forks, where pyroute2's ``netns.create`` and
``IPRoute(netns=…)`` fork a child that runs Python. ``cleanup`` removes it (pyroute2's
``netns.remove``: unmounted, then unlinked, which also detaches the copies other
containers' mount namespaces hold); ``recover`` removes those of its runtime directory
whose container is gone.

Options (``[isolators.network]``): ``mode`` (``host``, ``none``, ``bridge``), ``subnet``
(the private IPv4 range bridge addresses come from), ``blocked`` (addresses or
networks, each with an optional port, that tasks on a bridge may not reach; by default
the store's, from :meth:`SecretResolver.endpoints`) and ``host_allowed`` (whether a task's
label may ask for the host's network when another mode is configured; default false).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from mesos_secrets import linux, nofollow
from mesos_secrets.errors import ConfigError, IsolatorError, printable
from mesos_secrets.isolator import ContainerConfig, Isolator, LaunchInfo
from mesos_secrets.labels import NETWORK, NETWORK_MODES
from mesos_secrets.mesos import ContainerInfo
from mesos_secrets.networking import MESOS_BRIDGE
from mesos_secrets.resolver import SecretResolver

from .bridge import AddressesExhausted, Bridge, bridge_name, bridges, netlink_errors
from .firewall import PortRule, Reject

__all__ = [
    "BRIDGE",
    "DEFAULT_SUBNET",
    "HOST",
    "MODES",
    "NETNS_DIR",
    "NONE",
    "PREFIX",
    "Blocked",
    "NetworkIsolator",
    "create_namespace",
    "namespace_prefix",
    "parse_blocked",
    "remove_namespace",
]

log = logging.getLogger(__name__)

#: The modes, as the label ``mesos-secrets/network`` names them too.
MODES = NETWORK_MODES
HOST, NONE, BRIDGE = MODES
#: Where named network namespaces live (``ip netns``'s directory).
NETNS_DIR = Path("/run/netns")
#: The start of the names of our namespaces there.
PREFIX = "mesos-secrets-"
#: The private range bridge addresses come from, unless configured.
DEFAULT_SUBNET = "10.217.0.0/16"
JOURNAL = "namespace.json"
#: After the prefix, in the name of a pod's namespace (no container id starts so).
POD_MARK = "_pod-"
#: The lock, in the runtime directory, under which pods' namespaces are made and removed.
POD_LOCK = ".network-pods.lock"
#: A container id that can be part of a file name as it is.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@attrs.frozen
class Blocked:
    """An address or network tasks may not reach, on one port or (None) all."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None = None

    def __str__(self) -> str:
        host = str(
            self.network.network_address if self.network.num_addresses == 1 else self.network
        )
        if self.port is None:
            return host
        return f"[{host}]:{self.port}" if self.network.version == 6 else f"{host}:{self.port}"


def parse_blocked(entry: str) -> Blocked:
    """``10.0.0.5``, ``10.0.0.0/24``, ``10.0.0.5:8200``, ``fd00::1``, ``[fd00::1]:8200``.

    A ValueError saying what is wrong; host names are refused (an address is needed to
    write a rule, and a name's addresses change)."""
    text = entry.strip()
    port_text = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address with a port is written [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    try:
        network = ipaddress.ip_network(host, strict=True)
    except ValueError:
        raise ValueError(
            "not an IP address or network (ADDRESS, ADDRESS/PREFIX, with :PORT or not; "
            "host names are not taken)"
        ) from None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    return Blocked(network, port)


def _option_error(name: str, value: object, why: str) -> ConfigError:
    shown = printable(repr(value), 80)
    return ConfigError(f"[isolators.network] {name} = {shown}: {why}")


def _check_mode(mode: object) -> str:
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise _option_error("mode", mode, "not a network mode (host, none or bridge)")
    return mode.strip().lower()


def _check_subnet(subnet: object) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(str(subnet), strict=True)
    except ValueError:
        raise _option_error(
            "subnet", subnet, "not an IPv4 network such as 10.217.0.0/16 (host bits unset)"
        ) from None
    if not network.is_private:
        raise _option_error("subnet", subnet, "not a private range (RFC 1918 or alike)")
    if network.prefixlen > 30:
        raise _option_error(
            "subnet", subnet, "too small: a bridge needs its own address and one per task"
        )
    return network


def _check_blocked(blocked: object) -> tuple[Blocked, ...] | None:
    if blocked is None:
        return None  # the store's address
    if isinstance(blocked, str):
        entries: list[object] = [part.strip() for part in blocked.split(",") if part.strip()]
    elif isinstance(blocked, Sequence):
        entries = list(blocked)
    else:
        raise _option_error("blocked", blocked, "must be a list of addresses")
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise _option_error(f"blocked[{index}]", entry, "must be a string")
        try:
            found.append(parse_blocked(entry))
        except ValueError as error:
            raise _option_error(f"blocked[{index}]", entry, str(error)) from None
    return tuple(found)


def namespace_prefix(runtime_dir: Path) -> str:
    """The start of the names of the namespaces of the containers of ``runtime_dir``:
    ``mesos-secrets-`` and a tag that stands for the directory (its real path)."""
    tag = hashlib.sha256(os.fsencode(os.path.realpath(runtime_dir))).hexdigest()[:8]
    return f"{PREFIX}{tag}-"


def create_namespace(path: Path) -> None:
    """A new network namespace bound at ``path``, its loopback up; nothing forks.

    In a thread of its own, which unshares its network namespace (the process's other
    threads stay where they are), has pyroute2 bind it at ``path`` (``/proc/thread-self``
    being that thread) and sets ``lo`` up through a netlink socket it opens there, then
    ends. FileExistsError if ``path`` exists, another OSError if a step fails (``path``
    may then exist: :func:`remove_namespace` removes it).
    """
    from pyroute2 import IPRoute, netns  # noqa: PLC0415 (pyroute2: only for a namespace)

    def make() -> None:
        linux.unshare(linux.CLONE_NEWNET)
        netns.attach(str(path), "thread-self")
        with IPRoute() as ipr:  # its socket is in this thread's namespace: the new one
            (loopback,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=loopback, state="up")

    with netlink_errors():
        linux.in_own_thread(make)


def remove_namespace(path: Path) -> bool:
    """Remove the namespace bound at ``path`` (pyroute2's ``netns.remove``: unmounted,
    then unlinked). False if there was none; idempotent."""
    if not os.path.lexists(path):
        return False
    from pyroute2 import netns  # noqa: PLC0415

    try:
        netns.remove(str(path))
    except FileNotFoundError:
        return False
    return True


class NetworkIsolator(Isolator):
    """Puts tasks in the network their mode says: the host's, or one of their own."""

    name = "network"

    def __init__(
        self,
        resolver: SecretResolver,
        runtime_dir: Path,
        *,
        mode: str = HOST,
        subnet: str = DEFAULT_SUBNET,
        blocked: str | Sequence[str] | None = None,
        host_allowed: bool = False,
    ) -> None:
        super().__init__(resolver, runtime_dir)
        self.mode = _check_mode(mode)
        if not isinstance(host_allowed, bool):
            raise _option_error("host_allowed", host_allowed, "must be true or false")
        #: Whether a task may ask for the host's network (label ``mesos-secrets/network``)
        #: when another mode is configured.
        self.host_allowed = host_allowed
        self.subnet = _check_subnet(subnet)
        #: What tasks on a bridge may not reach; None: the store's address (learnt from
        #: the resolver at the first bridge task, into ``_store``).
        self.blocked = _check_blocked(blocked)
        self._store: tuple[Blocked, ...] | None = None
        #: The start of the names of this runtime directory's namespaces.
        self.prefix = namespace_prefix(self.runtime_dir)

    def namespace_name(self, container_id: str) -> str:
        """The name of a container's namespace: unique on the node (see the module)."""
        if not _CONTAINER_ID.fullmatch(container_id):
            raise IsolatorError(
                f"container id '{printable(container_id, 80)}' cannot name a network "
                "namespace (letters, digits, '_', '.', '-'; at most 128)",
                isolator=self.name,
                container_id=container_id,
            )
        return self.prefix + container_id

    def pod_namespace_name(self, pod: str) -> str:
        """The name of the namespace a pod's containers share (``pod``: its executor's
        id): the prefix, ``_pod-`` and 16 hex digits standing for it."""
        return self.prefix + POD_MARK + hashlib.sha256(pod.encode()).hexdigest()[:16]

    def mode_for(self, config: ContainerConfig) -> str:
        """The task's mode: from its NetworkInfos (or its DockerInfo's network), else its
        label ``mesos-secrets/network``, else the configured one. A pod's containers take
        their pod's: its executor's ContainerInfo and labels."""
        group = config.group
        container, labels, field = _network_source(config)
        asked = self._asked(config, container, field)
        label = labels.get(NETWORK)
        if label is None:
            mode = asked or self.mode
        else:
            where = f"the {'pod' if group is not None else 'task'}'s label {NETWORK}"
            if label not in MODES:
                shown = printable(label, 40)
                raise self._error(config, f"{where} '{shown}' is not host, none or bridge")
            if asked is not None and asked != label:
                raise self._error(
                    config,
                    f"{where} says '{label}', and its {field}.network_infos ask for '{asked}'",
                )
            mode = label
        if mode == HOST and self.mode != HOST and not self.host_allowed:
            raise self._error(
                config,
                f"the {'pod' if group is not None else 'task'} asks for the host's network "
                f"(label {NETWORK}), which would let it reach the secret store: network mode "
                f"'{self.mode}' is configured, and [isolators.network] host_allowed is false",
            )
        return mode

    def _asked(
        self, config: ContainerConfig, container: ContainerInfo | None, field: str
    ) -> str | None:
        """The mode a ContainerInfo's NetworkInfos (or DockerInfo) ask for; None: none."""
        infos = container.extra.get("network_infos") if container is not None else None
        if not infos:
            docker = container.extra.get("docker") if container is not None else None
            if isinstance(docker, Mapping) and docker.get("network") == "BRIDGE":
                return BRIDGE
            return None
        if not isinstance(infos, list) or not all(isinstance(i, Mapping) for i in infos):
            raise self._error(config, f"{field}.network_infos is not a list of NetworkInfo")
        names = [info.get("name") for info in infos]
        if len(infos) > 1:
            listed = ", ".join(f"'{printable(str(n), 80)}'" for n in names)
            raise self._error(
                config,
                f"the task joins {len(infos)} networks ({field}.network_infos: {listed}); "
                "the network isolator gives a task one",
            )
        name = names[0]
        if name == MESOS_BRIDGE:
            return BRIDGE
        shown = "no name" if name is None else f"'{printable(str(name), 80)}'"
        raise self._error(
            config,
            f"the task asks for container network {shown} ({field}.network_infos[0].name; "
            'Marathon: networks [{"mode": "container", "name": …}]): named container (CNI) '
            "networks are not supported, only host, none and bridge",
        )

    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        mode = self.mode_for(config)
        if mode == HOST:
            return None
        if not linux.is_root():
            raise self._error(
                config,
                f"network mode '{mode}' needs root: the network isolator makes a network "
                "namespace for the task",
            )
        if config.group is not None:
            return self._join_pod(config, mode)
        name = self.namespace_name(config.container_id)
        path = NETNS_DIR / name
        directory = self.container_dir(config.container_id)
        ports = self._port_rules(config) if mode == BRIDGE else ()
        rejects = self._rejects(config) if mode == BRIDGE else ()
        journal = self._journal(mode, name)
        step = ["create network namespace"]
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Journalled first: a crash from here on leaves a name cleanup can find.
            _write_journal(directory / JOURNAL, journal)
            self._make(path, mode, rejects, ports, step)
        except BaseException as error:
            # The chain would clean up too; an isolator used alone must not leave anything.
            with contextlib.suppress(OSError):
                self.cleanup(config.container_id)
            failure = self._failed(config, error, step[0], path, ports)
            if failure is error:
                raise
            raise failure from None
        log.info("container %s: network namespace %s (mode %s)", config.container_id, name, mode)
        return LaunchInfo(network_namespace=path)

    def _join_pod(self, config: ContainerConfig, mode: str) -> LaunchInfo:
        """Put a pod's container in its pod's namespace, made by the first of them (with
        the pod's port mappings) and removed with the last (:meth:`cleanup`). Each
        container's journal names it: those journals are who has it, under a lock of the
        runtime directory's."""
        assert config.group is not None
        name = self.pod_namespace_name(config.group.id)
        path = NETNS_DIR / name
        directory = self.container_dir(config.container_id)
        ports = self._port_rules(config) if mode == BRIDGE else ()
        rejects = self._rejects(config) if mode == BRIDGE else ()
        step = ["create network namespace"]
        made = False
        subnets = {self.subnet} if mode == BRIDGE else set()
        try:
            with self._pods_locked():
                try:
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    _write_journal(directory / JOURNAL, self._journal(mode, name))
                    if not os.path.lexists(path):  # the pod's first container
                        made = True
                        self._make(path, mode, rejects, ports, step)
                except BaseException:
                    # Undone before the lock goes: no sibling may join a half-made one.
                    with contextlib.suppress(OSError):
                        self._leave_pod(config.container_id, name, subnets)
                    raise
        except BaseException as error:
            with contextlib.suppress(OSError):
                self.cleanup(config.container_id)  # the namespace too, if no other has it
            failure = self._failed(config, error, step[0], path, ports)
            if failure is error:
                raise
            raise failure from None
        log.info(
            "container %s: network namespace %s of pod %s (mode %s%s)",
            config.container_id, name, config.group.id, mode, ", made" if made else "",
        )  # fmt: skip
        return LaunchInfo(network_namespace=path)

    def _journal(self, mode: str, name: str) -> dict[str, str]:
        journal = {"mode": mode, "namespace": name}
        if mode == BRIDGE:
            journal["subnet"] = str(self.subnet)
        return journal

    def _make(
        self,
        path: Path,
        mode: str,
        rejects: Sequence[Reject],
        ports: Sequence[PortRule],
        step: list[str],
    ) -> None:
        """The namespace at ``path``, on the bridge in bridge mode (``step[0]`` says
        which step is under way, for the message should one fail)."""
        create_namespace(path)
        if mode == BRIDGE:
            step[0] = "join network namespace"
            Bridge(self.subnet).attach(path, rejects, ports)

    def _failed(
        self,
        config: ContainerConfig,
        error: BaseException,
        step: str,
        path: Path,
        ports: Sequence[PortRule],
    ) -> BaseException:
        """What a failure to make a namespace is raised as: one line, saying why."""
        if isinstance(error, FileExistsError):
            return self._error(config, f"network namespace '{path}' exists already")
        if isinstance(error, AddressesExhausted):
            return self._error(config, error.strerror or str(error))
        if isinstance(error, OSError):
            why = _why(error)
            if "File exists" in why and ports:
                shown = ", ".join(f"{p.host_port}/{p.protocol}" for p in ports)
                why = f"a host port of the task ({shown}) is mapped to another task"
            return self._error(config, f"cannot {step} '{path}': {why}")
        return error

    @contextlib.contextmanager
    def _pods_locked(self) -> Iterator[None]:
        """Held while a pod's namespace is made, joined, left or removed: an ``flock`` of
        :data:`POD_LOCK` in the runtime directory. Not reentrant."""
        fd = os.open(
            self.runtime_dir / POD_LOCK,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _members(self, namespace: str, but: str | None = None) -> list[str]:
        """The containers (but ``but``) whose journal names the pod namespace
        ``namespace``."""
        containers = self.runtime_dir / "containers"  # where container_dir() is
        try:
            names = os.listdir(containers)
        except FileNotFoundError:
            return []
        members = []
        for name in names:
            if name == but:
                continue
            journal = containers / name / self.name / JOURNAL
            try:
                text = journal.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError:  # unreadable now (no fd left…): it may have it, keep it
                members.append(name)
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                continue  # torn by a crash: its container is gone
            if isinstance(entry, dict) and entry.get("namespace") == namespace:
                members.append(name)
        return sorted(members)

    def _port_rules(self, config: ContainerConfig) -> tuple[PortRule, ...]:
        """The port mappings of the task's ContainerInfo (its pod's executor's, for a
        pod's container): its NetworkInfo's, or its DockerInfo's, one rule per protocol;
        refused in one line naming the field if malformed."""
        container, _, field = _network_source(config)
        if container is None:  # on the configured bridge, with no ContainerInfo
            return ()
        infos = container.extra.get("network_infos")
        if infos:
            where, mappings = (
                f"{field}.network_infos[0].port_mappings",
                infos[0].get("port_mappings"),
            )
        else:
            docker = container.extra.get("docker") or {}
            where, mappings = f"{field}.docker.port_mappings", docker.get("port_mappings")
        rules: list[PortRule] = []
        for index, mapping in enumerate(mappings or ()):
            at = f"{where}[{index}]"
            if not isinstance(mapping, Mapping):
                raise self._error(config, f"{at} is not a PortMapping")
            ports = []
            for field in ("host_port", "container_port"):
                port = mapping.get(field)
                if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                    shown = printable(repr(port), 40)
                    raise self._error(config, f"{at}.{field} {shown} is not a port (1 to 65535)")
                ports.append(port)
            protocols = str(mapping.get("protocol") or "tcp").lower().split(",")
            for protocol in protocols:
                if protocol.strip() not in ("tcp", "udp"):
                    shown = printable(str(mapping.get("protocol")), 40)
                    raise self._error(
                        config, f"{at}.protocol '{shown}': only tcp and udp are mapped"
                    )
                rules.append(PortRule(protocol.strip(), ports[0], ports[1]))
        return tuple(rules)

    def _rejects(self, config: ContainerConfig) -> tuple[Reject, ...]:
        """What tasks on the bridge may not reach: ``blocked``, or the store's address."""
        if self.blocked is None and self._store is None:
            try:
                endpoints = self.resolver.endpoints()
            except Exception as error:  # noqa: BLE001 (any resolver's: one line)
                raise self._error(
                    config,
                    "cannot learn the store's address, which tasks on a bridge are kept "
                    f"from ({printable(str(error), 200)}); set [isolators.network] blocked",
                ) from None
            store: list[Blocked] = []
            for endpoint in endpoints:
                store += _resolved(endpoint)
            self._store = tuple(store)
        blocked = self.blocked if self.blocked is not None else self._store or ()
        local = _host_addresses()
        rejects = []
        for entry in blocked:
            if entry.network.version != 4:
                continue  # nothing but IPv4 leaves a bridge
            network = ipaddress.IPv4Network(entry.network)
            here = network.is_loopback or any(address in network for address in local)
            rejects.append(Reject(network, entry.port, here))
        return tuple(rejects)

    def cleanup(self, container_id: str) -> None:
        """Remove the container's namespace (by its name, and by the journal's), then its
        journal; a pod's, only if no other container of the pod has it. Idempotent; a
        failure keeps the journal, for the next try."""
        directory = self.container_dir(container_id)
        names = set()
        with contextlib.suppress(IsolatorError):
            names.add(self.namespace_name(container_id))
        journal = _read_journal(directory / JOURNAL)  # made before a crash could come
        journalled = journal.get("namespace")
        subnets = {self.subnet} if self.mode == BRIDGE else set()
        with contextlib.suppress(ValueError):
            if journal.get("subnet"):
                subnets.add(ipaddress.IPv4Network(str(journal["subnet"])))
        if isinstance(journalled, str) and self._ours(journalled):
            if self._is_pods(journalled):
                with self._pods_locked():
                    self._leave_pod(container_id, journalled, subnets)
            else:
                names.add(journalled)
        for name in sorted(names):
            if self._remove(name, subnets):
                log.info("container %s: network namespace %s removed", container_id, name)
        if directory.exists():
            nofollow.remove_tree(directory)

    def _leave_pod(
        self, container_id: str, namespace: str, subnets: Collection[ipaddress.IPv4Network]
    ) -> None:
        """Take the container out of its pod's namespace (its journal), and remove the
        namespace if no other container has it. Under :meth:`_pods_locked`."""
        if not self._members(namespace, but=container_id) and self._remove(namespace, subnets):
            log.info(
                "container %s: network namespace %s of its pod removed, as it was the last "
                "to have it", container_id, namespace,
            )  # fmt: skip
        (self.container_dir(container_id) / JOURNAL).unlink(missing_ok=True)

    def _remove(self, name: str, subnets: Collection[ipaddress.IPv4Network]) -> bool:
        """Take the namespace ``name`` off the bridges of ``subnets`` (its rules, veth and
        lease), then remove it. False if there was none."""
        for subnet in sorted(subnets):
            Bridge(subnet).detach(name)
        return remove_namespace(NETNS_DIR / name)

    def recover(self, alive: Collection[str]) -> None:
        """Remove this runtime directory's namespaces whose container is gone.

        A container's directory is claimed before its namespace is made, and removed only
        after its namespace is: one whose claim is not there (checked again now, for a
        container claimed since ``alive`` was listed) is left over."""
        running = set(alive)
        try:
            entries = sorted(os.listdir(NETNS_DIR))
        except FileNotFoundError:
            return
        containers = self.runtime_dir / "containers"  # where container_dir() is
        for entry in entries:
            if not self._ours(entry):
                continue
            if self._is_pods(entry):
                self._recover_pods(entry)
                continue
            container_id = entry.removeprefix(self.prefix)
            if container_id in running or os.path.lexists(containers / container_id):
                continue
            log.warning(
                "removing network namespace %s: its container %s is gone", entry, container_id
            )
            try:
                remove_namespace(NETNS_DIR / entry)
            except OSError as error:
                log.error("could not remove network namespace %s: %s", entry, error)
        if self.mode == BRIDGE or bridge_name(self.subnet) in bridges():
            try:  # leases whose namespace is gone: theirs, and every front end's
                Bridge(self.subnet).collect()
            except OSError as error:
                log.error("could not clean up bridge %s: %s", bridge_name(self.subnet), _why(error))

    def _recover_pods(self, name: str) -> None:
        """Remove the pod namespace ``name`` if no container has it (its last container's
        front end died before it could)."""
        subnets = {self.subnet} if self.mode == BRIDGE else set()
        try:
            with self._pods_locked():
                if self._members(name):
                    return
                log.warning("removing network namespace %s: no container of its pod is left", name)
                self._remove(name, subnets)
        except OSError as error:
            log.error("could not remove network namespace %s: %s", name, _why(error))

    def _ours(self, name: str) -> bool:
        rest = name.removeprefix(self.prefix)
        if rest == name:
            return False
        return _CONTAINER_ID.fullmatch(rest) is not None or self._is_pods(name)

    def _is_pods(self, name: str) -> bool:
        """Whether ``name`` is a pod's namespace of this runtime directory."""
        rest = name.removeprefix(self.prefix + POD_MARK)
        return rest != name and re.fullmatch(r"[0-9a-f]{16}", rest) is not None

    def _error(self, config: ContainerConfig, message: str) -> IsolatorError:
        return IsolatorError(message, isolator=self.name, container_id=config.container_id)


def _network_source(
    config: ContainerConfig,
) -> tuple[ContainerInfo | None, Mapping[str, str], str]:
    """Where a task's network is said: its ContainerInfo and labels, or for a pod's
    container its pod's (the executor's); with the field's name, for messages."""
    if config.group is not None:
        return config.group.container, config.group.labels, "executor.container"
    return config.container, config.labels, "container"


def _why(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error.strerror or error)


def _resolved(endpoint: str) -> list[Blocked]:
    """A ``HOST:PORT`` endpoint as blocked addresses: a name's IPv4 addresses now."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        return [parse_blocked(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise OSError(
            0, f"cannot resolve the store's host '{printable(host, 80)}': {error}"
        ) from None
    return sorted({parse_blocked(f"{entry[4][0]}:{port}") for entry in found}, key=str)


def _host_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of the host's interfaces."""
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        return [ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()]


def _write_journal(path: Path, entry: Mapping[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _read_journal(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none, or torn by a crash: the name is known from the container id
    return entry if isinstance(entry, dict) else {}
