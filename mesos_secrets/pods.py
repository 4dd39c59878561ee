"""Marathon pods: read and validate as Marathon does, convert to a Mesos TaskGroupInfo.

A pod is containers sharing an environment, secrets and volumes::

    {"id": "/pod",
     "environment": {"DB_PW": {"secret": "db"}},
     "secrets": {"db": {"source": "/myapp/db@password"}},
     "volumes": [{"name": "creds", "secret": "db"}],
     "containers": [{"name": "web", "resources": {"cpus": 0.1, "mem": 32},
                     "exec": {"command": {"shell": "./serve"}},
                     "environment": {"MODE": "prod"},
                     "volumeMounts": [{"name": "creds", "mountPath": "secrets/pw"}]}]}

Each container becomes a task of the group. Its environment is the pod's, then its own
on top (``TaskGroupBuilder``'s order). A secret volume becomes a read-only SECRET
``Volume`` in each task that mounts it, at the mount's ``mountPath``. The rules and
messages are Marathon's ``PodsValidation`` (``reference/marathon.md`` §2.4).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .artifacts import read_artifacts, uri_violations
from .errors import ProvisionerError, SecretValidationError
from .health_checks import (
    MarathonHealthCheck,
    pod_health_check_violations,
    read_pod_health_check,
)
from .image_reference import ImageReference
from .labels import POD, TASK, label_violations
from .marathon import (
    POD_ENV_NAME,
    PULL_CONFIG_UNDEFINED_SECRET,
    UNDEFINED_SECRET,
    VOLUME_UNDEFINED_SECRET,
    SecretRef,
    _read_env,
    _read_secrets,
    _resources,
    check_sources,
    command_info,
    id_violations,
    kill_policy,
    mount_path,
    persistent_disk,
    secret_for,
    unused_secrets,
)
from .mesos import (
    CommandInfo,
    CommandURI,
    ContainerInfo,
    ContainerType,
    Environment,
    ExecutorInfo,
    Image,
    MesosInfo,
    SourceType,
    TaskGroupInfo,
    TaskInfo,
    Variable,
    Volume,
    VolumeMode,
    VolumeSource,
)
from .networking import (
    CONTAINER,
    DEFAULT_NETWORK,
    Endpoint,
    Network,
    PortAllocator,
    endpoint_env,
    free_ports,
    mesos_labels,
    normalize_endpoints,
    placeholder_ports,
    pod_network_infos,
    port_resources,
    read_endpoints,
    read_labels,
    read_networks,
)
from .spec_reader import INVALID_JSON, NOT_VALID, SpecError
from .spec_reader import SpecReader as _Reader
from .task_env import LaunchContext, labels_env, pod_task_env

__all__ = ["Pod", "PodContainer", "PodVolume", "PodVolumeMount", "parse_pod"]

#: Marathon's ``strings.Name``: container, volume and mount names.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class PodVolumeMount:
    name: str
    mount_path: str
    read_only: bool | None = None


@attrs.frozen
class PodVolume:
    """A pod volume: ``kind`` is secret, host, persistent or ephemeral."""

    name: str
    kind: str
    secret: str | None = None
    host: str | None = None
    size: float | None = None


@attrs.frozen
class PodContainer:
    name: str
    shell: str | None = None
    argv: tuple[str, ...] | None = None
    #: ``exec.overrideEntrypoint``: ``argv[0]`` is the program, not the image's entrypoint.
    override_entrypoint: bool = False
    environment: Mapping[str, str | SecretRef] = attrs.field(factory=dict, converter=_frozen)
    image: str | None = None
    pull_config: str | None = None
    force_pull: bool = False
    mounts: tuple[PodVolumeMount, ...] = ()
    user: str | None = None
    cpus: float = 1.0
    mem: float = 128.0
    disk: float = 0.0
    gpus: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    artifacts: tuple[CommandURI, ...] = ()
    health_check: MarathonHealthCheck | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    kill_grace_period: float | None = None
    tty: bool = False


@attrs.frozen
class Pod:
    """A validated Marathon pod."""

    id: str
    user: str | None = None
    environment: Mapping[str, str | SecretRef] = attrs.field(factory=dict, converter=_frozen)
    secrets: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    volumes: tuple[PodVolume, ...] = ()
    containers: tuple[PodContainer, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    networks: tuple[Network, ...] = ()
    #: ``executorResources``: cpus, mem, disk, gpus.
    executor_resources: tuple[float, float, float, int] = (0.1, 32.0, 10.0, 0)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(part for part in self.id.split("/") if part)

    def to_task_group(self, instance: str | None = None) -> TaskGroupInfo:
        """The TaskGroupInfo a DC/OS-style secrets plugin would launch: a task per container."""
        return self.to_launch_group(instance)[1]

    def to_launch_group(
        self,
        instance: str | None = None,
        *,
        context: LaunchContext | None = None,
        ports: PortAllocator = free_ports,
    ) -> tuple[ExecutorInfo, TaskGroupInfo]:
        """What Marathon's ``TaskGroupBuilder`` launches: the default executor (the pod's
        networks, labels, executor resources, host ports and persistent volumes) and a
        task per container. ``ports`` takes the host ports (default: free ports here)."""
        check_sources(self.secrets)
        context = context or LaunchContext()
        safe = "_".join(self.path)
        unique = uuid.uuid4()
        instance = instance or f"{safe}.instance-{unique}"
        executor_id = f"instance-{safe}.{unique}"
        endpoints = [e for c in self.containers for e in c.endpoints]
        host_ports = ports([e.host_port for e in endpoints])
        env = endpoint_env(self.networks, endpoints, host_ports)
        offset = 0
        tasks = []
        for i, container in enumerate(self.containers):
            own = host_ports[offset : offset + len(container.endpoints)]
            offset += len(container.endpoints)
            build = _TaskBuild(instance, executor_id, context, env, own)
            tasks.append(self._task(i, container, build))
        return self._executor(executor_id, host_ports), TaskGroupInfo(tasks=tuple(tasks))

    def _executor(self, executor_id: str, host_ports: list[int | None]) -> ExecutorInfo:
        cpus, mem, disk, gpus = self.executor_resources
        resources = _resources(cpus, mem, disk, gpus) + port_resources(host_ports)
        for volume in self.volumes:
            if volume.kind == "persistent":
                resources.append(persistent_disk(volume.name, volume.size, VolumeMode.RW))
        container: dict[str, Any] = {"type": "MESOS", "linux_info": {"share_cgroups": False}}
        network_infos = pod_network_infos(
            self.networks, [e for c in self.containers for e in c.endpoints], host_ports
        )
        if network_infos:
            container["network_infos"] = network_infos
        return ExecutorInfo.from_json(
            {
                "executor_id": {"value": executor_id},
                "type": "DEFAULT",
                "resources": resources,
                "container": container,
                "labels": mesos_labels(self.labels),
            }
        )

    def _command(
        self, index: int, container: PodContainer, environment: Environment | None
    ) -> CommandInfo:
        try:
            return command_info(
                container.shell,
                container.argv,
                environment,
                container.user or self.user,
                argv_names_program=container.override_entrypoint,
                uris=container.artifacts,
            )
        except SecretValidationError as error:
            where = self._command_path(index, container, error.path)
            raise SpecError(NOT_VALID, [(where, error.message)]) from None

    @staticmethod
    def _command_path(index: int, container: PodContainer, path: str) -> str:
        """Where in the pod a CommandInfo field comes from."""
        here = f"/containers({index})"
        if path == "/user":
            return f"{here}/user" if container.user else "/user"
        if container.argv is None:
            return f"{here}/exec/command/shell"
        argument = 0 if path == "/value" else int(path.rpartition("/")[2])
        return f"{here}/exec/command/argv({argument})"

    def _marathon_env(self, container: PodContainer, build: _TaskBuild) -> dict[str, str]:
        """``HOST``, the task's context, the labels' and the endpoints' variables."""
        env = {"HOST": build.context.host}
        env.update(
            pod_task_env(
                task_id=build.task_id(container),
                executor_id=build.executor_id,
                pod_id="/" + "/".join(self.path),
                container=container.name,
                context=build.context,
                resources={"cpus": container.cpus, "mem": container.mem, "disk": container.disk},
                gpus=container.gpus,
            )
        )
        env.update(labels_env({**self.labels, **container.labels}))
        env.update(build.endpoint_env)
        return env

    def _task(self, index: int, container: PodContainer, build: _TaskBuild) -> TaskInfo:
        merged: dict[str, str | SecretRef] = dict(self.environment)
        merged.update(container.environment)  # the container's own win
        marathon = self._marathon_env(container, build)
        # TaskGroupBuilder: Marathon's variables win over the spec's plain ones.
        merged.update(
            {k: v for k, v in marathon.items() if not isinstance(merged.get(k), SecretRef)}
        )
        variables = []
        for name, value in merged.items():
            where = (
                f"/containers({index})/environment/{name}"
                if name in container.environment
                else f"/environment/{name}"
            )
            try:
                variables.append(
                    Variable.for_secret(name, secret_for(self.secrets, value.secret))
                    if isinstance(value, SecretRef)
                    else Variable.for_value(name, value)
                )
            except SecretValidationError as error:
                raise SpecError(NOT_VALID, [(where, error.message)]) from None
        environment = Environment(variables=tuple(variables)) if variables else None
        command = self._command(index, container, environment)
        return TaskInfo(
            name=container.name,
            task_id=build.task_id(container),
            command=command,
            container=self._container(index, container),
            extra=self._task_extra(index, container, build),
        )

    def _container(self, index: int, container: PodContainer) -> ContainerInfo:
        volumes = []
        by_name = {v.name: v for v in self.volumes}
        for j, mount in enumerate(container.mounts):
            volume = by_name[mount.name]
            path = mount_path(mount.mount_path)
            where = f"/containers({index})/volumeMounts({j})/mountPath"
            try:
                if volume.kind == "secret" and volume.secret is not None:
                    volumes.append(
                        Volume.for_secret(
                            path, secret_for(self.secrets, volume.secret), VolumeMode.RO
                        )
                    )
                elif volume.kind == "host" and volume.host is not None:
                    mode = VolumeMode.RO if mount.read_only else VolumeMode.RW
                    volumes.append(Volume(container_path=path, mode=mode, host_path=volume.host))
                elif volume.kind == "ephemeral":
                    # Marathon: a directory of the executor's sandbox, shared by the pod.
                    mode = VolumeMode.RO if mount.read_only else VolumeMode.RW
                    source = VolumeSource(
                        type=SourceType.SANDBOX_PATH,
                        extra={
                            "sandbox_path": {"type": "PARENT", "path": f"volumes/{volume.name}"}
                        },
                    )
                    volumes.append(Volume(container_path=path, mode=mode, source=source))
                elif volume.kind == "persistent":
                    # Reserved by the framework; the executor's sandbox holds it.
                    mode = VolumeMode.RO if mount.read_only else VolumeMode.RW
                    source = VolumeSource(
                        type=SourceType.SANDBOX_PATH,
                        extra={"sandbox_path": {"type": "PARENT", "path": volume.name}},
                    )
                    volumes.append(Volume(container_path=path, mode=mode, source=source))
            except SecretValidationError as error:
                if error.path == "/host_path":
                    where = f"/volumes({list(by_name).index(volume.name)})/host"
                raise SpecError(NOT_VALID, [(where, error.message)]) from None
        mesos = None
        if container.image:
            pull = (
                secret_for(self.secrets, container.pull_config) if container.pull_config else None
            )
            try:
                image = Image.for_docker(container.image, config=pull)
                ImageReference.parse(container.image)
            except (SecretValidationError, ProvisionerError) as error:
                reason = error.message if isinstance(error, SecretValidationError) else str(error)
                where = f"/containers({index})/image/id"
                raise SpecError(NOT_VALID, [(where, reason)]) from None
            if container.force_pull:
                image = attrs.evolve(image, cached=False)
            mesos = MesosInfo(image=image)
        container_extra: dict[str, Any] = {"linux_info": {"share_cgroups": False}}
        if container.tty:
            container_extra["tty_info"] = {}
        return ContainerInfo(
            type=ContainerType.MESOS, volumes=tuple(volumes), mesos=mesos, extra=container_extra
        )

    def _task_extra(self, index: int, container: PodContainer, build: _TaskBuild) -> dict[str, Any]:
        """Resources, discovery, labels, the health check and the kill policy."""
        extra: dict[str, Any] = {
            "resources": _resources(container.cpus, container.mem, container.disk, container.gpus),
            "discovery": {"name": ".".join(reversed(self.path)), "visibility": "FRAMEWORK"},
        }
        if container.labels:
            extra["labels"] = mesos_labels(container.labels)
        if container.health_check is not None:
            host = any(n.mode == "host" for n in self.networks)
            assignments = [
                (e.name, (p if host else e.container_port) or e.container_port or p)
                for e, p in zip(container.endpoints, build.host_ports, strict=False)
            ]
            check = container.health_check.to_mesos(assignments)
            if check is not None:
                extra["health_check"] = check
        if container.kill_grace_period is not None:
            where = f"/containers({index})/lifecycle/killGracePeriodSeconds"
            extra["kill_policy"] = kill_policy(container.kill_grace_period, where)
        return extra


