"""Marathon-style app specs: read, validate as Marathon does, convert to a Mesos TaskInfo.

What Marathon accepts and rejects, with its JSON paths and messages, is in
``reference/marathon.md``. The secrets feature is always on here. In short::

    {"id": "/app", "cmd": "...",
     "env": {"PLAIN": "x", "DB_PW": {"secret": "db"}},
     "secrets": {"db": {"source": "/myapp/db@password"}},
     "container": {"type": "MESOS",
                   "volumes": [{"containerPath": "secrets/pw", "secret": "db"}]}}

``env[X].secret`` and ``volumes[].secret`` name a key of ``secrets`` (never a store
path); ``secrets[name].source`` is the store path, optionally ``path@key``. It becomes
``Secret{type: REFERENCE, reference: {name: path, key: key}}`` in the TaskInfo, as a
DC/OS-style secrets plugin would emit it.

Errors come in Marathon's two shapes, both a :class:`SpecError`: ``Invalid JSON``
(structure: a missing field, a wrong type) and ``Object is not valid`` (rules), each
with ``details`` of ``{"path", "errors"}``. Array items are written ``volumes(0)``, as
Marathon writes them.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from ._codec import loads
from .artifacts import (
    INVALID_URI,
    java_uri_valid,
    legacy_fetch,
    read_artifacts,
    read_uris,
    uri_violations,
)
from .errors import ProvisionerError, SecretValidationError
from .health_checks import MarathonHealthCheck, read_app_health_checks
from .image_reference import ImageReference
from .labels import label_violations
from .mesos import (
    CommandInfo,
    CommandURI,
    ContainerInfo,
    ContainerType,
    DockerInfo,
    Environment,
    Image,
    MesosInfo,
    TaskInfo,
    Variable,
    Volume,
    VolumeMode,
)
from .names import split_source
from .networking import (
    AppNetworking,
    PortAllocator,
    free_ports,
    mesos_labels,
    normalize_app,
    placeholder_ports,
    port_resources,
    read_ip_address,
    read_labels,
    read_networks,
    read_port_definitions,
    read_port_mappings,
    read_ports,
)
from .secret import Secret
from .spec_reader import INVALID_JSON, NOT_VALID, SpecError
from .spec_reader import SpecReader as _Reader
from .task_env import LaunchContext, app_env

if TYPE_CHECKING:
    from .groups import AppList, Group
    from .pods import Pod

__all__ = [
    "App",
    "AppContainer",
    "AppSecretVolume",
    "SecretRef",
    "SpecError",
    "load_spec",
    "parse_app",
]

UNDEFINED_SECRET = "references an undefined secret"
VOLUME_UNDEFINED_SECRET = "volume.secret must refer to an existing secret"
PULL_CONFIG_UNDEFINED_SECRET = "pullConfig.secret must refer to an existing secret"
PULL_CONFIG_DOCKER = "pullConfig is not supported with Docker containerizer"
NO_COMMAND = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
#: Fields that make an object an app rather than a group or an update of an app.
COMMAND_FIELDS = ("cmd", "args", "container")


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _frozen_raw(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(copy.deepcopy(dict(value)))


@attrs.frozen
class SecretRef:
    """``{"secret": NAME}``: an environment value taken from the secret called NAME."""

    secret: str


@attrs.frozen
class AppSecretVolume:
    """``{"containerPath": ..., "secret": NAME}``: a file secret."""

    container_path: str
    secret: str


@attrs.frozen
class AppHostVolume:
    """``{"containerPath", "hostPath", "mode"}``: a host directory (no secret)."""

    container_path: str
    host_path: str
    mode: VolumeMode = VolumeMode.RO


@attrs.frozen
class AppOtherVolume:
    """A persistent (local, reserved) or external (DVDI, CSI) volume: passed to Mesos,
    not acted on by this tool."""

    kind: str
    container_path: str | None = None
    mode: VolumeMode = VolumeMode.RW
    size: float | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_raw)


AppVolume = AppSecretVolume | AppHostVolume | AppOtherVolume


@attrs.frozen
class AppContainer:
    """``container``: its type (MESOS or DOCKER), volumes, Docker image and options."""

    type: ContainerType = ContainerType.DOCKER
    volumes: tuple[AppVolume, ...] = ()
    image: str | None = None
    pull_config: str | None = None
    has_docker: bool = False
    force_pull: bool = False
    privileged: bool = False
    parameters: tuple[tuple[str, str], ...] = ()
    #: ``docker.network`` as written (legacy; translated into the app's networks).
    docker_network: str | None = None


@attrs.frozen
class App:
    """A validated Marathon app spec, the parts of it that run a task with secrets."""

    id: str
    cmd: str | None = None
    args: tuple[str, ...] | None = None
    user: str | None = None
    env: Mapping[str, str | SecretRef] = attrs.field(factory=dict, converter=_frozen)
    secrets: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    container: AppContainer | None = None
    cpus: float = 1.0
    mem: float = 128.0
    disk: float = 0.0
    gpus: int = 0
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    networking: AppNetworking = attrs.field(factory=AppNetworking)
    fetch: tuple[CommandURI, ...] = ()
    health_checks: tuple[MarathonHealthCheck, ...] = ()
    kill_grace_period: float | None = None
    tty: bool = False
    limits: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen)

    def secret(self, name: str) -> Secret:
        """The Mesos secret for secret ``name``: a reference to its ``source``."""
        return secret_for(self.secrets, name)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(part for part in self.id.split("/") if part)

    def to_task_info(
        self,
        task_id: str | None = None,
        *,
        context: LaunchContext | None = None,
        ports: PortAllocator = free_ports,
    ) -> TaskInfo:
        """The TaskInfo Marathon's ``TaskBuilder`` (with a DC/OS-style secrets plugin)
        would launch, field for field.

        ``ports`` takes the host ports (default: free ports of this host), ``context``
        the agent's host name and the app's version. There is no ``agent_id``: the
        scheduler sets it from the offer it accepts.
        """
        check_sources(self.secrets)
        context = context or LaunchContext()
        safe = "_".join(self.path)
        task_id = task_id or f"{safe}.instance-{uuid.uuid4()}._app.1"
        host_ports = ports(self.networking.host_port_requests())
        resources = _resources(self.cpus, self.mem, self.disk, self.gpus)
        resources += port_resources(host_ports)
        resources += [
            persistent_disk(str(v.container_path), v.size, v.mode)
            for v in self._volumes_of("persistent")
        ]
        extra: dict[str, Any] = {
            "resources": resources,
            "discovery": {"name": self.hostname, "visibility": "FRAMEWORK"},
        }
        if self.limits:
            extra["limits"] = {name: {"value": value} for name, value in self.limits.items()}
        if self.labels:
            extra["labels"] = mesos_labels(self.labels)
        assignments = self.networking.port_assignments(host_ports)
        checks = [c.to_mesos(assignments) for c in self.health_checks if c.mesos]
        checks = [c for c in checks if c is not None]
        if checks:
            extra["health_check"] = checks[0]
        if self.kill_grace_period is not None:
            extra["kill_policy"] = kill_policy(
                self.kill_grace_period, "/taskKillGracePeriodSeconds"
            )
        docker = self.container is not None and self.container.type is ContainerType.DOCKER
        marathon_env = app_env(
            task_id=task_id,
            app_id="/" + "/".join(self.path),
            context=context,
            docker_image=self.container.image if docker and self.container else None,
            resources={"cpus": self.cpus, "mem": self.mem, "disk": self.disk},
            gpus=self.gpus,
            labels=self.labels,
        )
        marathon_env.update(self.networking.port_env(host_ports))
        marathon_env["HOST"] = context.host
        return TaskInfo(
            name=self.hostname,
            task_id=task_id,
            command=self._command(marathon_env),
            container=self._container(task_id, host_ports),
            extra=extra,
        )

    @property
    def hostname(self) -> str:
        """``PathId.toHostname``: the id's segments reversed, joined by ``.``."""
        return ".".join(reversed(self.path))

    def _volumes_of(self, kind: str) -> list[AppOtherVolume]:
        if self.container is None:
            return []
        return [
            v for v in self.container.volumes if isinstance(v, AppOtherVolume) and v.kind == kind
        ]

    def _command(self, marathon_env: Mapping[str, str]) -> CommandInfo:
        # TaskBuilder: Marathon's variables, then the spec's, which win.
        variables = [
            Variable.for_value(name, value)
            for name, value in marathon_env.items()
            if name not in self.env
        ]
        for name, value in self.env.items():
            try:
                variables.append(
                    Variable.for_secret(name, self.secret(value.secret))
                    if isinstance(value, SecretRef)
                    else Variable.for_value(name, value)
                )
            except SecretValidationError as error:
                raise SpecError(NOT_VALID, [(f"/env/{name}", error.message)]) from None
        environment = Environment(variables=tuple(variables)) if variables else None
        try:
            return command_info(
                self.cmd,
                self.args,
                environment,
                self.user,
                argv_names_program=self.container is None,
                uris=self.fetch,
            )
        except SecretValidationError as error:
            where = _command_path(error.path, self.args is not None)
            raise SpecError(NOT_VALID, [(where, error.message)]) from None

    def _container(self, task_id: str, host_ports: list[int | None]) -> ContainerInfo | None:
        """``TaskBuilder.computeContainerInfo``: none for a host-networked app without a
        container; a MESOS container for other networks without one."""
        container = self.container
        networking = self.networking
        if container is None:
            if networking.host_networking:
                return None
            container = AppContainer(type=ContainerType.MESOS)
        volumes = []
        for i, volume in enumerate(container.volumes):
            if isinstance(volume, AppOtherVolume):
                if volume.kind == "external" and "external" in volume.raw:
                    volumes.append(Volume.from_json(_external_volume(volume)))
                continue
            try:
                volumes.append(self._volume(volume))
            except SecretValidationError as error:
                field = "hostPath" if error.path == "/host_path" else "containerPath"
                where = f"/container/volumes({i})/{field}"
                raise SpecError(NOT_VALID, [(where, error.message)]) from None
        extra: dict[str, Any] = {}
        docker = container.type is ContainerType.DOCKER
        network_infos = networking.network_infos(host_ports, docker=docker)
        if network_infos:
            extra["network_infos"] = network_infos
        if self.tty:
            extra["tty_info"] = {}
        if docker:
            fields: dict[str, Any] = networking.docker_fields(host_ports)
            fields["privileged"] = container.privileged
            fields["force_pull_image"] = container.force_pull
            parameters = [*container.parameters, ("label", f"MESOS_TASK_ID={task_id}")]
            fields["parameters"] = [{"key": k, "value": v} for k, v in parameters]
            return ContainerInfo(
                type=ContainerType.DOCKER,
                volumes=tuple(volumes),
                docker=DockerInfo(image=container.image or "", extra=fields),
                extra=extra,
            )
        mesos = MesosInfo()
        if container.image:
            pull = self.secret(container.pull_config) if container.pull_config else None
            try:
                image = Image.for_docker(container.image, config=pull)
                ImageReference.parse(container.image)
            except (SecretValidationError, ProvisionerError) as error:
                reason = error.message if isinstance(error, SecretValidationError) else str(error)
                raise SpecError(NOT_VALID, [("/container/docker/image", reason)]) from None
            if container.force_pull:
                image = attrs.evolve(image, cached=False)
            mesos = MesosInfo(image=image)
        return ContainerInfo(
            type=ContainerType.MESOS, volumes=tuple(volumes), mesos=mesos, extra=extra
        )

    def _volume(self, volume: AppSecretVolume | AppHostVolume) -> Volume:
        if isinstance(volume, AppHostVolume):
            # Marathon passes the path as written (VolumeSerializer.toMesos).
            return Volume(
                container_path=volume.container_path, mode=volume.mode, host_path=volume.host_path
            )
        path = mount_path(volume.container_path)
        # Marathon converts every app secret volume read-only.
        return Volume.for_secret(path, self.secret(volume.secret), VolumeMode.RO)


