"""Marathon networking: networks, ports, port mappings and pod endpoints, as Marathon
normalizes them and as its task builders put them into a TaskInfo.

An app is on the host network unless it names others (``networks``, or the legacy
``ipAddress`` and ``container.docker.network``, translated first as
``AppNormalization.NetworkTranslation`` does). On the host it asks for host ports through
``portDefinitions`` (one dynamic port named ``default`` when it says nothing); on a
bridge or container network through the container's ``portMappings``. Pods declare
``endpoints`` per container.

Host ports are taken when the task is built: a fixed port as asked, a ``0`` from a
:data:`PortAllocator` (for ``run`` and ``task-info``: free ports of this host, where
Marathon takes them from an offer). The TaskInfo gets them as ``ports`` resources, port
mappings, and the ``PORT*`` (apps) or ``ENDPOINT_*`` (pods) variables
(``EnvironmentHelper.portsEnv``, ``TaskGroupBuilder.endpointEnvVars``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from .spec_reader import NOT_VALID, SpecError, SpecReader

__all__ = [
    "AppNetworking",
    "Endpoint",
    "Network",
    "PortAllocator",
    "PortDefinition",
    "PortMapping",
    "free_ports",
    "mesos_labels",
    "port_resources",
    "read_labels",
]

HOST = "host"
CONTAINER = "container"
BRIDGE = "container/bridge"
#: ``--mesos_bridge_name``: the NetworkInfo name of a bridge network.
MESOS_BRIDGE = "mesos-bridge"
#: ``--default_network_name``: the network ``{"mode": "container"}`` joins (DC/OS's).
DEFAULT_NETWORK = "dcos"

#: Takes host ports: for each request a fixed port (kept), ``0`` (any free port) or None
#: (no host port); returns the ports, None where none was asked.
PortAllocator = Callable[[Sequence[int | None]], list[int | None]]


def _frozen(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class Network:
    """``networks[]``: ``host``, ``container`` (named) or ``container/bridge``."""

    mode: str = CONTAINER
    name: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)

    @property
    def mesos_name(self) -> str:
        """The NetworkInfo name Mesos gets."""
        return MESOS_BRIDGE if self.mode == BRIDGE else str(self.name)


@attrs.frozen
class PortDefinition:
    """``portDefinitions[]`` (host networking): ``port`` 0 asks for any port."""

    port: int = 0
    protocol: str = "tcp"
    name: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)


@attrs.frozen
class PortMapping:
    """``container.portMappings[]``: ``host_port`` None maps no host port."""

    container_port: int = 0
    host_port: int | None = None
    service_port: int = 0
    protocol: str = "tcp"
    name: str | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    network_names: tuple[str, ...] = ()


@attrs.frozen
class Endpoint:
    """A pod container's ``endpoints[]``."""

    name: str
    container_port: int | None = None
    host_port: int | None = None
    protocol: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    network_names: tuple[str, ...] = ()


# --- reading -------------------------------------------------------------------------


def read_labels(read: SpecReader, raw: Any, path: str) -> dict[str, str]:
    """``labels``: an object of strings."""
    labels: dict[str, str] = {}
    if raw is None or read.obj(raw, path) is None:
        return labels
    for key, value in raw.items():
        if isinstance(value, str):
            labels[key] = value
        else:
            read.fail(f"{path}/{key}", "error.expected.jsstring")
    return labels