@attrs.frozen
class _TaskBuild:
    """What every task of one launch shares: ids, context, the endpoints' variables;
    ``host_ports`` are the ones of this task's endpoints."""

    instance: str
    executor_id: str
    context: LaunchContext
    endpoint_env: Mapping[str, str]
    host_ports: list[int | None]

    def task_id(self, container: PodContainer) -> str:
        return f"{self.instance}.{container.name}"


def parse_pod(obj: Any, *, strict: bool = False) -> Pod:
    """Validate a Marathon pod (a decoded JSON object) and return it; :class:`SpecError` if not.

    ``strict`` adds Metronome's rule that every declared secret is used.
    """
    read = _Reader()
    root = read.obj(obj, "")
    if root is None:
        raise SpecError(INVALID_JSON, read.errors)
    pod_id = read.min1(root, "id", "", required=True)
    user = read.string(root, "user", "")
    environment = _read_env(read, root.get("environment"), "/environment", pattern=POD_ENV_NAME)
    secrets = _read_secrets(read, root.get("secrets"))
    volumes = _read_volumes(read, root.get("volumes"))
    networks = read_networks(read, root.get("networks"))
    containers = _read_containers(read, root.get("containers"), networks)
    labels = read_labels(read, root.get("labels"), "/labels")
    executor = read.optional_obj(root.get("executorResources"), "/executorResources")
    executor_resources = (
        read.number(executor, "cpus", 0.1, "/executorResources"),
        read.number(executor, "mem", 32.0, "/executorResources"),
        read.number(executor, "disk", 10.0, "/executorResources"),
        int(read.number(executor, "gpus", 0, "/executorResources")),
    )
    if read.errors:
        raise SpecError(INVALID_JSON, read.errors)
    assert pod_id is not None
    pod = Pod(
        id=pod_id,
        user=user,
        environment=environment,
        secrets=secrets,
        volumes=tuple(volumes),
        containers=tuple(containers),
        labels=labels,
        networks=tuple(
            attrs.evolve(n, name=DEFAULT_NETWORK) if n.mode == CONTAINER and n.name is None else n
            for n in networks
        ),
        executor_resources=executor_resources,
    )
    violations = _violations(pod)
    if strict:
        used = {v.secret for v in pod.environment.values() if isinstance(v, SecretRef)}
        used |= {v.secret for v in pod.volumes if v.secret}
        for container in pod.containers:
            used |= {v.secret for v in container.environment.values() if isinstance(v, SecretRef)}
            if container.pull_config:
                used.add(container.pull_config)
        violations += unused_secrets(pod.secrets, used)
    if violations:
        raise SpecError(NOT_VALID, violations)
    ours = label_violations(pod.labels, "/labels", POD)  # which Marathon passes on
    for i, container in enumerate(pod.containers):
        ours += label_violations(container.labels, f"/containers({i})/labels", TASK)
    if ours:
        raise SpecError(NOT_VALID, ours)
    # Our stricter rules (paths, names) are found here, with their paths.
    pod.to_launch_group(ports=placeholder_ports)
    return pod