def command_info(
    shell: str | None,
    argv: tuple[str, ...] | None,
    environment: Environment | None,
    user: str | None,
    *,
    argv_names_program: bool,
    uris: tuple[CommandURI, ...] = (),
) -> CommandInfo:
    """Marathon's command (``TaskBuilder.commandInfo``, ``TaskGroupBuilder``): a
    non-empty ``shell`` runs with a shell; otherwise there is none, ``argv`` are the
    arguments, and the value is ``argv[0]`` only where ``argv_names_program`` (an app
    without a container, a pod container with ``overrideEntrypoint``). Without a value,
    an image's own entrypoint or command runs."""
    if shell:
        return CommandInfo(value=shell, shell=True, environment=environment, user=user, uris=uris)
    return CommandInfo(
        value=argv[0] if argv and argv_names_program else None,
        shell=False,
        arguments=argv or (),
        environment=environment,
        user=user,
        uris=uris,
    )


def _command_path(path: str, args: bool) -> str:
    """Where in the app a CommandInfo field comes from: ``/arguments/1`` is ``/args(1)``."""
    if path == "/value":
        return "/args(0)" if args else "/cmd"
    if path.startswith("/arguments/"):
        return f"/args({path.removeprefix('/arguments/')})"
    return path


def check_sources(secrets: Mapping[str, str]) -> None:
    """Every secret's ``source`` must name a store path Mesos can carry: the error is
    at ``/secrets/NAME/source``, where the bad value is, not where it is used."""
    for name in secrets:
        try:
            secret_for(secrets, name)
        except SecretValidationError as error:
            raise SpecError(NOT_VALID, [(f"/secrets/{name}/source", error.message)]) from None


