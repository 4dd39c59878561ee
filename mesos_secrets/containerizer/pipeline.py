"""The containerizer pipeline every front end uses.

authorize → provision → isolators.prepare → launch → isolators.isolate → wait → cleanup

Cleanup runs whatever happens: success, failure at any step, a kill, an interrupt.
What the pipeline keeps on disk lives in the runtime directory, one directory per
container holding paths and pids, never a value (the secret tmpfs is mounted there
only until the task starts). A crashed front end leaves that directory behind;
:meth:`Containerizer.recover` at the next start finds it and cleans it up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

import attrs

from .. import linux
from ..errors import LaunchError, MesosSecretsError
from ..isolator import ContainerConfig, IsolatorChain
from ..mesos import TaskInfo
from ..resolver import ResolveContext
from .launcher import Launcher, Process, Termination, resolve_user

__all__ = [
    "Authorizer",
    "Container",
    "Containerizer",
    "NoImages",
    "Provisioner",
    "default_runtime_dir",
]

log = logging.getLogger(__name__)

#: Decides whether the task may use its secrets; raises SecretAccessDeniedError if not.
Authorizer = Callable[[TaskInfo, ResolveContext | None], None]


class Provisioner(Protocol):
    """Provides a task's image: ``provision`` returns its root filesystem (None: the
    host's); ``destroy`` removes what it made for a container (idempotent)."""

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Path | None: ...

    def destroy(self, container_id: str) -> None: ...


def default_runtime_dir() -> Path:
    """``/run/mesos-secrets`` for root (cleared at boot); a per-user directory otherwise."""
    if linux.is_root():
        return Path("/run/mesos-secrets")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "mesos-secrets"
    return Path(tempfile.gettempdir()) / f"mesos-secrets-{os.geteuid()}"


class NoImages:
    """The provisioner used when none is configured: tasks run on the host's filesystem."""

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Path | None:
        image = task.container.mesos.image if task.container and task.container.mesos else None
        if image is not None:
            raise LaunchError(
                "the task runs in an image (container.mesos.image), and no image provisioner "
                "is configured"
            )
        return None

    def destroy(self, container_id: str) -> None:
        pass


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (so a reused pid is not mistaken for it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _own_sandbox(config: ContainerConfig) -> None:
    """The task's user owns its sandbox (as root, the sandbox is handed over)."""
    info = config.sandbox.stat()
    if linux.is_root() and (info.st_uid, info.st_gid) != (config.user.uid, config.user.gid):
        os.chown(config.sandbox, config.user.uid, config.user.gid)


class Containerizer:
    """Runs tasks through the pipeline; one per front end process."""

    def __init__(
        self,
        isolators: IsolatorChain,
        launcher: Launcher,
        runtime_dir: Path | None = None,
        *,
        authorize: Authorizer | None = None,
        provisioner: Provisioner | None = None,
        image_launcher: Launcher | None = None,
    ) -> None:
        self.isolators = isolators
        self.launcher = launcher
        self.runtime_dir = Path(runtime_dir) if runtime_dir else default_runtime_dir()
        self.authorize = authorize
        self.provisioner: Provisioner = provisioner or NoImages()
        self.image_launcher = image_launcher

    @property
    def containers_dir(self) -> Path:
        return self.runtime_dir / "containers"

    def recover(self) -> list[str]:
        """Clean up after containers whose owner is gone (a crash, a SIGKILL).

        Returns the ids of the orphans removed.
        """
        if not self.containers_dir.is_dir():
            return []
        alive: list[str] = []
        orphans: list[str] = []
        for directory in sorted(self.containers_dir.iterdir()):
            (alive if self._owner_alive(directory) else orphans).append(directory.name)
        self.isolators.recover(alive)
        for container_id in orphans:
            log.warning("cleaning up orphaned container %s", container_id)
            try:
                self.destroy(container_id)
            except (MesosSecretsError, OSError) as error:
                log.error("could not clean up orphaned container %s: %s", container_id, error)
        return orphans

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
    ) -> Container:
        """Run ``task`` in ``sandbox``; on any failure nothing is left behind."""
        container_id = container_id or str(uuid.uuid4())
        self._claim(container_id, task)
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
            )
            _own_sandbox(config)
            rootfs = self.provisioner.provision(task, config)
            launcher = self.launcher
            if rootfs is not None:
                config = attrs.evolve(config, rootfs=rootfs)
                if self.image_launcher is None:
                    raise LaunchError(  # noqa: TRY301 (cleaned up like every other failure)
                        "the task has an image, and no launcher for images is configured"
                    )
                launcher = self.image_launcher
            info = self.isolators.prepare(config)
            process = launcher.launch(config, info, stdin=stdin, stdout=stdout, stderr=stderr)
        except BaseException:
            self._destroy_quietly(container_id)
            raise
        try:
            self.isolators.isolate(container_id, process.pid)
        except BaseException:
            process.kill(signal.SIGKILL)
            process.wait()
            self._destroy_quietly(container_id)
            raise
        return Container(self, container_id, task, config, process)

    def destroy(self, container_id: str) -> None:
        """Clean up a container: every isolator, then its runtime directory. Idempotent."""
        directory = self.containers_dir / container_id
        try:
            if self.image_launcher is not None:
                self.image_launcher.destroy(container_id)
            self.isolators.cleanup(container_id)
            self.provisioner.destroy(container_id)
        finally:
            linux.remove_tree(directory)

    def _destroy_quietly(self, container_id: str) -> None:
        try:
            self.destroy(container_id)
        except (MesosSecretsError, OSError) as error:
            log.error("could not clean up container %s: %s", container_id, error)

    def _claim(self, container_id: str, task: TaskInfo) -> None:
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.containers_dir.mkdir(mode=0o700, exist_ok=True)
        directory = self.containers_dir / container_id
        directory.mkdir(mode=0o700)
        owner = {"pid": os.getpid(), "start": _start_time(os.getpid()), "task_id": task.task_id}
        (directory / "owner.json").write_text(json.dumps(owner), encoding="utf-8")

    @staticmethod
    def _owner_alive(directory: Path) -> bool:
        try:
            owner = json.loads((directory / "owner.json").read_text(encoding="utf-8"))
            pid, start = int(owner["pid"]), owner["start"]
        except (OSError, ValueError, KeyError, TypeError):
            return False  # half-made or damaged: nobody can be using it
        return start is not None and _start_time(pid) == start


class Container:
    """A launched task. Use it as a context manager so that it is always cleaned up."""

    def __init__(
        self,
        containerizer: Containerizer,
        container_id: str,
        task: TaskInfo,
        config: ContainerConfig,
        process: Process,
    ) -> None:
        self.containerizer = containerizer
        self.id = container_id
        self.task = task
        self.config = config
        self.process = process
        self._destroyed = False

    def __repr__(self) -> str:
        return f"<Container {self.id} task={self.task.task_id!r} pid={self.process.pid}>"

    def wait(self) -> Termination:
        return self.process.wait()

    def poll(self) -> Termination | None:
        return self.process.poll()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        self.process.kill(sig)

    def destroy(self) -> None:
        """Kill the task if it still runs, then clean up. Idempotent."""
        if self._destroyed:
            return
        if self.process.poll() is None:
            self.process.kill(signal.SIGKILL)
            self.process.wait()
        self._destroyed = True
        self.containerizer.destroy(self.id)

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