def _name(read: _Reader, parent: Mapping[str, Any], path: str) -> str | None:
    name = read.min1(parent, "name", path, required=True)
    if name is not None and (len(name) > 63 or not NAME.fullmatch(name)):
        read.fail(f"{path}/name", "error.pattern")
        return None
    return name


def _read_volumes(read: _Reader, raw: Any) -> list[PodVolume]:
    volumes: list[PodVolume] = []
    for i, volume in enumerate(read.array(raw, "/volumes")):
        path = f"/volumes({i})"
        if read.obj(volume, path) is None:
            continue
        name = _name(read, volume, path)
        if name is None:
            continue
        # Marathon tries persistent, secret, host, then ephemeral (marathon.md §1.4):
        # {"name": "v", "secret": ""} is an ephemeral volume, silently.
        if isinstance(volume.get("persistent"), dict):
            size = read.number(volume["persistent"], "size", 0.0, f"{path}/persistent")
            volumes.append(PodVolume(name, "persistent", size=size))
        elif isinstance(volume.get("secret"), str) and volume["secret"]:
            volumes.append(PodVolume(name, "secret", secret=volume["secret"]))
        elif isinstance(volume.get("host"), str) and volume["host"]:
            volumes.append(PodVolume(name, "host", host=volume["host"]))
        else:
            volumes.append(PodVolume(name, "ephemeral"))
    return volumes