def secret_for(secrets: Mapping[str, str], name: str) -> Secret:
    """A spec's secret ``name`` as Mesos sees it: a reference to its ``source``
    (DC/OS behaviour), ``path@key`` naming one key."""
    path, key = split_source(secrets[name])
    return Secret.for_reference(path, key)


#: The longest grace period Mesos holds: ``DurationInfo.nanoseconds`` is an int64.
MAX_GRACE_PERIOD_S = (2**63 - 1) // 10**9


def kill_policy(seconds: float, path: str) -> dict[str, Any]:
    """A ``KillPolicy`` of ``seconds``: one Mesos cannot hold is not valid (at ``path``)."""
    if seconds > MAX_GRACE_PERIOD_S:
        message = f"must be at most {MAX_GRACE_PERIOD_S} seconds (Mesos' int64 nanoseconds)"
        raise SpecError(NOT_VALID, [(path, message)])
    return {"grace_period": {"nanoseconds": int(seconds * 1e9)}}


def mount_path(path: str) -> str:
    """A container path as Marathon means it: ``.//mysecret`` is ``mysecret``.

    Empty and ``.`` components go; ``..`` stays, for the model to refuse.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        return path
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def _resources(cpus: float, mem: float, disk: float, gpus: float = 0) -> list[dict[str, Any]]:
    return [
        {"name": name, "type": "SCALAR", "scalar": {"value": value}}
        for name, value in (("cpus", cpus), ("mem", mem), ("disk", disk), ("gpus", gpus))
        if value
    ]


def persistent_disk(container_path: str, size: float | None, mode: VolumeMode) -> dict[str, Any]:
    """A persistent volume: disk reserved for the task and mounted at ``container_path``
    (``PersistentVolumeMatcher``; the persistence id is the reservation's). Apps mount
    it at their containerPath, pods' executors at the volume's name."""
    return {
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": size or 0.0},
        "disk": {
            "persistence": {"id": f"{container_path}#{uuid.uuid4()}"},
            "volume": {"container_path": container_path, "mode": mode.name},
        },
    }


def _external_volume(volume: AppOtherVolume) -> dict[str, Any]:
    """A DVDI external volume as Marathon's provider builds it: a Docker volume."""
    external = volume.raw.get("external") or {}
    options = external.get("options") or {}
    docker_volume: dict[str, Any] = {
        "driver": options.get("dvdi/driver", "rexray"),
        "name": str(external.get("name", "")),
    }
    return {
        "container_path": volume.container_path,
        "mode": volume.mode.name,
        "source": {"type": "DOCKER_VOLUME", "docker_volume": docker_volume},
    }


# --- reading -------------------------------------------------------------------------


def parse_app(obj: Any, *, strict: bool = False) -> App:
    """Validate a Marathon app (a decoded JSON object) and return it.

    Raises :class:`SpecError`: ``Invalid JSON`` for structure, ``Object is not valid``
    for Marathon's rules, each with every violation found; then our stricter rules
    (container paths, variable names), which ``run`` and ``task-info`` need. ``strict``
    adds Metronome's rules.
    """
    read = _Reader()
    root = read.obj(obj, "")
    if root is None:
        raise SpecError(INVALID_JSON, read.errors)
    app_id = read_path_id(read, root)
    cmd = read.min1(root, "cmd", "")
    args = _read_args(read, root.get("args"))
    user = read.string(root, "user", "")
    env = _read_env(read, root.get("env"))
    secrets = _read_secrets(read, root.get("secrets"))
    container = _read_container(read, root.get("container"))
    cpus, mem, disk, gpus, _instances = (
        read.number(root, k, d)
        for k, d in (("cpus", 1.0), ("mem", 128.0), ("disk", 0.0), ("gpus", 0), ("instances", 1))
    )
    labels = read_labels(read, root.get("labels"), "/labels")
    networks = read_networks(read, root.get("networks"))
    port_definitions = read_port_definitions(read, root.get("portDefinitions"))
    ports = read_ports(read, root.get("ports"))
    raw_container = _object(root.get("container"))
    raw_docker = _object(raw_container.get("docker"))
    container_mappings = read_port_mappings(
        read, raw_container.get("portMappings"), "/container/portMappings"
    )
    docker_mappings = read_port_mappings(
        read, raw_docker.get("portMappings"), "/container/docker/portMappings"
    )
    ip_address = read_ip_address(read, root.get("ipAddress"))
    fetch = read_artifacts(read, root.get("fetch"), "/fetch")
    uris = read_uris(read, root.get("uris"))
    require_ports = bool(read.boolean(root, "requirePorts", ""))
    tty = bool(read.boolean(root, "tty", ""))
    kill_grace = read.number(root, "taskKillGracePeriodSeconds", -1.0)
    limits = _read_limits(read, root.get("resourceLimits"))
    has_ports = bool(port_definitions or ports or container_mappings or docker_mappings)
    health_checks = read_app_health_checks(read, root.get("healthChecks"), has_ports=has_ports)
    if read.errors:
        raise SpecError(INVALID_JSON, read.errors)
    assert app_id is not None
    # Marathon stops at the deprecated fields' violations; the rest are reported too,
    # so that one round of fixes suffices.
    old_api = _old_api_violations(
        root, container=container, networks=networks, fetch=fetch, uris=uris, ports=ports
    )
    networking = (
        AppNetworking()
        if old_api
        else normalize_app(
            networks=networks,
            ip_address=ip_address,
            docker_network=container.docker_network if container else None,
            port_definitions=port_definitions,
            ports=ports,
            container=container is not None,
            container_port_mappings=container_mappings,
            docker_port_mappings=docker_mappings,
            require_ports=require_ports,
        )
    )
    app = App(
        id=app_id,
        cmd=cmd,
        args=args,
        user=user,
        env=env,
        secrets=secrets,
        container=container,
        cpus=cpus,
        mem=mem,
        disk=disk,
        gpus=int(gpus),
        labels=labels,
        networking=networking,
        fetch=fetch if fetch else legacy_fetch(uris or ()),
        health_checks=health_checks,
        kill_grace_period=kill_grace if kill_grace >= 0 else None,
        tty=tty,
        limits=limits,
    )
    violations = old_api + _violations(app, root)
    if strict:
        violations += _strict_violations(app)
    if violations:
        raise SpecError(NOT_VALID, violations)
    ours = label_violations(app.labels)  # our labels, which Marathon passes on
    if ours:
        raise SpecError(NOT_VALID, ours)
    app.to_task_info(ports=placeholder_ports)  # our stricter rules, with their paths
    return app


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


#: Marathon's ``strings.PathId``, checked as the spec is read.
PATH_ID = re.compile(
    r"^(\/?((\.\.)|(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9]))?($|\/))+$"
)


def read_path_id(read: _Reader, root: Mapping[str, Any], key: str = "id") -> str | None:
    """A required ``id`` (Play JSON's wording when it is missing), matching ``PathId``."""
    if root.get(key) is None:
        shown = json.dumps(dict(root), separators=(",", ":"), ensure_ascii=False)
        read.fail(f"/{key}", f"'{key}' is undefined on object: {shown}")
        return None
    value = read.min1(root, key, "")
    if value is not None and not PATH_ID.match(value):
        read.fail(f"/{key}", "error.pattern")
        return None
    return value


def _read_limits(read: _Reader, raw: Any) -> dict[str, float]:
    """``resourceLimits``: ``cpus``, ``mem``, a number or ``"unlimited"``."""
    limits: dict[str, float] = {}
    if raw is None or read.obj(raw, "/resourceLimits") is None:
        return limits
    for name in ("cpus", "mem"):
        value = raw.get(name)
        if value == "unlimited":
            limits[name] = math.inf
        elif value is not None:
            limits[name] = read.number(raw, name, 0.0, "/resourceLimits")
    return limits


def _old_api_violations(
    root: Mapping[str, Any],
    *,
    container: AppContainer | None,
    networks: tuple[Any, ...],
    fetch: tuple[CommandURI, ...] | None,
    uris: tuple[str, ...] | None,
    ports: tuple[int, ...] | None,
) -> list[tuple[str, str]]:
    """``AppValidation.validateOldAppAPI``: the deprecated fields, before they are
    translated into the canonical ones."""
    found: list[tuple[str, str]] = []
    ip_address = root.get("ipAddress")
    if container is not None and container.type is ContainerType.MESOS:
        if container.docker_network is not None:
            found.append(("/container/docker/network", "must be empty"))
        if container.parameters:
            found.append(("/container/docker/parameters", "must be empty"))
    docker = container is not None and container.type is ContainerType.DOCKER
    if isinstance(ip_address, dict) and ip_address.get("discovery") and docker:
        found.append(("/ipAddress", "ipAddress/discovery is not allowed for Docker containers"))
    if uris:
        found += [(f"/uris({i})", INVALID_URI) for i, u in enumerate(uris) if not java_uri_valid(u)]
        if fetch:
            found.append(("/uris", "may not be set in conjunction with fetch"))
    if container is not None and container.docker_network is not None and networks:
        found.append(("/", "must not specify both container.docker.network and networks"))
    if ip_address is not None and networks:
        found.append(("/", "must not specify both networks and ipAddress"))
    unique = [p for p in ports or () if p != 0]
    if len(set(unique)) != len(unique):
        found.append(("/", "ports must be unique"))
    port_definitions = root.get("portDefinitions")
    if ip_address is not None and (ports or port_definitions):
        found.append(("/", "cannot specify both an IP address and port"))
    if (
        ports
        and port_definitions
        and [d.get("port", 0) if isinstance(d, dict) else None for d in port_definitions]
        != list(ports)
    ):
        found.append(("/", "cannot specify both ports and port definitions"))
    found += uri_violations(fetch or (), "/fetch")
    return found


def unused_secrets(secrets: Mapping[str, str], used: set[str]) -> list[tuple[str, str]]:
    """Metronome's rule: every declared secret must be used."""
    unused = sorted(set(secrets) - used)
    if not unused:
        return []
    return [
        (
            "/secrets",
            f"The following secrets are defined, but not referenced: {', '.join(unused)}. "
            "Please remove them from the secrets field.",
        )
    ]


def _strict_violations(app: App) -> list[tuple[str, str]]:
    used = {v.secret for v in app.env.values() if isinstance(v, SecretRef)}
    found = []
    if app.container is not None:
        used |= {v.secret for v in app.container.volumes if isinstance(v, AppSecretVolume)}
        if app.container.pull_config:
            used.add(app.container.pull_config)
        secret_volumes = [v for v in app.container.volumes if isinstance(v, AppSecretVolume)]
        if secret_volumes and app.container.type is ContainerType.DOCKER:
            found.append(("/container/volumes", "File based secrets are only supported by UCR"))
    return unused_secrets(app.secrets, used) + found


def _read_args(read: _Reader, raw: Any) -> tuple[str, ...] | None:
    if raw is None or not isinstance(raw, list):
        read.array(raw, "/args")  # reports a non-array; absent is fine
        return None
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            read.fail(f"/args({i})", "error.expected.jsstring")
    return tuple(item for item in raw if isinstance(item, str))


#: Marathon's PathId segments (``PathId.ID_PATH_SEGMENT_PATTERN``), and its message.
ID_SEGMENT = (
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$"
)
_ID_SEGMENT = re.compile(ID_SEGMENT.removeprefix("^").removesuffix("$"))


def id_violations(spec_id: str) -> list[tuple[str, str]]:
    """Each segment of an app or pod id must match Marathon's pattern."""
    parts = [part for part in spec_id.split("/") if part]
    if all(_ID_SEGMENT.fullmatch(part) for part in parts):
        return []
    return [("/id", f"must fully match regular expression '{ID_SEGMENT}'")]


#: Pod environment names (``EnvVars`` in Marathon's RAML); app names are free (``LegacyEnvVars``).
POD_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,253}?$")


