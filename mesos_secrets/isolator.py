"""The isolator protocol, after Mesos' ``mesos::slave::Isolator``, and the isolator chain.

An isolator is a named object with a lifecycle, driven by the containerizer for each
container:

- ``recover(alive)``: at start-up, with the ids of the containers still running;
- ``prepare(config)``: before launch; returns what the task gets (:class:`LaunchInfo`:
  environment variables, bind mounts, a network namespace), or None;
- ``isolate(container_id, pid)``: just after the task started;
- ``refresh(container_id, names)``: while it runs, deliver the current values of the
  secrets named, where the isolator can (:class:`Refreshed` says what it did);
- ``cleanup(container_id)``: after the task ended, *or* after a failed prepare, *or*
  for an orphan found after a crash; it must be idempotent and work from what is on
  disk alone.

Isolators are chosen by an ordered ``isolation`` list (``environment_secret,
volume_secret`` by default; Mesos' spelling ``volume/secret`` is accepted) and built
from the ``mesos_secrets.isolators`` entry points, like resolvers.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

from .errors import ConfigError, IsolatorError, MesosSecretsError, ResolverError
from .image_config import ImageConfig
from .labels import labels_of
from .mesos import CommandInfo, ContainerInfo, ExecutorInfo
from .names import agent_name
from .registry import ISOLATOR_GROUP, Registry
from .resolver import ResolveContext, SecretResolver, convert_options, resolve_all
from .secret import Secret
from .secretbytes import SecretBytes

if TYPE_CHECKING:
    from .redacted_output import OutputRedaction

__all__ = [
    "DEFAULT_ISOLATION",
    "ContainerConfig",
    "ContainerGroup",
    "Filesystem",
    "Isolator",
    "IsolatorChain",
    "LaunchInfo",
    "Mount",
    "Refreshed",
    "TaskUser",
    "create_isolators",
    "isolators",
    "parse_isolation",
]

log = logging.getLogger(__name__)

DEFAULT_ISOLATION = ("environment_secret", "volume_secret")

#: Mesos' names for the same isolators.
ALIASES = {"volume/secret": "volume_secret", "environment/secret": "environment_secret"}

#: What a task may need, and which capability an isolator must declare to provide it.
ENVIRONMENT_SECRETS = "environment_secrets"
SECRET_VOLUMES = "secret_volumes"


@attrs.frozen
class TaskUser:
    """The user a task runs as: name, uid, primary gid, supplementary groups, home."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


@attrs.frozen
class ContainerGroup:
    """The containers of a pod: the tasks of one executor's task groups, which share
    what their executor's ContainerInfo gives (its network), as the nested containers of
    Mesos' default executor share the executor container's.

    ``id`` names the executor on the node (its framework's id and its own, as an
    executor id is unique within its framework only); ``container`` its
    ContainerInfo (a pod's networks: ``network_infos``); ``labels`` its labels (a
    pod's)."""

    id: str
    container: ContainerInfo | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def of_executor(cls, id: str, executor: ExecutorInfo) -> ContainerGroup:
        """The containers of ``executor``'s task groups, named ``id`` on the node."""
        return cls(id, executor.container, labels_of(executor))


@attrs.frozen
class ContainerConfig:
    """What isolators and launchers know about one container."""

    container_id: str
    sandbox: Path
    user: TaskUser
    command: CommandInfo | None = None
    container: ContainerInfo | None = None
    task_id: str | None = None
    #: The provisioned image's root filesystem; None runs on the host's.
    rootfs: Path | None = None
    #: What the provisioned image says about running it (Entrypoint, Cmd, Env, WorkingDir).
    image: ImageConfig | None = None
    context: ResolveContext | None = None
    #: The ``cgroup.procs`` files the container's init joins (none: no cgroups here).
    cgroup_procs: tuple[str, ...] = ()
    #: runc's ``cgroupsPath`` for a task in an image, inside the container's cgroup.
    runc_cgroup: str | None = None
    #: Reference names (``"*"``: all) whose resolution may fail at launch: the task then
    #: starts without them (no variable, no file), and a later refresh may deliver them.
    optional: frozenset[str] = frozenset()
    #: The task's labels (``mesos-secrets/network``: its network mode).
    labels: Mapping[str, str] = attrs.field(factory=dict)
    #: The pod it is a container of (a task of a task group), or None.
    group: ContainerGroup | None = None
    #: With its output redacted: where an isolator that gives the task a value while
    #: it runs tells it first (:meth:`OutputRedaction.learn`); None: not redacted.
    redaction: OutputRedaction | None = None


