"""Launchers: start the task with what the isolators prepared, and wait for it.

Every container is started by our init (:mod:`.init`), a fresh process, so that a
threaded front end never runs code between ``fork`` and ``exec``. It is sealed: its own
PID namespace with a fresh ``/proc`` (it sees, signals and traces no other process),
its own mount namespace where its mounts are made (the host's mount table never sees
them), its own IPC namespace, the container's cgroups, reduced capabilities for a root
task, the task's user; and it dies whole: when its main process ends, when its front
end dies however it dies. A non-root front end gets the same through a user namespace.
When an isolator gave the task a network namespace (the ``network`` isolator), the init
joins it first: the front end itself, and the secrets' traffic, stay in the host's.

:class:`PosixLauncher` runs the task on the host's root filesystem, in its sandbox
directory; :class:`~.runc.RuncLauncher` runs tasks in images. Secrets reach the task
through its environment and its mounts only, never through a command line: the init
gets its plan, environment included, through a pipe.

The task's environment is built in Mesos' order (``reference/mesos.md`` §5), later
entries winning: a small base (PATH, HOME, USER, MESOS_SANDBOX…; nothing else of the
caller's environment, so a ``VAULT_TOKEN`` in the operator's shell never reaches the
task) < its image's Env < the resolved secrets < the command's VALUE variables.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import errno
import marshal
import os
import pwd
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from .. import linux
from ..errors import LaunchError
from ..image_config import launch_command
from ..isolator import ContainerConfig, LaunchInfo, TaskUser
from ..mesos import VariableType
from . import capabilities as caps

__all__ = [
    "DEFAULT_PATH",
    "INIT",
    "ExecPlan",
    "InitProcess",
    "Launcher",
    "PosixLauncher",
    "Process",
    "Termination",
    "command_argv",
    "keeping_the_terminal",
    "open_network_namespace",
    "resolve_user",
    "start_init",
    "task_environment",
]

#: The container init program, run by a bare interpreter: ``python -I -S -c BOOT INIT
#: ARGS…``, BOOT loading it by path as an import would, from its compiled form in
#: ``__pycache__`` (a script run by path is compiled anew every time), then calling
#: its ``main`` with INIT and the arguments.
INIT = Path(__file__).with_name("init.py")
BOOT = (
    "import sys; from importlib.machinery import SourceFileLoader as L; "
    "m = type(sys)('_mesos_secrets_init'); m.__file__ = sys.argv[1]; "
    "L(m.__name__, sys.argv[1]).exec_module(m); m.main(sys.argv[1:])"
)
#: How long the init may take to make the container and start the task.
START_TIMEOUT_S = 60.0
#: Kernel interfaces no task may use: hidden (runc's defaults, for images too).
PROC_MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
#: Kernel settings no task may change (a root task writing core_pattern owns the node).
PROC_READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

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
        """Pass ``sig`` on to the task (SIGKILL: end the whole container now)."""

    @abc.abstractmethod
    def poll(self) -> Termination | None: ...

    def exec(
        self, argv: Sequence[str], executable: str, environment: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        """Start a command in the running container, as its task runs (see
        :meth:`InitProcess.exec`)."""
        raise LaunchError("this container cannot run a command besides its task")

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what is held to reach the container (after it ended)."""


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
    """``(argv, executable)`` for the task's CommandInfo, as Mesos reads it, merged with
    its image's Entrypoint and Cmd (see :func:`~mesos_secrets.image_config.launch_command`)."""
    command = launch_command(config.command, config.image)
    if command is not None and command.shell and command.value:
        return ["/bin/sh", "-c", command.value], "/bin/sh"
    if command is not None and not command.shell and command.value:
        return list(command.arguments) or [command.value], command.value
    if command is not None and not command.shell and command.arguments:
        # No value and no image: the first argument is the program, as Docker reads an
        # image's Cmd.
        return list(command.arguments), command.arguments[0]
    raise LaunchError(
        "the task has no command to run: CommandInfo has no value (nor, without a shell, "
        "arguments), and the task has no image whose own Entrypoint or Cmd could run"
    )


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
    for name, text in config.image.env if config.image else ():
        env[name] = text
    for name, value in info.environment.items():
        env[name] = value.reveal()
    environment = config.command.environment if config.command else None
    for variable in environment.variables if environment else ():
        if variable.type is VariableType.VALUE and variable.value is not None:
            env[variable.name] = variable.value
    return {os.fsencode(k): v if isinstance(v, bytes) else os.fsencode(v) for k, v in env.items()}


def _b64(value: str | bytes) -> str:
    return base64.b64encode(os.fsencode(value)).decode("ascii")