def _read_env(
    read: _Reader, raw: Any, path: str = "/env", *, pattern: re.Pattern[str] | None = None
) -> dict[str, str | SecretRef]:
    env: dict[str, str | SecretRef] = {}
    if raw is None or read.obj(raw, path) is None:
        return env
    for name, value in raw.items():
        if pattern is not None and not pattern.fullmatch(name):
            read.fail(f"{path}/{name}", "error.pattern")
            continue
        if isinstance(value, str):
            env[name] = value
        elif isinstance(value, dict):
            secret = read.string(value, "secret", f"{path}/{name}", required=True)
            if secret is not None:
                env[name] = SecretRef(secret)
        else:
            read.fail(f"{path}/{name}", "error.expected.jsstring")
    return env


def _read_secrets(read: _Reader, raw: Any) -> dict[str, str]:
    secrets: dict[str, str] = {}
    if raw is None or read.obj(raw, "/secrets") is None:
        return secrets
    for name, definition in raw.items():
        if read.obj(definition, f"/secrets/{name}") is None:
            continue
        source = read.min1(definition, "source", f"/secrets/{name}", required=True)
        if source is not None:
            secrets[name] = source
    return secrets


def _read_container(read: _Reader, raw: Any) -> AppContainer | None:  # noqa: PLR0912
    if raw is None or read.obj(raw, "/container") is None:
        return None
    kind = ContainerType.DOCKER
    if raw.get("type") is not None:
        name = raw["type"]
        if isinstance(name, str) and name.upper() in ("MESOS", "DOCKER"):
            kind = ContainerType[name.upper()]
        else:
            read.fail("/container/type", "error.expected.validenumvalue")
    volumes: list[AppVolume] = []
    for i, volume in enumerate(read.array(raw.get("volumes"), "/container/volumes")):
        path = f"/container/volumes({i})"
        if read.obj(volume, path) is None:
            continue
        parsed = _read_volume(read, volume, path)
        if parsed is not None:
            volumes.append(parsed)
    image = pull_config = network = None
    force_pull = privileged = False
    parameters: list[tuple[str, str]] = []
    docker = raw.get("docker")
    where = "/container/docker"
    if docker is not None and read.obj(docker, where) is not None:
        image = read.min1(docker, "image", where, required=True)
        pull = docker.get("pullConfig")
        if pull is not None and read.obj(pull, f"{where}/pullConfig") is not None:
            pull_config = read.min1(pull, "secret", f"{where}/pullConfig", required=True)
        network = read.string(docker, "network", where)
        if network is not None and network not in ("BRIDGE", "HOST", "NONE", "USER"):
            read.fail(f"{where}/network", "error.unknown.enum.literal")
            network = None
        force_pull = bool(read.boolean(docker, "forcePullImage", where))
        privileged = bool(read.boolean(docker, "privileged", where))
        for i, item in enumerate(read.array(docker.get("parameters"), f"{where}/parameters")):
            here = f"{where}/parameters({i})"
            if read.obj(item, here) is None:
                continue
            key = read.string(item, "key", here, required=True)
            value = read.string(item, "value", here, required=True)
            if key is not None and value is not None:
                parameters.append((key, value))
    return AppContainer(
        type=kind,
        volumes=tuple(volumes),
        image=image,
        pull_config=pull_config,
        has_docker=isinstance(docker, dict),
        force_pull=force_pull,
        privileged=privileged,
        parameters=tuple(parameters),
        docker_network=network,
    )


