"""The Mesos v1 messages that carry secrets, as frozen attrs models.

``Environment.Variable`` (VALUE or SECRET), ``Volume`` with a SECRET source,
``Image.Docker.config``, and the parts of ``CommandInfo``, ``ContainerInfo``,
``TaskInfo``, ``ExecutorInfo`` and ``TaskGroupInfo`` that lead to them. Fields the
models do not know (resources, labels, health checks…) are kept verbatim in
``extra`` and written back out, so a message survives a round trip.

Validation runs when an object is built and uses Mesos' own messages
(``src/common/validation.cpp``, ``src/master/validation.cpp``), with our stricter rules
from DESIGN.md: a name defined twice where one is a SECRET is an error, and a SECRET
volume's ``container_path`` may not contain ``..``, NUL or empty components.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs

from ._codec import JSONModel, frozen_mapping, id_field, required
from .errors import SecretValidationError
from .secret import Secret, SecretType, check_text

__all__ = [
    "CommandInfo",
    "CommandURI",
    "ContainerInfo",
    "ContainerType",
    "DockerImage",
    "DockerInfo",
    "Environment",
    "ExecutorInfo",
    "ExecutorType",
    "Image",
    "ImageType",
    "MesosInfo",
    "SourceType",
    "TaskGroupInfo",
    "TaskInfo",
    "Variable",
    "VariableType",
    "Volume",
    "VolumeMode",
    "VolumeSource",
    "check_container_path",
    "check_text",
]


def _extra_field() -> Any:
    return attrs.field(factory=dict, converter=frozen_mapping, eq=True, repr=False)


def _tuple_of(kind: type) -> Any:
    def convert(value: Any) -> tuple[Any, ...]:
        items = tuple(value)
        for item in items:
            if not isinstance(item, kind):
                raise SecretValidationError(
                    f"expected {kind.__name__} items, not {type(item).__name__}"
                )
        return items

    return attrs.field(factory=tuple, converter=convert)


# --- Environment -------------------------------------------------------------------


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise SecretValidationError("Environment variable name must be a non-empty string")


class VariableType(enum.IntEnum):
    """``Environment.Variable.Type``; VALUE is the proto default."""

    UNKNOWN = 0
    VALUE = 1
    SECRET = 2


@attrs.frozen
class Variable(JSONModel):
    """``Environment.Variable``: a plain ``value`` (VALUE) or a ``secret`` (SECRET)."""

    Type: ClassVar[type[VariableType]] = VariableType

    name: str
    type: VariableType = VariableType.VALUE
    value: str | None = None
    secret: Secret | None = None

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        if "=" in self.name or "\0" in self.name:
            raise SecretValidationError(
                f"Environment variable name {self.name!r} must not contain '=' or NUL"
            )
        label = f"Environment variable '{self.name}'"
        if self.type is VariableType.SECRET:
            if self.secret is None:
                raise SecretValidationError(f"{label} of type 'SECRET' must have a secret set")
            if self.value is not None:
                raise SecretValidationError(f"{label} of type 'SECRET' must not have a value set")
            if self.secret.value is not None and b"\0" in self.secret.value.data.reveal():
                raise SecretValidationError(
                    f"{label} specifies a secret containing null bytes, "
                    "which is not allowed in the environment"
                )
        elif self.type is VariableType.VALUE:
            if self.value is None:
                raise SecretValidationError(f"{label} of type 'VALUE' must have a value set")
            if self.secret is not None:
                raise SecretValidationError(f"{label} of type 'VALUE' must not have a secret set")
            check_text(self.value, "/value")
        else:
            raise SecretValidationError("Environment variable of type 'UNKNOWN' is not allowed")

    @classmethod
    def for_value(cls, name: str, value: str) -> Variable:
        return cls(name=name, type=VariableType.VALUE, value=value)

    @classmethod
    def for_secret(cls, name: str, secret: Secret) -> Variable:
        return cls(name=name, type=VariableType.SECRET, secret=secret)

    @classmethod
    def _field_error(
        cls, field: str, raw: Mapping[str, Any], error: SecretValidationError
    ) -> SecretValidationError:
        if field == "secret" and isinstance(raw.get("name"), str):
            return SecretValidationError(
                f"Environment variable '{raw['name']}' specifies an invalid secret: "
                f"{error.message}",
                error.path,
            )
        return error


_Variable = Variable  # for annotations inside Environment, which has its own `Variable`


@attrs.frozen
class Environment(JSONModel):
    """``Environment``: an ordered list of variables."""

    Variable: ClassVar[type[_Variable]] = _Variable

    variables: tuple[_Variable, ...] = _tuple_of(_Variable)

    def __attrs_post_init__(self) -> None:
        # Mesos lets a later VALUE silently override a SECRET of the same name (its
        # quirk 4); a secret that quietly disappears is a bug, so this is an error.
        seen: dict[str, VariableType] = {}
        for variable in self.variables:
            before = seen.get(variable.name)
            if before is not None and VariableType.SECRET in (before, variable.type):
                raise SecretValidationError(
                    f"Environment variable '{variable.name}' is defined more than once "
                    "and one definition is a SECRET"
                )
            seen[variable.name] = variable.type

    def secrets(self) -> tuple[_Variable, ...]:
        """The SECRET variables, in order."""
        return tuple(v for v in self.variables if v.type is VariableType.SECRET)


# --- Images ------------------------------------------------------------------------


class ImageType(enum.IntEnum):
    APPC = 1
    DOCKER = 2


@attrs.frozen
class DockerImage(JSONModel):
    """``Image.Docker``: ``name`` and ``config``, a secret holding a Docker config JSON."""

    _keeps_extra: ClassVar[bool] = True

    name: str
    config: Secret | None = None
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SecretValidationError("Image.Docker 'name' must be a non-empty string")
        check_text(self.name, "/name", "an image name")


@attrs.frozen
class Image(JSONModel):
    """``Image``; only Docker images are provisioned here."""

    _keeps_extra: ClassVar[bool] = True
    Type: ClassVar[type[ImageType]] = ImageType
    Docker: ClassVar[type[DockerImage]] = DockerImage

    type: ImageType
    docker: DockerImage | None = None
    cached: bool = True
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        if self.type is ImageType.DOCKER and self.docker is None:
            raise SecretValidationError("Image of type DOCKER must have the 'docker' field set")

    @classmethod
    def for_docker(cls, name: str, config: Secret | None = None) -> Image:
        return cls(type=ImageType.DOCKER, docker=DockerImage(name=name, config=config))


# --- Volumes -----------------------------------------------------------------------


class VolumeMode(enum.IntEnum):
    RW = 1
    RO = 2


class SourceType(enum.IntEnum):
    UNKNOWN = 0
    DOCKER_VOLUME = 1
    SANDBOX_PATH = 2
    SECRET = 3
    HOST_PATH = 4
    CSI_VOLUME = 5


def check_container_path(path: str) -> None:
    """Refuse what Mesos lets through (its quirk 3): ``..``, NUL and empty components.

    Both a relative path (inside the sandbox) and an absolute one (inside the image's
    root filesystem) must stay where they are put.
    """
    if not isinstance(path, str) or not path:
        raise SecretValidationError("'container_path' must be a non-empty string")
    if "\0" in path:
        raise SecretValidationError(f"container_path {path!r} must not contain NUL")
    parts = path.split("/")
    if path.startswith("/"):
        parts = parts[1:]
    if "" in parts:
        raise SecretValidationError(
            f"container_path '{path}' must not contain empty components ('//' or a trailing '/')"
        )
    if ".." in parts:
        raise SecretValidationError(f"container_path '{path}' must not contain '..'")


@attrs.frozen
class VolumeSource(JSONModel):
    """``Volume.Source``; the other source kinds are kept in ``extra`` untouched."""

    _keeps_extra: ClassVar[bool] = True
    Type: ClassVar[type[SourceType]] = SourceType

    type: SourceType = SourceType.UNKNOWN
    secret: Secret | None = None
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        if self.type is SourceType.UNKNOWN:
            raise SecretValidationError("'source.type' is unknown")
        if self.type is SourceType.SECRET and self.secret is None:
            raise SecretValidationError("'source.secret' is not set for SECRET volume")

    @classmethod
    def _field_error(
        cls, field: str, raw: Mapping[str, Any], error: SecretValidationError
    ) -> SecretValidationError:
        if field == "secret":
            return SecretValidationError(
                f"Invalid secret specified in volume: {error.message}", error.path
            )
        return error


@attrs.frozen
class Volume(JSONModel):
    """``Volume``; a secret volume has ``source.type == SECRET``."""

    _keeps_extra: ClassVar[bool] = True
    Mode: ClassVar[type[VolumeMode]] = VolumeMode
    Source: ClassVar[type[VolumeSource]] = VolumeSource

    container_path: str
    mode: VolumeMode = required(VolumeMode.RO)  # noqa: RUF009 (an attrs field)
    host_path: str | None = None
    image: Image | None = None
    source: VolumeSource | None = None
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        if sum(x is not None for x in (self.host_path, self.image, self.source)) != 1:
            raise SecretValidationError(
                "Only one of them should be set: 'host_path', 'image' and 'source'"
            )
        if self.secret is not None:
            check_container_path(self.container_path)
        check_text(self.container_path, "/container_path", "a container path")
        check_text(self.host_path, "/host_path", "a host path")

    @property
    def secret(self) -> Secret | None:
        """The secret of a SECRET volume, else None."""
        if self.source is not None and self.source.type is SourceType.SECRET:
            return self.source.secret
        return None

    @classmethod
    def for_secret(
        cls, container_path: str, secret: Secret, mode: VolumeMode = VolumeMode.RO
    ) -> Volume:
        return cls(
            container_path=container_path,
            mode=mode,
            source=VolumeSource(type=SourceType.SECRET, secret=secret),
        )


# --- Containers, commands, tasks --------------------------------------------------


class ContainerType(enum.IntEnum):
    DOCKER = 1
    MESOS = 2


@attrs.frozen
class MesosInfo(JSONModel):
    """``ContainerInfo.MesosInfo``: the image a MESOS container runs in."""

    _keeps_extra: ClassVar[bool] = True

    image: Image | None = None
    extra: Mapping[str, Any] = _extra_field()


@attrs.frozen
class DockerInfo(JSONModel):
    """``ContainerInfo.DockerInfo``, for the Docker containerizer (which has no secrets)."""

    _keeps_extra: ClassVar[bool] = True

    image: str
    extra: Mapping[str, Any] = _extra_field()


@attrs.frozen
class ContainerInfo(JSONModel):
    """``ContainerInfo``: type, volumes and, for MESOS, the image."""

    _keeps_extra: ClassVar[bool] = True
    Type: ClassVar[type[ContainerType]] = ContainerType

    type: ContainerType
    volumes: tuple[Volume, ...] = _tuple_of(Volume)
    hostname: str | None = None
    mesos: MesosInfo | None = None
    docker: DockerInfo | None = None
    extra: Mapping[str, Any] = _extra_field()

    @classmethod
    def _field_error(
        cls, field: str, raw: Mapping[str, Any], error: SecretValidationError
    ) -> SecretValidationError:
        if field == "volumes":
            return SecretValidationError(f"Invalid volume: {error.message}", error.path)
        return error

    def secret_volumes(self) -> tuple[Volume, ...]:
        return tuple(v for v in self.volumes if v.secret is not None)

    def image_pull_secret(self) -> Secret | None:
        """``mesos.image.docker.config``, the secret holding the registry credentials."""
        image = self.mesos.image if self.mesos is not None else None
        if image is not None and image.docker is not None:
            return image.docker.config
        return None


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class CommandURI(JSONModel):
    """``CommandInfo.URI``: an artifact the fetcher puts into the sandbox before launch.

    ``extract`` unpacks a recognised archive, ``executable`` makes the file executable
    (and is never extracted), ``cache`` lets the fetcher reuse an earlier download,
    ``output_file`` names the file in the sandbox (default: the URI's basename).
    """

    value: str
    executable: bool | None = None
    extract: bool = True
    cache: bool | None = None
    output_file: str | None = None

    def __attrs_post_init__(self) -> None:
        check_text(self.value, "/value", "a URI")
        check_text(self.output_file, "/output_file", "an output file")


@attrs.frozen
class CommandInfo(JSONModel):
    """``CommandInfo``: the command, its arguments, user, environment and artifacts."""

    _keeps_extra: ClassVar[bool] = True

    value: str | None = None
    shell: bool = True
    arguments: tuple[str, ...] = attrs.field(factory=tuple, converter=_str_tuple)
    environment: Environment | None = None
    user: str | None = None
    uris: tuple[CommandURI, ...] = _tuple_of(CommandURI)
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        check_text(self.value, "/value")
        for i, argument in enumerate(self.arguments):
            check_text(argument, f"/arguments/{i}", "an argument")
        check_text(self.user, "/user", "a user name")


def _wrap(owner: str) -> Any:
    def field_error(
        cls: type, field: str, raw: Mapping[str, Any], error: SecretValidationError
    ) -> SecretValidationError:
        names = {"command": "CommandInfo", "container": "ContainerInfo"}
        if field in names:
            return SecretValidationError(
                f"{owner} `{names[field]}` is invalid: {error.message}", error.path
            )
        return error

    return classmethod(field_error)


class ExecutorType(enum.IntEnum):
    UNKNOWN = 0
    DEFAULT = 1
    CUSTOM = 2


@attrs.frozen
class ExecutorInfo(JSONModel):
    """``ExecutorInfo``: how to start the executor that runs the tasks."""

    _keeps_extra: ClassVar[bool] = True
    _field_error = _wrap("Executor's")

    executor_id: str = id_field()
    type: ExecutorType | None = None
    framework_id: str | None = id_field(default=None)
    name: str | None = None
    command: CommandInfo | None = None
    container: ContainerInfo | None = None
    extra: Mapping[str, Any] = _extra_field()


@attrs.frozen
class TaskInfo(JSONModel):
    """``TaskInfo``: a task, its command, its container and (optionally) its executor."""

    _keeps_extra: ClassVar[bool] = True
    _field_error = _wrap("Task's")

    name: str
    task_id: str = id_field()
    agent_id: str | None = id_field(default=None)
    command: CommandInfo | None = None
    container: ContainerInfo | None = None
    executor: ExecutorInfo | None = None
    extra: Mapping[str, Any] = _extra_field()

    def __attrs_post_init__(self) -> None:
        if self.extra.get("health_check") is None and self.extra.get("check") is None:
            return  # nothing to check: the checks module is not loaded for it
        from .checks import parse_checks  # noqa: PLC0415 (checks are built on these models)

        parse_checks(self)  # as Mesos' master validates them

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret the task needs, in launch order: image, environment, volumes."""
        found: list[Secret] = []
        if self.container is not None:
            pull = self.container.image_pull_secret()
            if pull is not None:
                found.append(pull)
        if self.command is not None and self.command.environment is not None:
            found.extend(
                v.secret for v in self.command.environment.secrets() if v.secret is not None
            )
        if self.container is not None:
            found.extend(v.secret for v in self.container.secret_volumes() if v.secret)
        return tuple(found)

    def references(self) -> tuple[str, ...]:
        """The reference names among :meth:`secrets`, for authorization and audit."""
        return tuple(
            s.reference.name
            for s in self.secrets()
            if s.type is SecretType.REFERENCE and s.reference is not None
        )


@attrs.frozen
class TaskGroupInfo(JSONModel):
    """``TaskGroupInfo``: the tasks of a pod, launched together."""

    tasks: tuple[TaskInfo, ...] = _tuple_of(TaskInfo)