def is_optional(optional: Collection[str], secret: Secret) -> bool:
    """Whether ``secret`` is one of ``optional`` (reference names, however spelled:
    ``db/x`` is ``/db/x``; or ``"*"``)."""
    reference = secret.reference
    if "*" in optional:
        return True
    return reference is not None and agent_name(reference.name) in {
        agent_name(name) for name in optional
    }


@attrs.frozen
class Mount:
    """A mount the launcher makes in the container's own mount namespace, never the host's.

    A bind of ``source`` (a host path, or a path under a :class:`Filesystem`'s ``at``)
    onto ``target``; or, with ``fstype``, a new filesystem (an overlay) at ``target``.
    ``target`` is a host path when the task runs on the host's root filesystem, a path
    inside ``rootfs`` otherwise. ``base`` is the directory the target lies beneath (the
    sandbox): the launcher opens the target from it without following any link.
    ``inode`` is ``(st_dev, st_ino)`` of the mount point as it was prepared: anything
    else found there at launch (a link or file swapped in) is refused.
    """

    source: Path | str
    target: Path
    read_only: bool = True
    base: Path | None = None
    inode: tuple[int, int] | None = None
    fstype: str | None = None
    options: str | None = None

    def to_plan(self) -> dict[str, Any]:
        """The form the container's init reads."""
        return {
            "source": str(self.source),
            "target": str(self.target),
            "read_only": self.read_only,
            "base": None if self.base is None else str(self.base),
            "relative": None if self.base is None else str(self.target.relative_to(self.base)),
            "inode": None if self.inode is None else list(self.inode),
            "fstype": self.fstype,
            "options": self.options,
        }


@attrs.frozen
class Filesystem:
    """A detached filesystem (an fd from ``fsmount``), attached at ``at`` only inside the
    container's mount namespace: it never appears in the host's mount table, so no other
    process can copy it into a namespace of its own, and it vanishes with its last user.
    ``at`` is an empty directory on the host."""

    fd: int
    at: Path


def _frozen_env(value: Mapping[str, SecretBytes]) -> Mapping[str, SecretBytes]:
    return dict(value)