def _read_volume(read: _Reader, volume: dict[str, Any], path: str) -> AppVolume | None:
    """Marathon tries persistent, external, secret, then host (``marathon.md`` §1.4)."""
    for kind in ("persistent", "external"):
        if isinstance(volume.get(kind), dict):
            mode = read.string(volume, "mode", path)
            size = read.number(volume[kind], "size", 0.0, f"{path}/{kind}")
            if kind == "external":  # ExternalVolumeInfo.options: a map of strings
                read.optional_obj(volume[kind].get("options"), f"{path}/{kind}/options")
            return AppOtherVolume(
                kind,
                container_path=read.min1(volume, "containerPath", path, required=True),
                mode=VolumeMode.RO if (mode or "").upper() == "RO" else VolumeMode.RW,
                size=size,
                raw=volume,
            )
    container_path = read.min1(volume, "containerPath", path, required=True)
    if isinstance(volume.get("secret"), str) and volume["secret"]:
        return AppSecretVolume(container_path, volume["secret"]) if container_path else None
    host_path = read.min1(volume, "hostPath", path, required=True)
    mode = read.string(volume, "mode", path, required=True)
    if mode is not None and mode.upper() not in ("RO", "RW"):
        read.fail(f"{path}/mode", "error.expected.validenumvalue")
        return None
    if container_path and host_path and mode:
        return AppHostVolume(container_path, host_path, VolumeMode[mode.upper()])
    return None