def _read_containers(read: _Reader, raw: Any, networks: tuple[Network, ...]) -> list[PodContainer]:
    containers: list[PodContainer] = []
    for i, item in enumerate(read.array(raw, "/containers", required=True)):
        path = f"/containers({i})"
        if read.obj(item, path) is None:
            continue
        name = _name(read, item, path)
        resources = item.get("resources")
        if resources is None:
            read.fail(f"{path}/resources", "error.path.missing")
            resources = {}
        elif read.obj(resources, f"{path}/resources") is None:
            resources = {}
        shell, argv = _read_exec(read, item.get("exec"), f"{path}/exec")
        exec_ = item.get("exec")
        override = read.boolean(
            exec_ if isinstance(exec_, dict) else {}, "overrideEntrypoint", f"{path}/exec"
        )
        environment = _read_env(
            read, item.get("environment"), f"{path}/environment", pattern=POD_ENV_NAME
        )
        image = pull = None
        force = False
        raw_image = item.get("image")
        if raw_image is not None and read.obj(raw_image, f"{path}/image") is not None:
            kind = raw_image.get("kind", "DOCKER")
            if not isinstance(kind, str) or kind.upper() != "DOCKER":
                read.fail(f"{path}/image/kind", "error.expected.validenumvalue")
            image = read.min1(raw_image, "id", f"{path}/image", required=True)
            force = bool(read.boolean(raw_image, "forcePull", f"{path}/image"))
            raw_pull = raw_image.get("pullConfig")
            if raw_pull is not None and read.obj(raw_pull, f"{path}/image/pullConfig") is not None:
                pull = read.min1(raw_pull, "secret", f"{path}/image/pullConfig", required=True)
        mounts = _read_mounts(read, item.get("volumeMounts"), f"{path}/volumeMounts")
        user = read.string(item, "user", path)
        cpus = read.number(resources, "cpus", 1.0, f"{path}/resources")
        mem = read.number(resources, "mem", 128.0, f"{path}/resources")
        disk = read.number(resources, "disk", 0.0, f"{path}/resources")
        gpus = read.number(resources, "gpus", 0, f"{path}/resources")
        endpoints = normalize_endpoints(
            networks, read_endpoints(read, item.get("endpoints"), f"{path}/endpoints")
        )
        artifacts = read_artifacts(read, item.get("artifacts"), f"{path}/artifacts") or ()
        health_check = read_pod_health_check(read, item.get("healthCheck"), f"{path}/healthCheck")
        labels = read_labels(read, item.get("labels"), f"{path}/labels")
        lifecycle = read.optional_obj(item.get("lifecycle"), f"{path}/lifecycle")
        grace = read.number(lifecycle, "killGracePeriodSeconds", -1.0, f"{path}/lifecycle")
        tty = bool(read.boolean(item, "tty", path))
        if name is not None:
            containers.append(
                PodContainer(
                    name=name,
                    shell=shell,
                    argv=argv,
                    override_entrypoint=bool(override),
                    environment=environment,
                    image=image,
                    pull_config=pull,
                    force_pull=force,
                    mounts=tuple(mounts),
                    user=user,
                    cpus=cpus,
                    mem=mem,
                    disk=disk,
                    gpus=int(gpus),
                    endpoints=endpoints,
                    artifacts=artifacts,
                    health_check=health_check,
                    labels=labels,
                    kill_grace_period=grace if grace >= 0 else None,
                    tty=tty,
                )
            )
    return containers


