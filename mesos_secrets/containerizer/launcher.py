"""Launchers: start the task with what the isolators prepared, and wait for it.

:class:`PosixLauncher` runs the task as a child process on the host's root filesystem,
in its sandbox directory, in its own process group. As root it also gives the task a
private mount namespace, where the secret files are bound into place, and switches to
the task's user. Secrets reach the child through its environment and those mounts
only, never through its command line.

The task's environment is built in Mesos' order (``reference/mesos.md`` §5), later
entries winning: a small base (PATH, HOME, USER, MESOS_SANDBOX…; nothing else of the
caller's environment, so a ``VAULT_TOKEN`` in the operator's shell never reaches the
task) < the resolved secrets < the command's VALUE variables.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import pwd
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from .. import linux
from ..errors import LaunchError
from ..isolator import ContainerConfig, LaunchInfo, Mount, TaskUser
from ..mesos import VariableType

__all__ = [
    "DEFAULT_PATH",
    "Launcher",
    "PosixLauncher",
    "Process",
    "Termination",
    "command_argv",
    "resolve_user",
    "task_environment",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Caller variables a task may see: terminal and locale settings, nothing else.
PASSED_THROUGH = ("TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


@attrs.frozen
class Termination:
    """How a task ended: an exit code, or the signal that killed it."""

    exit_code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, code: int) -> Termination:
        return cls(signal=-code) if code < 0 else cls(exit_code=code)

    @property
    def status(self) -> int:
        """As a shell reports it: the exit code, or 128 + the signal number."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code or 0

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exited with status {self.exit_code}"


class Process(abc.ABC):
    """A running task."""

    pid: int

    @abc.abstractmethod
    def wait(self) -> Termination: ...

    @abc.abstractmethod
    def kill(self, sig: int) -> None:
        """Send ``sig`` to the task and everything it started."""

    @abc.abstractmethod
    def poll(self) -> Termination | None: ...


class Launcher(abc.ABC):
    """Starts a prepared container."""

    def destroy(self, container_id: str) -> None:  # noqa: B027 (optional hook)
        """Remove what the launcher kept for a container, after it ended. Idempotent."""

    @abc.abstractmethod
    def launch(
        self,
        config: ContainerConfig,
        info: LaunchInfo,
        *,
        stdin: IO[Any] | int | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> Process: ...


def resolve_user(name: str | None) -> TaskUser:
    """The task's user: ``name``, or whoever runs this process. Non-root cannot switch."""
    me = os.geteuid()
    try:
        entry = pwd.getpwuid(me) if name is None else pwd.getpwnam(name)
    except KeyError:
        if name is None:
            return TaskUser(name=str(me), uid=me, gid=os.getegid(), groups=tuple(os.getgroups()))
        raise LaunchError(f"user '{name}' does not exist on this machine") from None
    if me not in (entry.pw_uid, 0):
        raise LaunchError(
            f"cannot run the task as user '{name}': only root can switch users "
            f"(running as uid {me})"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return TaskUser(
        name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir
    )


def command_argv(config: ContainerConfig) -> tuple[list[str], str]:
    """``(argv, executable)`` for the task's CommandInfo, as Mesos reads it."""
    command = config.command
    if command is None or not command.value:
        raise LaunchError("the task has no command to run (CommandInfo.value is empty)")
    if command.shell:
        return ["/bin/sh", "-c", command.value], "/bin/sh"
    return list(command.arguments) or [command.value], command.value


def task_environment(
    config: ContainerConfig, info: LaunchInfo, *, sandbox: str | None = None
) -> dict[bytes, bytes]:
    """The task's whole environment, as bytes (secret values are bytes)."""
    env: dict[str, str | bytes] = {
        "PATH": DEFAULT_PATH,
        "HOME": config.user.home,
        "USER": config.user.name,
        "LOGNAME": config.user.name,
        "MESOS_SANDBOX": sandbox or os.fspath(config.sandbox),
    }
    if config.task_id:
        env["MESOS_TASK_ID"] = config.task_id
    for name in PASSED_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    for name, value in info.environment.items():
        env[name] = value.reveal()
    environment = config.command.environment if config.command else None
    for variable in environment.variables if environment else ():
        if variable.type is VariableType.VALUE and variable.value is not None:
            env[variable.name] = variable.value
    return {os.fsencode(k): v if isinstance(v, bytes) else os.fsencode(v) for k, v in env.items()}


class _PopenProcess(Process):
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    def wait(self) -> Termination:
        return Termination.from_returncode(self.popen.wait())

    def poll(self) -> Termination | None:
        code = self.popen.poll()
        return None if code is None else Termination.from_returncode(code)

    def kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


class PosixLauncher(Launcher):
    """Runs the task on the host, in a private mount namespace when root."""

    def __init__(self, *, private_mounts: bool | None = None) -> None:
        self.private_mounts = linux.is_root() if private_mounts is None else private_mounts

    def launch(
        self,
        config: ContainerConfig,
        info: LaunchInfo,
        *,
        stdin: IO[Any] | int | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> Process:
        if info.mounts and not self.private_mounts:
            raise LaunchError("secret mounts need a private mount namespace, which needs root")
        argv, executable = command_argv(config)
        env = task_environment(config, info)
        switch = config.user.uid != os.geteuid()
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        setup = _ChildSetup(
            mounts=info.mounts if self.private_mounts else (),
            detach=info.detach if self.private_mounts else (),
            private=self.private_mounts,
            user=config.user if switch else None,
            report=report_w,
            parent=os.getpid(),
        )
        try:
            popen = subprocess.Popen(  # noqa: S603 (argv comes from the task's CommandInfo)
                argv,
                executable=executable,
                env=env,
                cwd=config.sandbox,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=setup,  # noqa: PLW1509 (namespace set-up must run in the child)
                process_group=0,
                close_fds=True,
            )
        except subprocess.SubprocessError:
            os.close(report_w)
            detail = _read_all(report_r).decode("utf-8", "replace") or "unknown error"
            raise LaunchError(f"cannot set up the task's container: {detail}") from None
        except OSError as error:
            os.close(report_w)
            os.close(report_r)
            raise LaunchError(
                f"cannot start the task: {error.strerror}: '{error.filename or executable}'"
            ) from None
        os.close(report_w)
        os.close(report_r)
        return _PopenProcess(popen)


@attrs.frozen
class _ChildSetup:
    """Runs in the child between fork and exec: namespace, mounts, then the user switch."""

    mounts: Sequence[Mount]
    detach: Sequence[Path]
    private: bool
    user: TaskUser | None
    report: int
    parent: int

    def __call__(self) -> None:
        step = "set up"
        try:
            if self.private:
                step = "create a private mount namespace"
                linux.unshare_mount_namespace()
                linux.make_mounts_private()
                for mount in self.mounts:
                    step = f"bind the secret onto '{mount.target}'"
                    linux.bind_mount(mount.source, mount.target, read_only=mount.read_only)
                for point in self.detach:
                    step = f"detach '{point}'"
                    linux.umount(point, detach=True)
            if self.user is not None:
                step = f"switch to user '{self.user.name}'"
                os.setgroups(list(self.user.groups))
                os.setgid(self.user.gid)
                os.setuid(self.user.uid)
            step = "ask to die with its launcher"
            linux.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.parent:
                raise OSError(errno.ESRCH, "the launcher is gone")  # noqa: TRY301
        except OSError as error:
            os.write(self.report, f"cannot {step}: {error.strerror}".encode())
            raise


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