def _violations(app: App, root: Mapping[str, Any]) -> list[tuple[str, str]]:  # noqa: PLR0912
    """Marathon's rules (``reference/marathon.md`` §2.3), secrets feature on."""
    found: list[tuple[str, str]] = id_violations(app.id)
    if "" in app.secrets:
        found.append(("/secrets/", "must not be empty"))
    for i, name in enumerate(app.env):
        if name == "":
            found.append((f"/env/keys({i})", "must not be empty"))
    for name, value in app.env.items():
        if isinstance(value, SecretRef) and value.secret not in app.secrets:
            found.append((f"/env/{name}/secret", UNDEFINED_SECRET))
    container = app.container
    if container is not None:
        for i, volume in enumerate(container.volumes):
            if isinstance(volume, AppSecretVolume) and volume.secret not in app.secrets:
                found.append((f"/container/volumes({i})", VOLUME_UNDEFINED_SECRET))
        if container.type is ContainerType.DOCKER and not container.has_docker:
            found.append(("/container/docker", "not defined"))
        docker = root.get("container", {}).get("docker")
        if isinstance(docker, dict) and docker.get("credential") is not None:
            found.append(("/container/docker/credential", "must be empty"))
        if container.pull_config is not None:
            if container.type is ContainerType.DOCKER:
                found.append(("/container/docker/pullConfig", PULL_CONFIG_DOCKER))
            elif container.pull_config not in app.secrets:
                found.append(("/container/docker/pullConfig", PULL_CONFIG_UNDEFINED_SECRET))
    has_cmd, has_args = bool(app.cmd), bool(app.args)
    has_container = container is not None and (
        container.has_docker or container.type is ContainerType.MESOS
    )
    if not ((has_cmd != has_args) or (not (has_cmd and has_args) and has_container)):
        found.append(("/", NO_COMMAND))
    mesos_checks = [c for c in app.health_checks if c.mesos and c.protocol != "COMMAND"]
    if len(mesos_checks) > 1:
        found.append(("/", "AppDefinition can contain at most one Mesos health check"))
    return found


