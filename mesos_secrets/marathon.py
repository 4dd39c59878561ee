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

import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from ._codec import loads
from .errors import ProvisionerError, SecretValidationError
from .image_reference import ImageReference
from .mesos import (
    CommandInfo,
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
from .secret import Secret
from .spec_reader import INVALID_JSON, NOT_VALID, SpecError
from .spec_reader import SpecReader as _Reader

if TYPE_CHECKING:
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
CMD_AND_ARGS = "AppDefinition must either contain a 'cmd' or a 'args', not both"


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
    """A persistent or external volume: valid in Marathon, not run by this tool."""

    kind: str


AppVolume = AppSecretVolume | AppHostVolume | AppOtherVolume


@attrs.frozen
class AppContainer:
    """``container``: its type (MESOS or DOCKER), volumes, Docker image, pull config."""

    type: ContainerType = ContainerType.DOCKER
    volumes: tuple[AppVolume, ...] = ()
    image: str | None = None
    pull_config: str | None = None
    has_docker: bool = False


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


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

    def secret(self, name: str) -> Secret:
        """The Mesos secret for secret ``name``: a reference to its ``source``."""
        return secret_for(self.secrets, name)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(part for part in self.id.split("/") if part)

    def to_task_info(self, task_id: str | None = None) -> TaskInfo:
        """The TaskInfo Marathon (with a DC/OS-style secrets plugin) would launch.

        There is no ``agent_id``: the scheduler sets it from the offer it accepts.
        """
        check_sources(self.secrets)
        safe = "_".join(self.path)
        return TaskInfo(
            name=".".join(reversed(self.path)),
            task_id=task_id or f"{safe}.instance-{uuid.uuid4()}._app.1",
            command=self._command(),
            container=self._container(),
            extra={"resources": _resources(self.cpus, self.mem, self.disk)},
        )

    def _command(self) -> CommandInfo:
        variables = []
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
            )
        except SecretValidationError as error:
            where = _command_path(error.path, self.args is not None)
            raise SpecError(NOT_VALID, [(where, error.message)]) from None

    def _container(self) -> ContainerInfo | None:
        container = self.container
        if container is None:
            return None
        volumes = []
        for i, volume in enumerate(container.volumes):
            if isinstance(volume, AppOtherVolume):
                continue
            try:
                volumes.append(self._volume(volume))
            except SecretValidationError as error:
                field = "hostPath" if error.path == "/host_path" else "containerPath"
                where = f"/container/volumes({i})/{field}"
                raise SpecError(NOT_VALID, [(where, error.message)]) from None
        if container.type is ContainerType.DOCKER:
            docker = DockerInfo(image=container.image) if container.image else None
            return ContainerInfo(type=ContainerType.DOCKER, volumes=tuple(volumes), docker=docker)
        mesos = None
        if container.image:
            pull = self.secret(container.pull_config) if container.pull_config else None
            try:
                mesos = MesosInfo(image=Image.for_docker(container.image, config=pull))
                ImageReference.parse(container.image)
            except (SecretValidationError, ProvisionerError) as error:
                reason = error.message if isinstance(error, SecretValidationError) else str(error)
                raise SpecError(NOT_VALID, [("/container/docker/image", reason)]) from None
        return ContainerInfo(type=ContainerType.MESOS, volumes=tuple(volumes), mesos=mesos)

    def _volume(self, volume: AppSecretVolume | AppHostVolume) -> Volume:
        path = mount_path(volume.container_path)
        if isinstance(volume, AppHostVolume):
            return Volume(container_path=path, mode=volume.mode, host_path=volume.host_path)
        # Marathon converts every app secret volume read-only.
        return Volume.for_secret(path, self.secret(volume.secret), VolumeMode.RO)


