"""The containerizer pipeline every front end uses.

authorize → provision → isolators.prepare → fetch → launch → isolators.isolate → wait →
cleanup

The fetch (:mod:`..fetcher`) puts the task's ``CommandInfo.uris`` into its sandbox, after
the isolators prepared the container and before it starts, as Mesos' containerizer does.

Cleanup runs whatever happens: success, failure at any step, a kill, an interrupt.
What the pipeline keeps on disk lives in the runtime directory (:mod:`.runtime`): one
claimed directory per container, holding paths and pids, never a value. A container's
mounts exist only in its own mount namespace, and its processes only in its own PID
namespace and cgroup, so a front end that dies, however it dies, leaves no process and
no mount: only that directory and the cgroup, which :meth:`Containerizer.recover` (at
the next start of any front end on the node) finds by its free lock and removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, Self

import attrs

from .. import nofollow
from ..errors import LaunchCancelled, LaunchError, MesosSecretsError
from ..image_config import ImageConfig
from ..isolator import ContainerConfig, ContainerGroup, IsolatorChain, LaunchInfo, Mount, TaskUser
from ..labels import labels_of
from ..mesos import CommandURI, TaskInfo
from ..resolver import ResolveContext
from ..rotation import optional_of
from . import cgroups as cgroups_module
from .launcher import Launcher, Process, Termination, resolve_user
from .runtime import Claim, RuntimeDir, default_runtime_dir, process_start_time

if TYPE_CHECKING:
    from ..redacted_output import OutputRedaction, Pump

__all__ = [
    "Authorizer",
    "Container",
    "Containerizer",
    "Fetching",
    "NoImages",
    "Provisioner",
    "Rootfs",
    "default_runtime_dir",
]

log = logging.getLogger(__name__)

#: Decides whether the task may use its secrets; raises SecretAccessDeniedError if not.
Authorizer = Callable[[TaskInfo, ResolveContext | None], None]

CONTAINERS = "containers"
SANDBOXES = "sandboxes"


@attrs.frozen
class Rootfs:
    """A task's root filesystem: where it appears, and the mounts (an overlay) that make it
    appear there, inside the container's mount namespace only; and what its image says
    about running it (its command, environment and working directory), if anything."""

    path: Path
    mounts: tuple[Mount, ...] = ()
    config: ImageConfig | None = None


class Provisioner(Protocol):
    """Provides a task's image: ``provision`` returns its root filesystem (None: the
    host's); ``destroy`` removes what it made for a container (idempotent); ``recover``
    removes what provisioners that died left (partial downloads)."""

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Rootfs | None: ...

    def destroy(self, container_id: str) -> None: ...

    def recover(self) -> None: ...


class NoImages:
    """The provisioner used when none is configured: tasks run on the host's filesystem."""

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Rootfs | None:
        image = task.container.mesos.image if task.container and task.container.mesos else None
        if image is not None:
            raise LaunchError(
                "the task runs in an image (container.mesos.image), and no image provisioner "
                "is configured"
            )
        return None

    def destroy(self, container_id: str) -> None:
        pass

    def recover(self) -> None:
        pass