@attrs.frozen
class LaunchInfo:
    """What the isolators give the task: environment (secret values), filesystems, mounts,
    and the network namespace it runs in.

    ``filesystems`` are attached first, then ``mounts`` are made in order; ``detach``
    lists mount points the task should not see once its binds are made (the secret tmpfs
    itself: the task sees its files where they belong, nothing more).
    ``network_namespace`` is a named network namespace (``/run/netns/NAME``) the task
    joins; None: the front end's own (the host's).
    """

    environment: Mapping[str, SecretBytes] = attrs.field(factory=dict, converter=_frozen_env)
    mounts: tuple[Mount, ...] = ()
    detach: tuple[Path, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    network_namespace: Path | None = None
    #: Values the task was given other than in its environment (its volumes' files),
    #: each by the name its output shows in their place when redacted.
    given: tuple[tuple[str, SecretBytes], ...] = ()
    #: For an unprivileged front end: an fd of the user namespace the task's namespaces
    #: are made in (where ``filesystems`` were made); None: a new one (or root's).
    user_namespace: int | None = None
    #: An isolator may give the task values while it runs (a rotatable secret volume):
    #: its output, if redacted, goes through the filter even with nothing in it yet.
    refreshable: bool = False

    def merge(self, other: LaunchInfo, source: str) -> LaunchInfo:
        clash = sorted(set(self.environment) & set(other.environment))
        if clash:
            raise IsolatorError(
                f"isolator '{source}' sets environment variable(s) {', '.join(clash)} "
                "that another isolator already set",
                isolator=source,
            )
        if self.network_namespace is not None and other.network_namespace is not None:
            raise IsolatorError(
                f"isolator '{source}' sets the network namespace "
                f"('{other.network_namespace}'), which another isolator already set "
                f"('{self.network_namespace}'): a task joins one",
                isolator=source,
            )
        if self.user_namespace is not None and other.user_namespace is not None:
            raise IsolatorError(
                f"isolator '{source}' sets the user namespace, which another isolator "
                "already set: a task's namespaces are made in one",
                isolator=source,
            )
        return LaunchInfo(
            environment={**self.environment, **other.environment},
            mounts=self.mounts + other.mounts,
            detach=self.detach + other.detach,
            filesystems=self.filesystems + other.filesystems,
            network_namespace=(
                self.network_namespace
                if self.network_namespace is not None
                else other.network_namespace
            ),
            given=self.given + other.given,
            user_namespace=(
                self.user_namespace if self.user_namespace is not None else other.user_namespace
            ),
            refreshable=self.refreshable or other.refreshable,
        )


@attrs.frozen
class Refreshed:
    """What a refresh did for one container: ``updated`` (descriptions of what now has
    the new value, e.g. "volume 'db/pw' (secret '/db')"), ``fixed`` (what holds one of
    the secrets but cannot change while the task runs: environment variables, absolute
    or RW volumes)."""

    updated: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()

    def merge(self, other: Refreshed) -> Refreshed:
        return Refreshed(self.updated + other.updated, self.fixed + other.fixed)


class Isolator(abc.ABC):
    """Base class of every isolator. Subclasses take options as keyword arguments."""

    #: The name it is registered under.
    name: ClassVar[str] = ""
    #: What it provides: ENVIRONMENT_SECRETS, SECRET_VOLUMES.
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, resolver: SecretResolver, runtime_dir: Path) -> None:
        self.resolver = resolver
        self.runtime_dir = Path(runtime_dir)

    @classmethod
    def from_options(cls, resolver: SecretResolver, runtime_dir: Path, **options: Any) -> Self:
        return cls(resolver, runtime_dir, **convert_options(cls, f"isolator '{cls.name}'", options))

    def resolve_each(
        self, config: ContainerConfig, wanted: Sequence[tuple[str, Secret]]
    ) -> list[SecretBytes | None]:
        """Resolve a container's secrets at once; a failure names what it was for.

        ``wanted`` pairs a description ("environment variable 'DB' (secret '/db')") with
        each secret; the first failure is an :class:`IsolatorError` with that description,
        but for a secret ``config.optional`` names: None takes its value's place.
        """
        return self.resolve_for(
            config.container_id, config.context, wanted, optional=config.optional
        )

    def resolve_for(
        self,
        container_id: str,
        context: ResolveContext | None,
        wanted: Sequence[tuple[str, Secret]],
        *,
        optional: Collection[str] = frozenset(),
    ) -> list[SecretBytes | None]:
        """:meth:`resolve_each` for a container known by its id and context (a refresh)."""
        values = resolve_all(self.resolver, [secret for _, secret in wanted], context)
        resolved: list[SecretBytes | None] = []
        for (what, secret), value in zip(wanted, values, strict=True):
            if isinstance(value, ResolverError):
                if is_optional(optional, secret):
                    # A ResolverError names what failed, never a value.
                    log.warning(
                        "container %s: %s is optional and left out: cannot resolve it: %s",
                        container_id,
                        what,
                        value,
                    )
                    resolved.append(None)
                    continue
                raise IsolatorError(
                    f"cannot resolve {what}: {value}",
                    isolator=self.name,
                    container_id=container_id,
                ) from value
            resolved.append(value)
        return resolved

    def container_dir(self, container_id: str) -> Path:
        """Where this isolator keeps what it has for a container (never a value, except
        on the secret tmpfs mounted under it)."""
        return self.runtime_dir / "containers" / container_id / self.name

    def recover(self, alive: Collection[str]) -> None:  # noqa: B027 (optional hook)
        """Rebuild state for the containers still running. Orphans get ``cleanup``."""

    @abc.abstractmethod
    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        """Get what the container needs before it starts."""

    def isolate(self, container_id: str, pid: int) -> None:  # noqa: B027 (optional hook)
        """Called once the task runs, with its pid."""

    def verify(self, container_id: str) -> None:  # noqa: B027 (optional hook)
        """After the task's URIs were fetched into its sandbox, before it starts: raise
        :class:`IsolatorError` if what prepare made there was replaced."""

    def refresh(self, container_id: str, names: Collection[str]) -> Refreshed | None:
        """Deliver the current values of the secrets named (reference names) to the
        running container, if this isolator can. Default: None (nothing of it here)."""
        return None

    def cleanup(self, container_id: str) -> None:  # noqa: B027 (optional hook)
        """Remove everything prepare made. Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


isolators: Registry[Isolator] = Registry(ISOLATOR_GROUP, "isolator", Isolator)


def parse_isolation(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"environment_secret,volume/secret"`` -> canonical names, in order, no duplicates."""
    if value is None:
        return DEFAULT_ISOLATION
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError("'isolation' must be a comma-separated string or a list of names")
        name = ALIASES.get(item.strip(), item.strip())
        if not name:
            continue
        if name in names:
            raise ConfigError(f"isolator '{name}' is listed twice in 'isolation'")
        names.append(name)
    return tuple(names)