def _read_exec(read: _Reader, raw: Any, path: str) -> tuple[str | None, tuple[str, ...] | None]:
    if raw is None or read.obj(raw, path) is None:
        return None, None
    command = raw.get("command")
    if command is None or read.obj(command, f"{path}/command") is None:
        if command is None:
            read.fail(f"{path}/command", "error.path.missing")
        return None, None
    if "shell" in command:
        return read.min1(command, "shell", f"{path}/command", required=True), None
    argv = command.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        read.fail(f"{path}/command", "error.expected.jsstring")
        return None, None
    return None, tuple(argv)


def _read_mounts(read: _Reader, raw: Any, path: str) -> list[PodVolumeMount]:
    mounts: list[PodVolumeMount] = []
    for j, item in enumerate(read.array(raw, path)):
        where = f"{path}({j})"
        if read.obj(item, where) is None:
            continue
        name = _name(read, item, where)
        mount = read.min1(item, "mountPath", where, required=True)
        if mount is not None and len(mount) > 1024:
            read.fail(f"{where}/mountPath", "error.maxLength")
            mount = None
        read_only = read.boolean(item, "readOnly", where)
        if name is not None and mount is not None:
            mounts.append(PodVolumeMount(name, mount, read_only))
    return mounts


def _violations(pod: Pod) -> list[tuple[str, str]]:  # noqa: PLR0912 (one rule per branch)
    """``PodsValidation`` with the secrets feature on (``reference/marathon.md`` §2.4)."""
    found: list[tuple[str, str]] = id_violations(pod.id)
    if not pod.id.startswith("/"):
        found.append(("/id", "Path needs to be absolute"))
    if "" in pod.secrets:
        found.append(("/secrets/", "must not be empty"))
    if not pod.containers:
        found.append(("/containers", "must not be empty"))
    for name, value in pod.environment.items():
        if isinstance(value, SecretRef) and value.secret not in pod.secrets:
            found.append((f"/environment/{name}/secret", UNDEFINED_SECRET))
    names = [v.name for v in pod.volumes]
    if len(set(names)) != len(names):
        found.append(("/volumes", "volume names must be unique"))
    mounted = {m.name for c in pod.containers for m in c.mounts}
    for i, volume in enumerate(pod.volumes):
        if volume.kind == "secret" and volume.secret not in pod.secrets:
            found.append((f"/volumes({i})", VOLUME_UNDEFINED_SECRET))
        if volume.name not in mounted:
            found.append((f"/volumes({i})", "volume must be referenced by at least one container"))
    containers = [c.name for c in pod.containers]
    if len(set(containers)) != len(containers):
        found.append(("/containers", "container names must be unique"))
    for i, container in enumerate(pod.containers):
        for name, value in container.environment.items():
            if isinstance(value, SecretRef) and value.secret not in pod.secrets:
                found.append((f"/containers({i})/environment/{name}/secret", UNDEFINED_SECRET))
        for j, mount in enumerate(container.mounts):
            if mount.name not in names:
                found.append(
                    (
                        f"/containers({i})/volumeMounts({j})/name",
                        "Referenced Volume in VolumeMount should exist",
                    )
                )
        if container.pull_config is not None and container.pull_config not in pod.secrets:
            found.append((f"/containers({i})/image/pullConfig", PULL_CONFIG_UNDEFINED_SECRET))
        if container.health_check is not None:
            where = f"/containers({i})/healthCheck"
            found += pod_health_check_violations(container.health_check, where)
        found += uri_violations(container.artifacts, f"/containers({i})/artifacts")
    return found