@attrs.frozen
class ExecPlan:
    """How to run a command in a running container as its task runs: the process whose
    namespaces it enters (``depth`` generations below the init's supervisor: 1 is PID 1;
    deeper for runc's task), which namespaces (``CLONE_*`` flags), the cgroups it joins,
    and the task's set-up (user, capabilities, directory, environment: held in memory
    only, for as long as the container runs)."""

    depth: int
    namespaces: int
    cgroups: tuple[str, ...]
    task: Mapping[str, Any] = attrs.field(repr=False)
    environment: Mapping[bytes, bytes] = attrs.field(repr=False)


class InitProcess(Process):
    """A container, seen through its init's supervisor process (our child).

    Signals sent to it are passed on to the task; SIGKILL kills the supervisor, and with
    it (parent-death signals) PID 1 and so the whole PID namespace. Its exit status is
    the task's.
    """

    def __init__(self, popen: subprocess.Popen[bytes], *, plan: ExecPlan | None = None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._plan = plan
        self._lock = threading.Lock()
        self._target: int | None = None  # a pidfd on the process whose namespaces we enter
        self._pidfd: int | None = None
        if plan is not None:
            # Opened now, while the supervisor is our child and not reaped: it is ours.
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(popen.pid)

    def exec(
        self, argv: Sequence[str], executable: str, environment: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the container: its cgroups and namespaces, its user,
        capabilities and sandbox, the task's environment (secrets included) with
        ``environment`` over it. Returns once the command runs; its exit status is the
        command's, SIGTERM kills it and what it started. Nothing of it is logged: its
        output goes to ``/dev/null``. A :class:`LaunchError` if it cannot be started
        (the container has ended…)."""
        if self._plan is None:
            return super().exec(argv, executable, environment)
        plan = self._plan
        env = dict(plan.environment)
        env.update({os.fsencode(k): os.fsencode(v) for k, v in environment.items()})
        task = {
            **plan.task,
            "argv": [_b64(a) for a in argv],
            "executable": executable,
            "env": [[_b64(k), _b64(v)] for k, v in env.items()],
            "terminal": False,
        }
        target = self._find_target()
        return start_init(
            {"target": target, "namespaces": plan.namespaces, "task": task},
            cgroups=plan.cgroups,
            mode="--exec",
            fds=[target],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _find_target(self) -> int:
        """A pidfd on the process whose namespaces a command enters, found once by
        walking down from the supervisor: each step is checked to be a child of the one
        above while both still run, so a reused pid never stands for the container's."""
        with self._lock:
            if self._target is not None:
                return self._target
            assert self._plan is not None
            if self._pidfd is None or _exited(self._pidfd):
                raise LaunchError("the container has ended")
            fd, pid = self._pidfd, self.pid
            try:
                for _ in range(self._plan.depth):
                    child_fd, pid = _only_child(fd, pid)
                    if fd != self._pidfd:
                        os.close(fd)
                    fd = child_fd
            except OSError:
                if fd != self._pidfd:
                    os.close(fd)
                raise LaunchError("the container has ended") from None
            self._target = fd
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in {self._pidfd, self._target} - {None}:
                assert fd is not None
                os.close(fd)
            self._pidfd = self._target = None

    def wait(self) -> Termination:
        return Termination.from_returncode(self.popen.wait())

    def poll(self) -> Termination | None:
        code = self.popen.poll()
        return None if code is None else Termination.from_returncode(code)

    def kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)  # polls first: never a reused pid


def _exited(pidfd: int) -> bool:
    """A pidfd is readable once its process has ended."""
    return bool(select.select([pidfd], [], [], 0)[0])


def _children(pid: int) -> list[int]:
    """Every child of ``pid``, whichever of its threads forked it."""
    found = []
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/children", encoding="ascii") as children:
            found += [int(child) for child in children.read().split()]
    return found


def _child_pid(pid: int) -> int:
    children = _children(pid)
    if len(children) != 1:
        raise OSError(errno.ESRCH, "not one child")
    return children[0]


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def _only_child(parent_fd: int, parent: int) -> tuple[int, int]:
    """A pidfd on ``parent``'s only child, and its pid, checked to be it: the parent,
    which ``parent_fd`` refers to, still runs, and the child is its child while the
    child's pidfd is open."""
    child = _child_pid(parent)
    fd = os.pidfd_open(child)
    try:
        changed = _parent_of(child) != parent or _exited(parent_fd) or _exited(fd)
    except BaseException:
        os.close(fd)
        raise
    if changed:
        os.close(fd)
        raise OSError(errno.ESRCH, "the container's processes changed")
    return fd, child


def start_init(
    plan: dict[str, Any],
    *,
    cgroups: Sequence[str] = (),
    user_namespace: bool = False,
    join_user_namespace: int | None = None,
    mode: str | None = None,
    fds: Collection[int] = (),
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the container init with ``plan``; return once the task's program runs.

    It is put in ``cgroups`` (their ``cgroup.procs`` files) before it reads its plan,
    so before it can start anything. ``fds`` (the detached filesystems) are passed to it.
    ``user_namespace``: it makes the task's namespaces in a user namespace, a new one or
    ``join_user_namespace`` (an fd: where the filesystems were made).
    A failure before the task runs is a :class:`LaunchError` with the init's one-line
    report.
    """
    plan = {**plan, "parent": os.getpid()}
    plan_r, plan_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    argv = [sys.executable, "-I", "-S", "-c", BOOT, str(INIT), str(plan_r), str(report_w)]
    if user_namespace and join_user_namespace is not None:
        argv.append(f"--user-namespace={join_user_namespace}")
        fds = [*fds, join_user_namespace]
    elif user_namespace:
        argv.append("--user-namespace")
    elif mode is not None:
        argv.append(mode)
    try:
        popen = subprocess.Popen(  # noqa: S603 (fixed argv: fd numbers only)
            argv,
            # The interpreter running us, by a link that needs no search permission on
            # its directories (a non-root user may not be able to reach it by its path).
            executable="/proc/self/exe",
            pass_fds=(plan_r, report_w, *fds),
            env={},
            cwd="/",
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            process_group=0,
            close_fds=True,
        )
    except OSError as error:
        for fd in (plan_w, report_r):
            os.close(fd)
        raise LaunchError(f"cannot start the container's init: {error.strerror}") from None
    finally:
        os.close(plan_r)
        os.close(report_w)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        try:
            # Here, while its interpreter starts, not by the init itself afterwards:
            # moving a process into a cgroup can wait for the kernel (an RCU grace
            # period on cgroup v1, 10-25 ms here), and both then wait at once.
            failed = _join_cgroups(popen.pid, cgroups)
            if failed is None:  # else no plan: the init ends, and this says why
                _write_all(plan_w, marshal.dumps(plan), deadline)
        except BrokenPipeError:
            pass  # the init is gone already: its report says why
        finally:
            os.close(plan_w)
        message = _read_report(report_r, deadline)
    except BaseException:  # an interrupt, a timeout: the container goes with the launch
        popen.kill()
        popen.wait()
        raise
    message = failed or message
    if message is not None:
        popen.wait()
        raise LaunchError(message)
    return popen


def _join_cgroups(pid: int, cgroups: Sequence[str]) -> str | None:
    """Move ``pid`` (our child, not yet reaped: no other process can have its pid) into
    each cgroup; what failed, as the init would have said it, or None."""
    for procs in cgroups:
        try:
            with open(procs, "w", encoding="ascii") as out:
                out.write(str(pid))
        except OSError as error:
            where = os.path.dirname(procs)
            return (
                f"cannot set up the task's container: cannot join cgroup '{where}': "
                f"{error.strerror}"
            )
    return None


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
            raise LaunchError(f"the container was not ready within {START_TIMEOUT_S:.0f}s")
        view = view[os.write(fd, view[:4096]) :]


def _read_report(fd: int, deadline: float) -> str | None:
    """The init's report: one line if the container could not be made or the task's
    program not started; None (end of file, nothing said) once the program runs. The
    init reports every failure before that, so there is nothing to guess from its
    status: a task that ends at once, even with a non-zero status, has run."""
    chunks = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise LaunchError(f"the container was not ready within {START_TIMEOUT_S:.0f}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace") if chunks else None


class PosixLauncher(Launcher):
    """Runs tasks on the host's root filesystem, each in a sealed container.

    ``capabilities``: what a root task keeps (None: all of them). ``mask``: host paths
    no task may see (the runtime directory, the image store, the embedded store's
    files…): each is covered, in the task's mount namespace, by an empty read-only tmpfs
    (a directory) or ``/dev/null`` (a file); a sandbox or a secret's target at or under
    one of them is refused. ``read_only_host``: a task running as root sees the host's
    filesystem read-only (its sandbox, a private ``/tmp`` and a minimal ``/dev``
    excepted): uid 0 owns most of the host's files, and writing one of them (a cron
    job, a library preloaded by every program) would make it root on the node.
    ``no_new_privileges``: no task gains privileges through a set-user-ID program or
    file capabilities (a non-root task could otherwise become root).
    """

    def __init__(
        self,
        *,
        capabilities: Collection[int] | None = caps.DEFAULT,
        mask: Sequence[Path] = (),
        read_only_host: bool = True,
        no_new_privileges: bool = True,
    ) -> None:
        self.capabilities = None if capabilities is None else frozenset(capabilities)
        self.mask = tuple(Path(os.path.realpath(p)) for p in mask)
        self.read_only_host = read_only_host
        self.no_new_privileges = no_new_privileges

    def launch(
        self,
        config: ContainerConfig,
        info: LaunchInfo,
        *,
        stdin: IO[Any] | int | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> Process:
        root = linux.is_root()
        argv, executable = command_argv(config)
        sandbox = Path(os.path.realpath(config.sandbox))
        self._check_not_hidden(sandbox, info)
        env = task_environment(config, info)
        switch = config.user.uid != os.geteuid()
        as_root = config.user.uid == 0
        task = {
            "argv": [_b64(a) for a in argv],
            "executable": executable,
            "env": [[_b64(k), _b64(v)] for k, v in env.items()],
            "cwd": str(sandbox),
            "user": (
                {"uid": config.user.uid, "gid": config.user.gid, "groups": list(config.user.groups)}
                if switch
                else None
            ),
            "capabilities": (
                sorted(self.capabilities) if root and self.capabilities is not None else None
            ),
            "no_new_privileges": self.no_new_privileges,
            "terminal": _is_terminal(stdin),
        }
        network = open_network_namespace(info.network_namespace, root=root)
        plan = {
            "ipc": True,
            "network": network,
            "filesystems": [[fs.fd, str(fs.at)] for fs in info.filesystems],
            "mounts": [mount.to_plan() for mount in info.mounts],
            "detach": [str(point) for point in info.detach],
            "mask": [str(p) for p in self.mask],
            "proc_mask": list(PROC_MASKED),
            "read_only": list(PROC_READ_ONLY),
            "read_only_host": root and as_root and self.read_only_host,
            "sandbox": str(sandbox),
            "task": task,
        }
        try:
            popen = start_init(
                plan,
                cgroups=config.cgroup_procs,
                user_namespace=not root,
                join_user_namespace=None if root else info.user_namespace,
                fds=[fs.fd for fs in info.filesystems] + ([] if network is None else [network]),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        finally:
            if network is not None:
                os.close(network)
        namespaces = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWIPC
        if network is not None:  # a command (a check) runs in the task's network too
            namespaces |= linux.CLONE_NEWNET
        exec_plan = ExecPlan(
            depth=1,  # PID 1, in the container's namespaces
            namespaces=namespaces if root else namespaces | linux.CLONE_NEWUSER,
            cgroups=tuple(config.cgroup_procs),
            task={k: v for k, v in task.items() if k not in ("argv", "executable", "env")},
            environment=env,
        )
        return InitProcess(popen, plan=exec_plan)

    def _check_not_hidden(self, sandbox: Path, info: LaunchInfo) -> None:
        """What the task needs may not be where it must not look (the hidden paths would
        be shown, or hide it)."""
        needed = [("its sandbox", sandbox)] + [
            (f"the secret's path '{m.target}'", Path(m.target)) for m in info.mounts
        ]
        for what, path in needed:
            for hidden in self.mask:
                if path == hidden or hidden in path.parents:
                    where = "is in"
                elif path in hidden.parents:
                    where = "holds"
                else:
                    continue
                raise LaunchError(
                    f"{what} {where} '{hidden}', which tasks may not see (the runtime "
                    "directory, the image store, the configuration or the store's files)"
                )


def open_network_namespace(path: Path | None, *, root: bool) -> int | None:
    """An fd of the network namespace the task joins (None: the host's, no fd), for the
    container's init to ``setns`` into before it unshares the rest. Only root can: a
    namespace in ``/run/netns`` belongs to the host's user namespace."""
    if path is None:
        return None
    if not root:
        raise LaunchError(
            f"the task's network namespace '{path}' can be joined by root only "
            f"(mesos-secrets runs as uid {os.geteuid()})"
        )
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise LaunchError(
            f"cannot open the task's network namespace '{path}': {error.strerror}"
        ) from None


def _is_terminal(stdin: IO[Any] | int | None) -> bool:
    """Should the task have the terminal? When its standard input is the terminal whose
    foreground we are (not when we run in the background: the shell keeps it)."""
    fd = 0 if stdin is None else stdin if isinstance(stdin, int) else stdin.fileno()
    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def keeping_the_terminal() -> Iterator[None]:
    """Tasks run in the foreground may take the terminal: take it back afterwards."""
    ours = _is_terminal(None)
    try:
        yield
    finally:
        if ours:
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                with contextlib.suppress(OSError):
                    os.tcsetpgrp(0, os.getpgrp())
            finally:
                signal.signal(signal.SIGTTOU, previous)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