def command_info(
    shell: str | None,
    argv: tuple[str, ...] | None,
    environment: Environment | None,
    user: str | None,
    *,
    argv_names_program: bool,
) -> CommandInfo:
    """Marathon's command (``TaskBuilder.commandInfo``, ``TaskGroupBuilder``): a
    non-empty ``shell`` runs with a shell; otherwise there is none, ``argv`` are the
    arguments, and the value is ``argv[0]`` only where ``argv_names_program`` (an app
    without a container, a pod container with ``overrideEntrypoint``). Without a value,
    an image's own entrypoint or command runs."""
    if shell:
        return CommandInfo(value=shell, shell=True, environment=environment, user=user)
    return CommandInfo(
        value=argv[0] if argv and argv_names_program else None,
        shell=False,
        arguments=argv or (),
        environment=environment,
        user=user,
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


def mount_path(path: str) -> str:
    """A container path as Marathon means it: ``.//mysecret`` is ``mysecret``.

    Empty and ``.`` components go; ``..`` stays, for the model to refuse.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        return path
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def _resources(cpus: float, mem: float, disk: float) -> list[dict[str, Any]]:
    return [
        {"name": name, "type": "SCALAR", "scalar": {"value": value}}
        for name, value in (("cpus", cpus), ("mem", mem), ("disk", disk))
        if value
    ]


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
    app_id = read.min1(root, "id", "", required=True)
    cmd = read.min1(root, "cmd", "")
    args = _read_args(read, root.get("args"))
    user = read.string(root, "user", "")
    env = _read_env(read, root.get("env"))
    secrets = _read_secrets(read, root.get("secrets"))
    container = _read_container(read, root.get("container"))
    cpus, mem, disk = (
        read.number(root, k, d) for k, d in (("cpus", 1.0), ("mem", 128.0), ("disk", 0.0))
    )
    if read.errors:
        raise SpecError(INVALID_JSON, read.errors)
    assert app_id is not None
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
    )
    violations = _violations(app, root)
    if strict:
        violations += _strict_violations(app)
    if violations:
        raise SpecError(NOT_VALID, violations)
    app.to_task_info()  # our stricter rules, with their paths
    return app


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


def _read_container(read: _Reader, raw: Any) -> AppContainer | None:
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
    image = pull_config = None
    docker = raw.get("docker")
    if docker is not None and read.obj(docker, "/container/docker") is not None:
        image = read.min1(docker, "image", "/container/docker", required=True)
        pull = docker.get("pullConfig")
        if pull is not None and read.obj(pull, "/container/docker/pullConfig") is not None:
            pull_config = read.min1(pull, "secret", "/container/docker/pullConfig", required=True)
    return AppContainer(
        type=kind,
        volumes=tuple(volumes),
        image=image,
        pull_config=pull_config,
        has_docker=isinstance(docker, dict),
    )


def _read_volume(read: _Reader, volume: dict[str, Any], path: str) -> AppVolume | None:
    """Marathon tries persistent, external, secret, then host (``marathon.md`` §1.4)."""
    for kind in ("persistent", "external"):
        if isinstance(volume.get(kind), dict):
            return AppOtherVolume(kind)
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
    if app.cmd is not None and app.args is not None:
        found.append(("/", CMD_AND_ARGS))
    elif app.cmd is None and app.args is None and container is None:
        found.append(("/", NO_COMMAND))
    return found


def load_spec(text: str | bytes, *, strict: bool = False) -> App | Pod:
    """Read an app or a pod (it has ``containers``) from JSON text.

    Unparseable text is Marathon's ``Invalid JSON``; see :func:`parse_app` and
    :func:`~mesos_secrets.pods.parse_pod` for the rest.
    """
    from .pods import parse_pod  # noqa: PLC0415 (pods builds on this module)

    try:
        obj = loads(text)
    except SecretValidationError as error:
        reason = error.message.removeprefix(f"{INVALID_JSON}: ")
        raise SpecError(INVALID_JSON, [(error.path or "/", reason)]) from None
    if isinstance(obj, dict) and "containers" in obj:
        return parse_pod(obj, strict=strict)
    return parse_app(obj, strict=strict)