class Fetching(Protocol):
    """Puts a task's URIs into its sandbox (:class:`~mesos_secrets.fetcher.Fetcher`);
    ``recover`` removes the partial downloads of fetches that died."""

    def fetch(
        self,
        uris: Iterable[CommandURI],
        sandbox: Path | str,
        *,
        user: TaskUser | str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None: ...

    def recover(self) -> None: ...


def _own_sandbox(config: ContainerConfig) -> None:
    """The task's user owns its sandbox (as root, the sandbox is handed over)."""
    info = config.sandbox.stat()
    if os.geteuid() == 0 and (info.st_uid, info.st_gid) != (config.user.uid, config.user.gid):
        os.chown(config.sandbox, config.user.uid, config.user.gid)


class Containerizer:
    """Runs tasks through the pipeline; one per front end process.

    ``cgroups``: the host's cgroups (found by default; None: none, as for non-root).
    ``fetcher``: puts tasks' URIs into their sandboxes (default: a :class:`Fetcher` with
    its defaults). ``ended``: told each task's context once its container is gone (the
    resolver's :meth:`~mesos_secrets.resolver.SecretResolver.task_ended`).
    """

    def __init__(
        self,
        isolators: IsolatorChain,
        launcher: Launcher,
        runtime_dir: Path | RuntimeDir | None = None,
        *,
        authorize: Authorizer | None = None,
        provisioner: Provisioner | None = None,
        image_launcher: Launcher | None = None,
        cgroups: cgroups_module.Cgroups | Literal["detect"] | None = "detect",
        fetcher: Fetching | None = None,
        ended: Callable[[ResolveContext], None] | None = None,
    ) -> None:
        self.isolators = isolators
        self.ended = ended
        self.launcher = launcher
        self.runtime = (
            runtime_dir if isinstance(runtime_dir, RuntimeDir) else RuntimeDir(runtime_dir)
        )
        self.runtime_dir = self.runtime.path
        self.authorize = authorize
        self.provisioner: Provisioner = provisioner or NoImages()
        self.image_launcher = image_launcher
        self.cgroups: cgroups_module.Cgroups | None = (
            cgroups_module.detect() if isinstance(cgroups, str) else cgroups
        )
        if fetcher is None:
            from ..fetcher import Fetcher  # noqa: PLC0415 (urllib3 and archives: when asked)

            fetcher = Fetcher()
        self.fetcher = fetcher
        self._claims: dict[str, Claim] = {}
        #: The context each container's secrets were resolved for, until it is gone.
        self._contexts: dict[str, ResolveContext] = {}

    @property
    def containers_dir(self) -> Path:
        return self.runtime_dir / CONTAINERS

    def recover(self) -> list[str]:
        """Clean up after containers whose front end is gone (a crash, a SIGKILL).

        Kills whatever of theirs still runs, removes their state, cgroups and temporary
        sandboxes, and the partial downloads of the image store and the fetcher cache.
        Containers of live front ends (their claim is locked) are never touched. Returns
        the ids of the orphans removed.
        """
        orphans: list[str] = []
        for claim in self.runtime.orphans(CONTAINERS):
            log.warning("cleaning up orphaned container %s", claim.name)
            try:
                self._kill_orphan(claim)
                self.destroy(claim.name, claim=claim)
            except (MesosSecretsError, OSError) as error:
                log.error("could not clean up orphaned container %s: %s", claim.name, error)
                claim.release()
            else:
                orphans.append(claim.name)
        alive = [
            name
            for name in (os.listdir(self.containers_dir) if self.containers_dir.is_dir() else ())
            if not name.startswith(".")
        ]
        self.isolators.recover(alive)
        for claim in self.runtime.orphans(SANDBOXES):
            self.release_sandbox(claim)
        self.provisioner.recover()
        self.fetcher.recover()
        return orphans

    @staticmethod
    def _kill_orphan(claim: Claim) -> None:
        """Without cgroups (not root), a dead front end's container that still runs is
        killed through its init's supervisor (PID 1 and the namespace follow); with
        cgroups, :meth:`destroy` kills whatever is in them."""
        pid, start = claim.record.get("init_pid"), claim.record.get("init_start")
        if isinstance(pid, int) and start is not None and process_start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def claim_sandbox(self, path: Path) -> Claim:
        """Record a temporary sandbox, so that ``recover`` removes it if we die."""
        info = path.lstat()
        return self.runtime.claim(
            SANDBOXES,
            path.name,
            {"path": os.path.realpath(path), "inode": list(nofollow.identity(info))},
        )

    @staticmethod
    def release_sandbox(claim: Claim) -> None:
        """Remove a temporary sandbox (if it is still the one recorded), then its claim."""
        path, inode = claim.record.get("path"), claim.record.get("inode")
        try:
            if isinstance(path, str) and isinstance(inode, list) and len(inode) == 2:
                nofollow.remove_tree(path, expect=(inode[0], inode[1]))
            claim.remove()
        except OSError as error:
            log.error("could not remove temporary sandbox %s: %s", path, error)
            claim.release()

    def launch(
        self,
        task: TaskInfo,
        sandbox: Path,
        *,
        context: ResolveContext | None = None,
        container_id: str | None = None,
        stdin: IO[Any] | int | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        cancelled: Callable[[], bool] | None = None,
        optional: Collection[str] | None = None,
        group: ContainerGroup | None = None,
        redact: bool = False,
    ) -> Container:
        """Run ``task`` in ``sandbox``; on any failure nothing is left behind.

        ``optional``: reference names (``"*"``: all) of secrets the task may start
        without, should they not resolve (:attr:`ContainerConfig.optional`); by default
        those its ``mesos-secrets/optional`` label names (:mod:`..rotation`).

        ``redact``: the task's stdout and stderr go through pipes, with every value it
        was given replaced (:mod:`..redacted_output`).

        ``group``: the pod the task is a container of (a task of a task group), whose
        executor's ContainerInfo gives what its containers share (their network).

        ``cancelled`` is asked while the task's URIs are fetched and just before its
        process would start, once its secrets are resolved: if it answers true (the task
        was killed meanwhile), the launch stops there with :class:`LaunchCancelled`, and
        nothing is left.
        """
        container_id = container_id or str(uuid.uuid4())
        claim = self.runtime.claim(CONTAINERS, container_id, {"task_id": task.task_id})
        self._claims[container_id] = claim
        if context is not None:
            self._contexts[container_id] = context
        try:
            if self.authorize is not None:
                self.authorize(task, context)
            config = ContainerConfig(
                container_id=container_id,
                sandbox=Path(sandbox),
                user=resolve_user(task.command.user if task.command else None),
                command=task.command,
                container=task.container,
                task_id=task.task_id,
                context=context,
                optional=frozenset(optional if optional is not None else optional_of(task)),
                labels=labels_of(task),
                group=group,
                redaction=_redaction(container_id) if redact else None,
            )
            if self.cgroups is not None:
                config = attrs.evolve(
                    config,
                    cgroup_procs=tuple(self.cgroups.create(container_id)),
                    runc_cgroup=self.cgroups.runc_path(container_id),
                )
            _own_sandbox(config)
            rootfs = self.provisioner.provision(task, config)
            launcher = self.launcher
            if rootfs is not None:
                config = attrs.evolve(config, rootfs=rootfs.path, image=rootfs.config)
                if self.image_launcher is None:
                    raise LaunchError(  # noqa: TRY301 (cleaned up like every other failure)
                        "the task has an image, and no launcher for images is configured"
                    )
                launcher = self.image_launcher
            info = self.isolators.prepare(config)
            if rootfs is not None:
                info = LaunchInfo(mounts=rootfs.mounts).merge(info, "provisioner")
            if task.command is not None and task.command.uris:
                self.fetcher.fetch(
                    task.command.uris, config.sandbox, user=config.user, cancelled=cancelled
                )
                self.isolators.verify(container_id)
            if cancelled is not None and cancelled():
                raise LaunchCancelled(f"task '{task.task_id}' was killed before it started")  # noqa: TRY301
            process, pumps = _start(launcher, config, info, (stdin, stdout, stderr), redact=redact)
        except MesosSecretsError:  # ours already say what failed (some are OSErrors too)
            self._destroy_quietly(container_id)
            raise
        except OSError as error:  # one line, naming what failed; never a traceback
            self._destroy_quietly(container_id)
            where = f": '{error.filename}'" if error.filename else ""
            raise LaunchError(f"cannot launch the task: {error.strerror}{where}") from None
        except BaseException:
            self._destroy_quietly(container_id)
            raise
        try:  # a signal's exception (``run``'s interruption) may come at any line
            claim.update(init_pid=process.pid, init_start=process_start_time(process.pid))
            self.isolators.isolate(container_id, process.pid)
            return Container(
                self,
                container_id,
                task,
                config,
                process,
                network_namespace=info.network_namespace,
                pumps=pumps,
            )
        except BaseException:
            _end(process)
            process.close()
            self._destroy_quietly(container_id)
            raise

    def kill_all(self, container_id: str, process: Process) -> None:
        """End every process of the container now, and reap its init."""
        if self.cgroups is not None:
            self.cgroups.kill(container_id)
        _end(process)

    def destroy(self, container_id: str, *, claim: Claim | None = None) -> None:
        """Clean up a container: what still runs in its cgroup is killed, then every
        isolator cleans up, then its cgroups and runtime directory go. Idempotent.

        If a step fails, the claim stays (unlocked), and the next ``recover`` of any
        front end tries again.
        """
        claim = claim or self._claims.pop(container_id, None)
        try:
            if self.cgroups is not None:
                self.cgroups.kill(container_id)  # nothing may run while its files go
            if self.image_launcher is not None:
                self.image_launcher.destroy(container_id)
            self.isolators.cleanup(container_id)
            self.provisioner.destroy(container_id)
            if self.cgroups is not None:
                self.cgroups.remove(container_id)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if claim is not None:
            claim.remove()
        context = self._contexts.pop(container_id, None)
        if context is not None and self.ended is not None:
            try:
                self.ended(context)
            except MesosSecretsError as error:  # the task is gone whatever it says
                log.warning("after container %s: %s", container_id, error)

    def _destroy_quietly(self, container_id: str) -> None:
        try:
            self.destroy(container_id)
        except (MesosSecretsError, OSError) as error:
            log.error("could not clean up container %s: %s", container_id, error)


def _end(process: Process) -> None:
    """Kill the container's init, if it still runs (its PID namespace goes with it), and
    reap it."""
    if process.poll() is None:
        process.kill(signal.SIGKILL)
    process.wait()


def _start(
    launcher: Launcher,
    config: ContainerConfig,
    info: LaunchInfo,
    streams: tuple[IO[Any] | int | None, IO[Any] | int | None, IO[Any] | int | None],
    *,
    redact: bool,
) -> tuple[Process, list[Pump]]:
    """The task's process; with ``redact``, and values to redact (now or later), its
    output through pumps, started once it is."""
    stdin, stdout, stderr = streams
    pumps: list[Pump] = []
    if redact:
        stdout, stderr, pumps = _redacting(config, info, stdout, stderr)
    try:
        process = launcher.launch(config, info, stdin=stdin, stdout=stdout, stderr=stderr)
    except BaseException:
        for pump in pumps:
            pump.close()
        raise
    finally:
        for end in (stdout, stderr) if pumps else ():
            assert isinstance(end, int)
            os.close(end)  # the task's ends: the pumps see EOF once the task's are closed
    for pump in pumps:
        pump.start()
    return process, pumps


def _redaction(container_id: str) -> OutputRedaction:
    from ..redacted_output import OutputRedaction  # noqa: PLC0415 (when asked)

    return OutputRedaction(container_id)


#: How long the end of a task's redacted output is waited for, once its process ended.
_PUMP_WAIT_S = 5.0


def _redacting(
    config: ContainerConfig,
    info: LaunchInfo,
    stdout: IO[Any] | int | None,
    stderr: IO[Any] | int | None,
) -> tuple[int | IO[Any] | None, int | IO[Any] | None, list[Pump]]:
    """The task's stdout and stderr as pipes, and the pumps that copy them, redacted,
    to where they would have gone; even with no value to redact yet if an isolator may
    give it one while it runs (telling ``config.redaction`` first). None, and the ends
    unchanged, for a task that has nothing to redact and never will."""
    from ..redacted_output import MIN_LENGTH, Pump, Redactor  # noqa: PLC0415 (when asked)

    redactor = Redactor([*info.environment.items(), *info.given])
    if redactor.too_short:
        log.warning(
            "container %s: value(s) of %s too short to redact in its output (under %d bytes)",
            config.container_id, ", ".join(redactor.too_short), MIN_LENGTH,
        )  # fmt: skip
    if not redactor.active and not info.refreshable:
        return stdout, stderr, []  # nothing to replace, now or later
    if config.redaction is not None:  # values a rotation gives it later, too
        config.redaction.attach(redactor)
    ends: list[int] = []
    pumps = []
    try:
        for name, given, inherited in (("stdout", stdout, 1), ("stderr", stderr, 2)):
            target = given if isinstance(given, int) else given.fileno() if given else inherited
            read, write = os.pipe2(os.O_CLOEXEC)
            try:
                destination = os.dup(target)  # the caller may close its own when launched
            except OSError:
                os.close(read)
                os.close(write)
                raise
            ends.append(write)
            pumps.append(Pump(read, destination, redactor.fresh(), name, close_destination=True))
    except BaseException:
        for end in ends:
            os.close(end)
        for pump in pumps:
            pump.close()
        raise
    return ends[0], ends[1], pumps


class Container:
    """A launched task. Use it as a context manager so that it is always cleaned up."""

    def __init__(
        self,
        containerizer: Containerizer,
        container_id: str,
        task: TaskInfo,
        config: ContainerConfig,
        process: Process,
        *,
        network_namespace: Path | None = None,
        pumps: Sequence[Pump] = (),
    ) -> None:
        self.containerizer = containerizer
        self.id = container_id
        self.task = task
        self.config = config
        self.process = process
        #: The task's network namespace (``/run/netns/NAME``); None: the host's network.
        self.network_namespace = network_namespace
        #: What copies its output through the redactor (none unless redacted).
        self.pumps = tuple(pumps)
        self._destroyed = False

    def __repr__(self) -> str:
        return f"<Container {self.id} task={self.task.task_id!r} pid={self.process.pid}>"

    def wait(self) -> Termination:
        termination = self.process.wait()
        for pump in self.pumps:  # its last output, through, before its end is told
            pump.join(timeout=_PUMP_WAIT_S)
        return termination

    def poll(self) -> Termination | None:
        return self.process.poll()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` on to the task; SIGKILL ends every process of the container."""
        if sig == signal.SIGKILL:
            self.containerizer.kill_all(self.id, self.process)
        else:
            self.process.kill(sig)

    def exec(
        self, argv: Sequence[str], executable: str, environment: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a command in the running container (a check): in its cgroups and
        namespaces, as its task's user, with its capabilities, in its sandbox, with its
        environment (secrets included) and ``environment`` over it. It dies with the
        container. Returns once the command runs (its status is the command's; SIGTERM
        kills it and what it started); a :class:`LaunchError` if it cannot start."""
        if self._destroyed:
            raise LaunchError("the container has ended")
        return self.process.exec(argv, executable, environment or {})

    def destroy(self) -> None:
        """Kill whatever of the container still runs, then clean up. Idempotent."""
        if self._destroyed:
            return
        _end(self.process)  # destroy kills what is left in the cgroup
        self.process.close()
        self._destroyed = True
        self.containerizer.destroy(self.id)
        for pump in self.pumps:  # nothing of the container is left to write
            pump.join(timeout=_PUMP_WAIT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.destroy()
        except (MesosSecretsError, OSError):
            if exc is None:
                raise
            log.exception("could not clean up container %s", self.id)