def _int(read: SpecReader, parent: Mapping[str, Any], key: str, path: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        read.fail(f"{path}/{key}", "error.expected.jsnumber")
        return None
    return int(value)


def _port(read: SpecReader, parent: Mapping[str, Any], key: str, path: str) -> int | None:
    value = _int(read, parent, key, path)
    if value is not None and not 0 <= value <= 65535:
        read.fail(f"{path}/{key}", "error.max" if value > 0 else "error.min")
        return None
    return value


def read_networks(read: SpecReader, raw: Any, path: str = "/networks") -> tuple[Network, ...]:
    found = []
    for where, item in read.objects(raw, path):
        # Marathon's generated enum readers ignore case.
        mode = (read.string(item, "mode", where) or CONTAINER).lower()
        if mode not in (HOST, CONTAINER, BRIDGE):
            read.fail(f"{where}/mode", "error.unknown.enum.literal")
            continue
        name = read.min1(item, "name", where)
        found.append(Network(mode, name, read_labels(read, item.get("labels"), f"{where}/labels")))
    return tuple(found)


def read_port_definitions(read: SpecReader, raw: Any) -> tuple[PortDefinition, ...] | None:
    if raw is None:
        return None
    found = []
    for where, item in read.objects(raw, "/portDefinitions"):
        found.append(
            PortDefinition(
                port=_port(read, item, "port", where) or 0,
                protocol=read.string(item, "protocol", where) or "tcp",
                name=read.string(item, "name", where),
                labels=read_labels(read, item.get("labels"), f"{where}/labels"),
            )
        )
    return tuple(found)


def read_ip_address(read: SpecReader, raw: Any) -> dict[str, Any] | None:
    """The deprecated ``ipAddress`` (``networkName``, ``labels``, ``discovery``'s
    ``ports``: ``number``, ``name``, ``protocol``, ``labels``), of the types Marathon's
    reader takes: what is not reported here is used as it is."""
    path = "/ipAddress"
    if raw is None or read.obj(raw, path) is None:
        return None
    read.string(raw, "networkName", path)
    read_labels(read, raw.get("labels"), f"{path}/labels")
    discovery = read.optional_obj(raw.get("discovery"), f"{path}/discovery")
    for where, port in read.objects(discovery.get("ports"), f"{path}/discovery/ports"):
        _int(read, port, "number", where)
        read.string(port, "name", where)
        read.string(port, "protocol", where)
        read_labels(read, port.get("labels"), f"{where}/labels")
    return dict(raw)


def read_ports(read: SpecReader, raw: Any) -> tuple[int, ...] | None:
    """The legacy ``ports``: port numbers."""
    if raw is None:
        return None
    items = read.array(raw, "/ports")
    found = (_port(read, {f"ports({i})": item}, f"ports({i})", "") for i, item in enumerate(items))
    return tuple(port for port in found if port is not None)


def read_port_mappings(read: SpecReader, raw: Any, path: str) -> tuple[PortMapping, ...] | None:
    if raw is None:
        return None
    found = []
    for where, item in read.objects(raw, path):
        names = read.array(item.get("networkNames"), f"{where}/networkNames")
        found.append(
            PortMapping(
                container_port=_port(read, item, "containerPort", where) or 0,
                host_port=_port(read, item, "hostPort", where),
                service_port=_port(read, item, "servicePort", where) or 0,
                protocol=read.string(item, "protocol", where) or "tcp",
                name=read.string(item, "name", where),
                labels=read_labels(read, item.get("labels"), f"{where}/labels"),
                network_names=tuple(n for n in names if isinstance(n, str)),
            )
        )
    return tuple(found)


def read_endpoints(read: SpecReader, raw: Any, path: str) -> tuple[Endpoint, ...]:
    found = []
    for where, item in read.objects(raw, path):
        name = read.min1(item, "name", where, required=True)
        protocols = read.array(item.get("protocol"), f"{where}/protocol")
        names = read.array(item.get("networkNames"), f"{where}/networkNames")
        if name is not None:
            found.append(
                Endpoint(
                    name=name,
                    container_port=_port(read, item, "containerPort", where),
                    host_port=_port(read, item, "hostPort", where),
                    protocol=tuple(p for p in protocols if isinstance(p, str)),
                    labels=read_labels(read, item.get("labels"), f"{where}/labels"),
                    network_names=tuple(n for n in names if isinstance(n, str)),
                )
            )
    return tuple(found)


# --- apps ----------------------------------------------------------------------------


@attrs.frozen
class AppNetworking:
    """An app's networks and ports after Marathon's normalization."""

    networks: tuple[Network, ...] = (Network(HOST),)
    port_definitions: tuple[PortDefinition, ...] = ()
    #: The container's port mappings; None when the app has no container.
    port_mappings: tuple[PortMapping, ...] = ()
    require_ports: bool = False

    @property
    def host_networking(self) -> bool:
        return not any(n.mode != HOST for n in self.networks)

    @property
    def bridged(self) -> bool:
        return any(n.mode == BRIDGE for n in self.networks)

    def host_port_requests(self) -> list[int | None]:
        """What ``PortsMatcher`` takes from an offer: one per mapping or definition."""
        if self.port_mappings:
            return [m.host_port for m in self.port_mappings]
        if self.require_ports:
            return [d.port for d in self.port_definitions]
        return [0] * len(self.port_definitions)

    def bound_mappings(self, host_ports: Sequence[int | None]) -> list[PortMapping]:
        """The mappings that got a host port, a container port 0 taking the host port."""
        bound = []
        for mapping, port in zip(self.port_mappings, host_ports, strict=False):
            if port is None:
                continue
            container_port = mapping.container_port or port
            bound.append(attrs.evolve(mapping, host_port=port, container_port=container_port))
        return bound

    def docker_fields(self, host_ports: Sequence[int | None]) -> dict[str, Any]:
        """``DockerInfo.network`` and ``port_mappings`` (``DockerSerializer.toMesos``)."""
        modes = {HOST: "HOST", BRIDGE: "BRIDGE", CONTAINER: "USER"}
        fields: dict[str, Any] = {"network": modes[self.networks[-1].mode]}
        mappings = [
            {"host_port": m.host_port, "container_port": m.container_port, "protocol": protocol}
            for m in self.bound_mappings(host_ports)
            for protocol in m.protocol.split(",")
        ]
        if mappings:
            fields["port_mappings"] = mappings
        return fields

    def network_infos(self, host_ports: Sequence[int | None], *, docker: bool) -> list[Any]:
        """``ContainerInfo.network_infos``: Docker gets its first container network's
        name only; UCR a NetworkInfo per non-host network with its mappings."""
        if docker:
            named = [n for n in self.networks if n.mode == CONTAINER]
            return [{"name": named[0].name}] if named else []
        infos = []
        bound = self.bound_mappings(host_ports)
        for network in self.networks:
            if network.mode == HOST:
                continue
            name = network.mesos_name
            info: dict[str, Any] = {"ip_addresses": [{}], "name": name}
            if network.labels:
                info["labels"] = mesos_labels(network.labels)
            mappings = [
                {
                    "host_port": m.host_port,
                    "container_port": m.container_port,
                    "protocol": m.protocol,
                }
                for m in bound
                if all(n == name for n in m.network_names)
            ]
            if mappings:
                info["port_mappings"] = mappings
            infos.append(info)
        return infos

    def port_env(self, host_ports: Sequence[int | None]) -> dict[str, str]:
        """``PORT``, ``PORTS``, ``PORT<i>``, ``PORT_<port>``, ``PORT_<NAME>``."""
        if self.port_mappings:
            declared = [(m.name, m.container_port) for m in self.port_mappings]
        else:
            declared = [(d.name, d.port) for d in self.port_definitions]
        return ports_env(declared, host_ports)

    def port_assignments(
        self, host_ports: Sequence[int | None]
    ) -> list[tuple[str | None, int | None]]:
        """(name, port a Mesos check probes) per declared port: the container port, else
        the host port (``MesosHealthCheckWithPorts.effectivePort``)."""
        if self.port_mappings:
            found: list[tuple[str | None, int | None]] = []
            for mapping, port in zip(self.port_mappings, host_ports, strict=False):
                container = mapping.container_port or port
                found.append((mapping.name, container if not self.host_networking else port))
            return found
        return [(d.name, port) for d, port in zip(self.port_definitions, host_ports, strict=False)]


def ports_env(
    declared: Sequence[tuple[str | None, int]], host_ports: Sequence[int | None]
) -> dict[str, str]:
    """``EnvironmentHelper.portsEnv``: ``declared`` are (name, requested port) pairs; a
    mapping without a host port and with container port 0 gets a random port."""
    if not host_ports:
        return {}
    consumed = {port for _, port in declared} | {p for p in host_ports if p is not None}
    generated: dict[int, int] = {}
    for index, host_port in enumerate(host_ports):
        if host_port is None and index < len(declared) and declared[index][1] == 0:
            generated[index] = _random_port(consumed)
    # A port as the task sees it: the host port, else the requested or generated one.
    effective = {
        index: host_port if host_port is not None else declared[index][1] or generated[index]
        for index, host_port in enumerate(host_ports)
        if host_port is not None or index < len(declared)
    }
    env = {f"PORT{index}": str(port) for index, port in effective.items()}
    for index, (_, requested) in enumerate(declared[: len(host_ports)]):
        # PORT_<requested>, or PORT_<port> for a dynamic request.
        env[f"PORT_{requested or effective[index]}"] = str(effective[index])
    for index, (name, _) in enumerate(declared[: len(host_ports)]):
        if name is not None:
            env[f"PORT_{name.upper()}"] = str(effective[index])
    assigned = [p for p in host_ports if p is not None] + list(generated.values())
    if assigned:
        env["PORT"] = str(assigned[0])
    env["PORTS"] = ",".join(map(str, assigned))
    return env


def _random_port(consumed: set[int]) -> int:
    """A port above 1024 that no other variable of the task names."""
    while True:
        port = random.randint(1025, 65535)  # noqa: S311 (a port number, not a secret)
        if port not in consumed:
            consumed.add(port)
            return port


def normalize_app(
    *,
    networks: tuple[Network, ...],
    ip_address: Mapping[str, Any] | None,
    docker_network: str | None,
    port_definitions: tuple[PortDefinition, ...] | None,
    ports: tuple[int, ...] | None,
    container: bool,
    container_port_mappings: tuple[PortMapping, ...] | None,
    docker_port_mappings: tuple[PortMapping, ...] | None,
    require_ports: bool,
) -> AppNetworking:
    """``AppNormalization.forDeprecated`` then ``forPostValidation``, for networking."""
    translated = _translate(networks, ip_address, docker_network)
    networks = tuple(
        attrs.evolve(n, name=DEFAULT_NETWORK) if n.mode == CONTAINER and n.name is None else n
        for n in translated
    ) or (Network(HOST),)
    defined = port_definitions
    if defined is None and ports is not None:
        defined = tuple(PortDefinition(port) for port in ports)
    host = all(n.mode == HOST for n in networks)
    definitions = (
        (defined if defined is not None else (PortDefinition(name="default"),)) if host else ()
    )
    mappings: tuple[PortMapping, ...] = ()
    if container or ip_address is not None or not host:
        if container_port_mappings and docker_port_mappings:
            raise SpecError(
                NOT_VALID,
                [("/container", "cannot specify both portMappings and docker.portMappings")],
            )
        mappings = container_port_mappings or docker_port_mappings or ()
        discovery = (ip_address or {}).get("discovery") or {}
        if discovery.get("ports"):
            mappings = tuple(
                PortMapping(
                    container_port=p.get("number", 0),
                    name=p.get("name"),
                    protocol=p.get("protocol", "tcp"),
                )
                for p in discovery["ports"]
                if isinstance(p, dict)
            )
        if host:
            mappings = ()
        else:
            if not mappings:
                mappings = (PortMapping(name="default"),)
            extra = len(defined or ()) - len(mappings)
            if extra > 0:
                mappings += (PortMapping(),) * extra
            if any(n.mode == BRIDGE for n in networks):
                mappings = tuple(
                    attrs.evolve(m, host_port=0) if m.host_port is None else m for m in mappings
                )
    return AppNetworking(
        networks=networks,
        port_definitions=definitions,
        port_mappings=mappings,
        require_ports=require_ports and host,
    )


def _translate(
    networks: tuple[Network, ...], ip_address: Mapping[str, Any] | None, docker_network: str | None
) -> tuple[Network, ...]:
    """``NetworkTranslation``: the legacy ``ipAddress`` and ``docker.network``."""
    labels = (ip_address or {}).get("labels") or {}
    name = (ip_address or {}).get("networkName")
    if ip_address is None and docker_network is None:
        return networks
    if networks:
        raise SpecError(NOT_VALID, [("/", "cannot mix deprecated and canonical network APIs")])
    if docker_network is not None:
        if docker_network == "HOST":
            return (Network(HOST),)
        if docker_network == "USER":
            return (Network(CONTAINER, name if ip_address else None, labels),)
        if docker_network == "BRIDGE":
            return (Network(BRIDGE, None, labels),)
        raise SpecError(
            NOT_VALID,
            [("/container/docker/network", f"unsupported docker network type {docker_network}")],
        )
    if name == MESOS_BRIDGE:
        return (Network(BRIDGE, None, labels),)
    return (Network(CONTAINER, name, labels),)


# --- pods ----------------------------------------------------------------------------


def normalize_endpoints(
    networks: Sequence[Network], endpoints: tuple[Endpoint, ...]
) -> tuple[Endpoint, ...]:
    """``PodNormalization.Containers``: outside container networks, an endpoint without
    a host port gets a dynamic one."""
    if any(n.mode == CONTAINER for n in networks):
        return endpoints
    return tuple(attrs.evolve(e, host_port=0) if e.host_port is None else e for e in endpoints)


def pod_network_infos(
    networks: Sequence[Network], endpoints: Sequence[Endpoint], host_ports: Sequence[int | None]
) -> list[dict[str, Any]]:
    """``TaskGroupBuilder.buildMesosNetworks``: the executor's NetworkInfos."""
    mappings: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for endpoint, port in zip(endpoints, host_ports, strict=False):
        if port is None:
            continue
        base = {"host_port": port, "container_port": endpoint.container_port or port}
        if not endpoint.protocol:
            mappings.append((endpoint.network_names, base))
        for protocol in endpoint.protocol:
            mappings.append((endpoint.network_names, {**base, "protocol": protocol}))
    infos = []
    for network in networks:
        if network.mode == HOST:
            continue
        name = network.mesos_name
        info: dict[str, Any] = {"name": name}
        if network.labels:
            info["labels"] = mesos_labels(network.labels)
        chosen = [
            m for names, m in mappings if network.mode == BRIDGE or all(n == name for n in names)
        ]
        if chosen:
            info["port_mappings"] = chosen
        infos.append(info)
    return infos


_ESCAPE = re.compile(r"[^A-Z0-9_]+")


def endpoint_env(
    networks: Sequence[Network], endpoints: Sequence[Endpoint], host_ports: Sequence[int | None]
) -> dict[str, str]:
    """``TaskGroupBuilder.endpointEnvVars``: every endpoint of the pod, in every task."""
    host = any(n.mode == HOST for n in networks)
    env: dict[str, str] = {}
    for endpoint, port in zip(endpoints, host_ports, strict=False):
        name = _ESCAPE.sub("_", endpoint.name.upper())
        chosen = port if host else endpoint.container_port
        if chosen is not None:
            env[f"ENDPOINT_{name}"] = str(chosen)
        if port is not None:
            env[f"EP_HOST_{name}"] = str(port)
        if endpoint.container_port is not None:
            env[f"EP_CONTAINER_{name}"] = str(endpoint.container_port)
    return env


# --- host ports ----------------------------------------------------------------------


def free_ports(requests: Sequence[int | None]) -> list[int | None]:
    """The default :data:`PortAllocator`: fixed ports as asked, a free port of this host
    (as the kernel hands one out) for each ``0``, all distinct."""
    import socket  # noqa: PLC0415 (only to ask for ports: 1.5 ms of every start)

    taken = {p for p in requests if p}
    found: list[int | None] = []
    holding = []
    try:
        for request in requests:
            if request is None or request != 0:
                found.append(request)
                continue
            while True:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                holding.append(sock)
                sock.bind(("0.0.0.0", 0))  # noqa: S104 (asks the kernel for a free port)
                port = sock.getsockname()[1]
                if port not in taken:
                    break
            taken.add(port)
            found.append(port)
    finally:
        for sock in holding:
            sock.close()
    return found


def placeholder_ports(requests: Sequence[int | None]) -> list[int | None]:
    """A :data:`PortAllocator` that takes nothing: fixed ports as asked, ``1`` for a
    dynamic one. For building a TaskInfo only to check it (validation)."""
    return [None if r is None else (r or 1) for r in requests]


def port_resources(host_ports: Iterable[int | None]) -> list[dict[str, Any]]:
    """The ``ports`` resource holding ``host_ports``, as ranges (``PortWithRole``)."""
    ports = sorted({p for p in host_ports if p is not None})
    if not ports:
        return []
    ranges: list[dict[str, int]] = []
    for port in ports:
        if ranges and ranges[-1]["end"] == port - 1:
            ranges[-1]["end"] = port
        else:
            ranges.append({"begin": port, "end": port})
    return [{"name": "ports", "type": "RANGES", "ranges": {"range": ranges}}]


def mesos_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    """``Labels``: ``{"labels": [{"key", "value"}]}``."""
    return {"labels": [{"key": k, "value": v} for k, v in labels.items()]}