def create_isolators(
    isolation: str | Sequence[str] | None,
    resolver: SecretResolver,
    runtime_dir: Path,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> IsolatorChain:
    """Build the chain named by ``isolation``; ``options`` maps isolator name -> options."""
    names = parse_isolation(isolation)
    options = options or {}
    unused = sorted(set(options) - set(names))
    if unused:
        raise ConfigError(
            f"options are given for isolator(s) {', '.join(unused)}, which 'isolation' "
            f"does not list ({', '.join(names) or 'empty'})"
        )
    built = []
    for name in names:
        plugin = isolators.load(name)
        built.append(plugin.from_options(resolver, runtime_dir, **dict(options.get(name, {}))))
    return IsolatorChain(built)


class IsolatorChain:
    """Isolators in order. A failed ``prepare`` cleans up every isolator already asked."""

    def __init__(self, chain: Sequence[Isolator]) -> None:
        self.isolators = tuple(chain)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.isolators)

    def _check_support(self, config: ContainerConfig) -> None:
        """A secret the chain cannot deliver is an error, never silently dropped."""
        provided = set().union(*(i.provides for i in self.isolators))
        environment = config.command.environment if config.command else None
        if (
            environment is not None
            and environment.secrets()
            and ENVIRONMENT_SECRETS not in provided
        ):
            names = ", ".join(v.name for v in environment.secrets())
            raise IsolatorError(
                f"environment variable(s) {names} are SECRETs, but no isolator in "
                f"'isolation' ({', '.join(self.names) or 'empty'}) delivers environment "
                "secrets (add environment_secret)",
                container_id=config.container_id,
            )
        other = (
            [v for v in config.container.volumes if v.secret is None] if config.container else []
        )
        if other:
            paths = ", ".join(v.container_path for v in other)
            raise IsolatorError(
                f"the container has volumes that are not SECRET volumes ({paths}); no isolator "
                "here provides them, and a volume is never silently dropped",
                container_id=config.container_id,
            )
        volumes = config.container.secret_volumes() if config.container else ()
        if volumes and SECRET_VOLUMES not in provided:
            paths = ", ".join(v.container_path for v in volumes)
            raise IsolatorError(
                f"the container has SECRET volumes ({paths}), but no isolator in 'isolation' "
                f"({', '.join(self.names) or 'empty'}) delivers them (add volume_secret)",
                container_id=config.container_id,
            )

    def prepare(self, config: ContainerConfig) -> LaunchInfo:
        self._check_support(config)
        merged = LaunchInfo()
        with contextlib.ExitStack() as rollback:
            for isolator in self.isolators:
                # Registered before prepare: a half-done prepare is cleaned up too.
                rollback.callback(self._cleanup_quietly, isolator, config.container_id)
                info = isolator.prepare(config)
                if info is not None:
                    merged = merged.merge(info, isolator.name)
            rollback.pop_all()
        return merged

    def isolate(self, container_id: str, pid: int) -> None:
        for isolator in self.isolators:
            isolator.isolate(container_id, pid)

    def recover(self, alive: Collection[str]) -> None:
        for isolator in self.isolators:
            isolator.recover(alive)

    def verify(self, container_id: str) -> None:
        for isolator in self.isolators:
            isolator.verify(container_id)

    def refresh(self, container_id: str, names: Collection[str]) -> Refreshed:
        """Deliver the current values of the secrets named to a running container.

        Every isolator is asked; what they did is merged. The first error is raised (an
        :class:`IsolatorError`) once all were asked: one that cannot deliver does not
        keep the others from it.
        """
        merged = Refreshed()
        errors: list[MesosSecretsError | OSError] = []
        for isolator in self.isolators:
            try:
                refreshed = isolator.refresh(container_id, names)
            except (MesosSecretsError, OSError) as error:
                log.error(
                    "isolator '%s' failed to refresh container %s: %s",
                    isolator.name,
                    container_id,
                    error,
                )
                errors.append(error)
                continue
            if refreshed is not None:
                merged = merged.merge(refreshed)
        if errors:
            first = errors[0]
            if isinstance(first, IsolatorError):
                raise first
            raise IsolatorError(
                f"refresh of container {container_id} failed: {first}",
                container_id=container_id,
            ) from first
        return merged

    def cleanup(self, container_id: str) -> None:
        """Clean up in reverse order; every isolator is tried, the first error is raised."""
        errors: list[MesosSecretsError | OSError] = []
        for isolator in reversed(self.isolators):
            try:
                isolator.cleanup(container_id)
            except (MesosSecretsError, OSError) as error:
                log.error(
                    "isolator '%s' failed to clean up container %s: %s",
                    isolator.name,
                    container_id,
                    error,
                )
                errors.append(error)
        if errors:
            raise IsolatorError(
                f"cleanup of container {container_id} failed: {errors[0]}",
                container_id=container_id,
            ) from errors[0]

    @staticmethod
    def _cleanup_quietly(isolator: Isolator, container_id: str) -> None:
        try:
            isolator.cleanup(container_id)
        except (MesosSecretsError, OSError) as error:
            log.error(
                "isolator '%s' failed to clean up container %s after a failed prepare: %s",
                isolator.name,
                container_id,
                error,
            )