def load_spec(text: str | bytes, *, strict: bool = False) -> App | Pod | Group | AppList:
    """Read a spec from JSON text: an app, a pod (it has ``containers``), a group (it
    has ``apps`` or ``groups``, and no command) or an array of apps.

    Unparseable text is Marathon's ``Invalid JSON``; a partial update is refused as
    one (:func:`~mesos_secrets.groups.partial_update`). See :func:`parse_app`,
    :func:`~mesos_secrets.pods.parse_pod`, :func:`~mesos_secrets.groups.parse_group`
    and :func:`~mesos_secrets.groups.parse_app_list` for the rest.
    """
    # Pods and groups build on this module: each is loaded for a spec that may be one.
    try:
        obj = loads(text)
    except SecretValidationError as error:
        reason = error.message.removeprefix(f"{INVALID_JSON}: ")
        raise SpecError(INVALID_JSON, [(error.path or "/", reason)]) from None
    if isinstance(obj, list):
        from .groups import parse_app_list  # noqa: PLC0415

        return parse_app_list(obj, strict=strict)
    if isinstance(obj, dict) and "containers" in obj:
        from .pods import parse_pod  # noqa: PLC0415

        return parse_pod(obj, strict=strict)
    # An object with an id and a command is an app: neither a group nor a partial update.
    if not (
        isinstance(obj, dict)
        and obj.get("id") is not None
        and any(obj.get(field) is not None for field in COMMAND_FIELDS)
    ):
        from .groups import is_group, parse_group, partial_update  # noqa: PLC0415

        if is_group(obj):
            return parse_group(obj, strict=strict)
        found = partial_update(obj)
        if found is not None:
            raise SpecError(NOT_VALID, [found])
    return parse_app(obj, strict=strict)
