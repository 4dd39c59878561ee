"""The container's init: makes a sealed container around one task, and is its PID 1.

Run by a launcher as ``python -I -S -c BOOT init.py PLAN_FD REPORT_FD`` (a bare
interpreter, which ``BOOT`` (:data:`.launcher.BOOT`) has load this file by path, compiled
once; it loads the standard library and :mod:`mesos_secrets.linux`, by path too, and
nothing else of the package).
A fresh process started this way, never a ``preexec_fn``, so that launching from a
threaded front end (the executor) is safe. The plan (with the task's environment)
comes through a pipe, as :mod:`marshal` data: no value is ever on a command line, and
nothing but the front end that made the pipe can write to it.

It starts on every launch, so it loads as little as it can: no json, base64, typing,
contextlib (which would bring re, enum, functools and collections along), and signal's
C module without the Python wrapper's enums.

Two processes, after Mesos' ``mesos-containerizer launch`` (which is PID 1 of a container
too, forwards signals, reaps, records the wait status):

the supervisor (this process, in the front end's PID namespace)
    dies with the front end (parent-death signal), is not dumpable and writes no core,
    is in the container's cgroups so that every descendant is accounted for (the front
    end moves it there before it hands it its plan, while this interpreter starts),
    joins the container's network namespace if it has one (an fd the front end passed),
    unshares the PID, mount and IPC namespaces (and a user namespace when not root),
    forks PID 1, passes signals on to it, and ends as PID 1 reports the task ended: with
    the same exit status, or killed by the same signal.

PID 1 (in the new namespaces)
    makes the container's mounts in its own mount namespace only (the host's mount
    table never sees them): detached filesystems attached, overlays mounted, secrets
    bound over placeholders it checks are the inodes prepared for them, the staging
    points and private host paths hidden, a fresh ``/proc`` for the new PID namespace,
    a private ``/dev/shm``. Then it forks the task (its own process group, reduced
    capabilities, the task's user), passes signals on to it, reaps every orphan, and
    when the task's main process ends, exits: the kernel then kills whatever the task
    left running. PID 1 dies with the supervisor, and the supervisor with the front
    end (parent-death signals, each asked for by the process itself: they are not
    inherited across fork), so a killed front end takes the whole container with it.

With ``--exec``, it runs a command (a check) in a running container instead: in the
container's cgroups (moved there as the supervisor is), it enters its namespaces
(``setns`` through a pidfd), then forks
the command, set up as the task is (its user, capabilities, directory, environment).

Failures before the task runs are one line on the report pipe ("cannot start the task:
…", "cannot set up the task's container: …"); the report pipe reaching end-of-file with
nothing on it means the task's program was executed.
"""

from __future__ import annotations

import binascii
import codecs
import marshal
import os
import select
import stat
import sys
from importlib.machinery import SourceFileLoader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import signal
    from collections.abc import Sequence
    from typing import Any, NoReturn

    from mesos_secrets import linux
else:
    import _signal as signal  # signal's names and functions, without its enums

    def load(name: str, path: str) -> Any:
        """A module, by path, compiled once (``__pycache__``) like any import."""
        module = type(sys)(name)
        module.__file__ = path
        SourceFileLoader(name, path).exec_module(module)
        return module

    # A bare interpreter: the package is not importable, linux.py is beside us.
    linux = load(
        "_mesos_secrets_linux",
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "linux.py"),
    )

# Codecs load on first use, and with --exec the command is set up after entering the
# container's mount namespace, where the standard library may not be (an image): the one
# used then (to read /proc files) is loaded now.
codecs.lookup("ascii")

#: Signals passed on to the task (SIGKILL and SIGSTOP cannot be caught; SIGCHLD is ours).
FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
#: Exit status of the supervisor when the container could not be made.
SETUP_FAILED = 125
SHM_SIZE = "64m"


class SetupError(Exception):
    """A step of making the container failed; the message is the report's line."""


class Report:
    """The report pipe: one line if something fails before the task runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fail(self, message: str) -> None:
        if self.fd >= 0:
            try:  # noqa: SIM105 (contextlib is not loaded here)
                os.write(self.fd, message.encode("utf-8", "replace")[:4000])
            except OSError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _forward_to(target: int, *, group: bool) -> None:
    """Pass every forwarded signal on to ``target`` (a process; with ``group``, its
    process group, and the process itself should it have left that group)."""

    def forward(signum: int, _frame: object) -> None:
        _send(target, signum, group=group)

    for signum in FORWARDED:
        signal.signal(signum, forward)


def _send(target: int, signum: int, *, group: bool) -> None:
    try:
        if group:
            try:  # noqa: SIM105 (contextlib is not loaded here)
                os.killpg(target, signum)
            except ProcessLookupError:
                pass
            if os.getpgid(target) != target:  # it moved to a group of its own
                os.kill(target, signum)
        else:
            os.kill(target, signum)
    except ProcessLookupError:
        pass


def _hold_signals() -> list[int]:
    """Until there is a task to pass them to, signals are kept (PID 1 would otherwise
    ignore them, or die of SIGINT's exception in the middle of making mounts)."""
    held: list[int] = []
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: held.append(signum))
    return held


# --- the supervisor --------------------------------------------------------------------


def begin(plan_fd: int, *, user_namespace: bool, join: int | None = None) -> dict[str, Any]:
    """Become the supervisor: tied to the front end, not dumpable, in new namespaces.

    Unprivileged, the user namespace comes first and its maps are written while this
    process is still dumpable (the kernel makes a non-dumpable process's ``uid_map``
    root's): that is why the plan, and the values in it, are read only afterwards.
    With ``join`` (an fd), the user namespace is one the front end made already, with
    its maps, where the task's secret tmpfs was made: it is joined, and the task's PID,
    mount and IPC namespaces are made in it, so that it may attach that tmpfs.
    """
    step = "ask to die with the front end"
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        if join is not None:
            step = "join the container's user namespace"
            linux.setns(join, linux.CLONE_NEWUSER)
            os.close(join)
            step = "create the container's namespaces"
            linux.unshare(linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWIPC)
            linux.set_parent_death_signal(signal.SIGKILL)  # new credentials may clear it
        elif user_namespace:
            step = "create the container's namespaces"
            linux.unshare(
                linux.CLONE_NEWUSER | linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWIPC
            )
            step = "map the user into its namespace"
            linux.map_own_user()
            linux.set_parent_death_signal(signal.SIGKILL)  # new credentials may clear it
        step = "stop being dumpable"
        linux.set_dumpable(False)
        linux.disable_core_dumps()
        step = "read its plan"
        # From the front end, through a pipe no one else can write to.
        plan: dict[str, Any] = marshal.loads(_read_all(plan_fd))  # noqa: S302
        if os.getppid() != plan["parent"]:
            raise SetupError("the front end that started it is gone")  # noqa: TRY301
        for fd, _ in plan.get("filesystems", ()):
            os.set_inheritable(fd, False)
        network = plan.get("network")
        if network is not None:
            # Before the rest: the PID 1 and task forked below inherit it. The front end
            # opened it (the namespace of the network isolator, /run/netns/NAME).
            step = "join the container's network namespace"
            if user_namespace:
                raise SetupError("a network namespace is joined by root only")  # noqa: TRY301
            linux.setns(network, linux.CLONE_NEWNET)
            os.close(network)
        if not user_namespace:
            step = "create the container's namespaces"
            flags = linux.CLONE_NEWPID | linux.CLONE_NEWNS
            if plan.get("ipc"):
                flags |= linux.CLONE_NEWIPC
            linux.unshare(flags)
    except OSError as error:
        why = error.strerror or str(error)
        if user_namespace and join is None and step == "create the container's namespaces":
            # EPERM, ENOSPC (user.max_user_namespaces = 0), EACCES (AppArmor)
            why += (
                " (this kernel forbids unprivileged user namespaces, which an unprivileged "
                "front end makes containers in: allow them, or run as root)"
            )
        raise SetupError(f"cannot {step}: {why}") from None
    except (SetupError, ValueError, EOFError, TypeError, KeyError) as error:
        raise SetupError(f"cannot {step}: {error}") from None
    return plan


def supervise(plan: dict[str, Any], report: Report) -> NoReturn:
    """Fork PID 1, pass signals on to it, end as the task ended."""
    status_r, status_w = os.pipe()
    # PID 1 sees end-of-file here once the supervisor is gone: the only way it can tell,
    # from inside its namespace, that it missed the parent-death signal.
    lifeline_r, lifeline_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(status_r)
        os.close(lifeline_w)
        _die_with_supervisor(lifeline_r)
        pid1(plan, report, status_w)
    os.close(status_w)
    os.close(lifeline_r)
    for fd, _ in plan.get("filesystems", ()):
        os.close(fd)
    _forward_to(child, group=False)  # before the report closes: the launch is not over yet
    report.close()
    _, wait_status = os.waitpid(child, 0)
    outcome = _read_all(status_r).decode("ascii", "replace").split()
    _end_like(outcome, wait_status)


class _Reporting:
    """Any failure before the task's program runs is reported, never a traceback: the
    front end reads end-of-file with nothing said as "the program runs"."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if error is None:
            return
        if isinstance(error, SetupError):
            self.report.fail(f"cannot set up the task's container: {error}")
        else:  # a bug of ours: say so, in one line
            why = f"internal error ({type(error).__name__})"
            self.report.fail(f"cannot set up the task's container: {why}")
        os._exit(SETUP_FAILED)


def _die_with_supervisor(lifeline: int) -> None:
    """A parent-death signal is not inherited across fork: PID 1 asks for its own."""
    linux.set_parent_death_signal(signal.SIGKILL)
    if select.select([lifeline], [], [], 0)[0]:  # end of file: the supervisor is gone
        os._exit(SETUP_FAILED)
    os.close(lifeline)


def _end_like(outcome: list[str], wait_status: int) -> NoReturn:
    """Exit as the task did: its exit status, or killed by its signal."""
    if len(outcome) == 2 and outcome[0] == "exit":
        os._exit(int(outcome[1]))
    if len(outcome) == 2 and outcome[0] == "signal":
        signum = int(outcome[1])
    elif os.WIFSIGNALED(wait_status):  # PID 1 itself was killed (SIGKILL)
        signum = os.WTERMSIG(wait_status)
    else:
        os._exit(SETUP_FAILED if not os.WIFEXITED(wait_status) else os.WEXITSTATUS(wait_status))
    if signum not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)


# --- PID 1 --------------------------------------------------------------------------


def pid1(plan: dict[str, Any], report: Report, status_w: int) -> NoReturn:
    held = _hold_signals()
    with _Reporting(report):
        try:
            make_mounts(plan)
        except OSError as error:
            raise SetupError(f"cannot make its mounts: {error.strerror}") from None
    for fd, _ in plan.get("filesystems", ()):
        os.close(fd)
    task = os.fork()
    if task == 0:
        os.close(status_w)
        with _Reporting(report):
            run_task(plan["task"], report)
    _forward_to(task, group=True)  # before the report closes: see supervise()
    for signum in held:
        _send(task, signum, group=True)
    report.close()
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == task:
            if os.WIFSIGNALED(wait_status):
                outcome = f"signal {os.WTERMSIG(wait_status)}"
            else:
                outcome = f"exit {os.WEXITSTATUS(wait_status)}"
            os.write(status_w, outcome.encode("ascii"))
            os._exit(0)  # the kernel kills what is left in the namespace


def make_mounts(plan: dict[str, Any]) -> None:
    """Every mount of the container, in this (new, private) mount namespace."""
    try:
        linux.make_mounts_private()
    except OSError as error:
        raise SetupError(f"cannot make the mounts private: {error.strerror}") from None
    sandbox: str = plan.get("sandbox") or ""
    sealed = bool(plan.get("read_only_host")) and bool(sandbox)
    if sealed:
        _seal_host(sandbox)
    # After the seal, which makes every mount read-only: a detached filesystem's mount is
    # its owner's too (the secret volumes' isolator writes new values through it while
    # the task runs), and must stay as it was made.
    for fd, target in plan.get("filesystems", ()):
        try:
            linux.attach_mount(fd, target)
        except OSError as error:
            raise SetupError(
                f"cannot attach a filesystem at '{target}': {error.strerror}"
            ) from None
    for mount in plan.get("mounts", ()):
        _mount(mount)
    for point in plan.get("detach", ()):
        try:
            linux.umount(point, detach=True)
        except OSError as error:
            raise SetupError(f"cannot detach '{point}': {error.strerror}") from None
    for path in plan.get("mask", ()):
        _mask(path)
    if plan.get("proc", True):
        _mount_proc(plan)
    if sealed:
        kept = [sandbox] + [m["target"] for m in plan.get("mounts", ())]
        _cover("/tmp", [p for p in kept if p.startswith("/tmp/")], "mode=1777,size=64m")  # noqa: S108
        _cover("/dev", DEVICES, "mode=0755,size=64k", flags=linux.MS_NOSUID | linux.MS_NOEXEC)
        _dev_extras()
    if plan.get("ipc") and os.path.isdir("/dev/shm"):  # noqa: S108 (the container's own)
        try:
            linux.mount(
                "shm",
                "/dev/shm",  # noqa: S108
                "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                f"mode=1777,size={SHM_SIZE}",
            )
        except OSError as error:
            raise SetupError(f"cannot mount a private /dev/shm: {error.strerror}") from None


#: The devices a task on a read-only host keeps (not the node's disks).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


def _seal_host(sandbox: str) -> None:
    """The host's filesystem read-only, but for the sandbox (made writable again)."""
    try:
        linux.make_tree_read_only("/")
        fd = linux.openat2(
            linux.AT_FDCWD,
            sandbox,
            os.O_PATH | os.O_DIRECTORY,
            linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS,
        )
        try:
            clone = linux.clone_mount(fd, "")
            try:
                linux.set_mount_flags(clone, linux.MS_NOSUID | linux.MS_NODEV)
                linux.attach_mount(clone, fd)
            finally:
                os.close(clone)
        finally:
            os.close(fd)
    except OSError as error:
        raise SetupError(f"cannot make the host read-only: {error.strerror}") from None


def _cover(directory: str, keep: Sequence[str], options: str, flags: int = 0) -> None:
    """An empty tmpfs over ``directory``, with ``keep`` (paths under it) put back: each is
    copied (with what is mounted under it) before, and attached at its place after."""
    if not os.path.isdir(directory):
        return
    # What is under another kept path comes with it.
    keep = [p for p in keep if not any(p.startswith(f"{q.rstrip('/')}/") for q in keep)]
    kept = []
    try:
        for path in keep:
            if not os.path.lexists(path):
                continue
            kept.append(
                (path, os.path.isdir(path), linux.clone_mount(linux.AT_FDCWD, path, recursive=True))
            )
        linux.mount(
            "mesos-secrets", directory, "tmpfs", flags or linux.MS_NOSUID | linux.MS_NODEV, options
        )
        for path, is_dir, clone in kept:
            if is_dir:
                os.makedirs(path, 0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
            linux.attach_mount(clone, path)
    except OSError as error:
        raise SetupError(f"cannot cover '{directory}': {error.strerror}") from None
    finally:
        for _, _, clone in kept:
            os.close(clone)


def _dev_extras() -> None:
    """What a minimal /dev has besides devices: its own pty instance, links, shm."""
    try:
        os.mkdir("/dev/pts", 0o755)
        linux.mount(
            "devpts",
            "/dev/pts",
            "devpts",
            linux.MS_NOSUID | linux.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        )
        os.symlink("pts/ptmx", "/dev/ptmx")
        os.mkdir("/dev/shm", 0o1777)  # noqa: S108 (the container's own)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, f"/dev/{name}")
    except OSError as error:
        raise SetupError(f"cannot make /dev: {error.strerror}") from None


def _mount_proc(plan: dict[str, Any]) -> None:
    """A /proc of the container's own PID namespace; kernel settings read-only in it."""
    try:
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError as error:
        raise SetupError(f"cannot mount /proc: {error.strerror}") from None
    for path in plan.get("proc_mask", ()):
        _mask(path)
    for path in plan.get("read_only", ()):
        if os.path.exists(path):
            try:
                linux.bind_mount(path, path, read_only=True, noexec=True)
            except OSError as error:
                raise SetupError(f"cannot make '{path}' read-only: {error.strerror}") from None


def _mount(mount: dict[str, Any]) -> None:
    source, target = mount["source"], mount["target"]
    if mount.get("fstype"):
        try:
            linux.mount(source, target, mount["fstype"], 0, mount.get("options"))
        except OSError as error:
            raise SetupError(
                f"cannot mount the {mount['fstype']} filesystem at '{target}': {error.strerror}"
            ) from None
        return
    fd = _open_target(mount)
    try:
        linux.bind_onto(source, fd, read_only=mount.get("read_only", True))
    except OSError as error:
        raise SetupError(f"cannot bind the secret onto '{target}': {error.strerror}") from None
    finally:
        os.close(fd)


def _open_target(mount: dict[str, Any]) -> int:
    """Open a bind target without following any link, and check it is the prepared inode."""
    base, relative, target = mount.get("base"), mount.get("relative") or "", mount["target"]
    no_links = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
    try:
        if base is None:
            fd = linux.openat2(linux.AT_FDCWD, target, os.O_PATH, no_links)
        else:
            root = linux.openat2(linux.AT_FDCWD, base, os.O_PATH | os.O_DIRECTORY, no_links)
            try:
                fd = linux.openat2(root, relative, os.O_PATH, no_links | linux.RESOLVE_BENEATH)
            finally:
                os.close(root)
    except OSError as error:
        raise SetupError(
            f"cannot open the mount point '{target}' without following links: {error.strerror}"
        ) from None
    expected = mount.get("inode")
    info = os.fstat(fd)
    if expected is not None and [info.st_dev, info.st_ino] != list(expected):
        os.close(fd)
        raise SetupError(f"the mount point '{target}' was replaced before the task started")
    return fd


def _mask(path: str) -> None:
    """Hide a host path the task must not see: an empty read-only tmpfs, or /dev/null."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as error:
        raise SetupError(f"cannot hide '{path}': {error.strerror}") from None
    try:
        if stat.S_ISDIR(info.st_mode):
            linux.mount(
                "mesos-secrets-masked",
                path,
                "tmpfs",
                linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                "size=4k,mode=0555",
            )
        elif stat.S_ISREG(info.st_mode):
            linux.bind_mount("/dev/null", path, read_only=True)
    except OSError as error:
        raise SetupError(f"cannot hide '{path}': {error.strerror}") from None


# --- the task ------------------------------------------------------------------------


def run_task(task: dict[str, Any], report: Report) -> NoReturn:
    """In the task's process: its group, capabilities, user, directory; then exec."""
    executable = task["executable"]
    step = "start the task"
    try:
        for signum in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setpgid(0, 0)
        if task.get("terminal"):
            step = "take the terminal"
            _take_terminal()
        step = f"enter '{task['cwd']}'"
        _enter(task["cwd"])  # before the user switch, as Mesos does
        capabilities = task.get("capabilities")
        if capabilities is not None:
            step = "reduce the task's capabilities"
            keep = set(capabilities)
            linux.drop_bounding_capabilities(keep)
            if os.geteuid() == 0 and task.get("user") is None:
                linux.set_capabilities(keep)
        user = task.get("user")
        if user is not None:
            step = f"switch to user {user['uid']}"
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])
        if task.get("no_new_privileges"):
            step = "refuse new privileges"
            linux.set_no_new_privileges()
    except OSError as error:
        report.fail(f"cannot set up the task's container: cannot {step}: {error.strerror}")
        os._exit(SETUP_FAILED)
    argv = [binascii.a2b_base64(a) for a in task["argv"]]
    env = {binascii.a2b_base64(k): binascii.a2b_base64(v) for k, v in task["env"]}
    try:
        os.execvpe(os.fsencode(executable), argv, env)  # noqa: S606 (the task's own argv)
    except OSError as error:
        report.fail(f"cannot start the task: {error.strerror}: '{executable}'")
        os._exit(127)


def _take_terminal() -> None:
    """The task's process group becomes the terminal's foreground: it may read it (a
    background group that does is stopped), and ^C reaches it."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _enter(directory: str) -> None:
    """chdir, through an fd opened without following any link."""
    no_links = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
    fd = linux.openat2(linux.AT_FDCWD, directory, os.O_PATH | os.O_DIRECTORY, no_links)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


# --- a command in a running container (checks) ----------------------------------------


def join(plan_fd: int) -> dict[str, Any]:
    """Become a process of a running container: tied to the front end, not dumpable, in
    the container's cgroups (where the front end put it, so that it dies with the
    container), then in its namespaces,
    entered through a pidfd on one of its processes (passed by the front end, which
    opened it while that process was known to be the container's)."""
    step = "ask to die with the front end"
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        step = "stop being dumpable"
        linux.set_dumpable(False)
        linux.disable_core_dumps()
        step = "read its plan"
        # From the front end, through a pipe no one else can write to.
        plan: dict[str, Any] = marshal.loads(_read_all(plan_fd))  # noqa: S302
        if os.getppid() != plan["parent"]:
            raise SetupError("the front end that started it is gone")  # noqa: TRY301
        target: int = plan["target"]
        os.set_inheritable(target, False)
        step = "enter the container's namespaces"
        try:
            linux.setns(target, plan["namespaces"])
        except ProcessLookupError:
            raise SetupError("the container has ended") from None
        os.close(target)
    except OSError as error:
        raise SetupError(f"cannot {step}: {error.strerror}") from None
    except (SetupError, ValueError, EOFError, TypeError, KeyError) as error:
        raise SetupError(f"cannot {step}: {error}") from None
    return plan


def execute(plan: dict[str, Any], report: Report) -> NoReturn:
    """Fork the command (in the container's PID namespace: it is our child), set up as
    the task is, and end as it ends. SIGTERM kills its whole process group."""
    lifeline_r, lifeline_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(lifeline_w)
        _die_with_supervisor(lifeline_r)
        with _Reporting(report):
            run_task(plan["task"], report)
    os.close(lifeline_r)

    def end(_signum: int, _frame: object) -> None:
        _send(child, signal.SIGKILL, group=True)

    signal.signal(signal.SIGTERM, end)
    report.close()
    _, wait_status = os.waitpid(child, 0)
    _end_like([], wait_status)


def main(argv: list[str]) -> NoReturn:
    modes: tuple[list[str], ...] = ([], ["--user-namespace"], ["--exec"])
    user_namespace = None
    if argv[3:4] and argv[3].startswith("--user-namespace=") and argv[3][17:].isdigit():
        user_namespace = int(argv[3][17:])
        argv = [*argv[:3], "--user-namespace"]
    if len(argv) not in (3, 4) or argv[3:] not in modes:
        print(
            "usage: init.py PLAN_FD REPORT_FD [--user-namespace[=FD]|--exec] (run by a launcher)",
            file=sys.stderr,
        )
        os._exit(2)
    report = Report(int(argv[2]))
    os.set_inheritable(report.fd, False)  # the task must not hold it: its exec ends the launch
    if argv[3:] == ["--exec"]:
        linux.set_name("mesos-exec")
        with _Reporting(report):
            plan = join(int(argv[1]))
        execute(plan, report)
    linux.set_name("mesos-init")  # not "exe" (we are run as /proc/self/exe) in ps, top
    with _Reporting(report):
        plan = begin(
            int(argv[1]), user_namespace=argv[3:] == ["--user-namespace"], join=user_namespace
        )
    supervise(plan, report)


if __name__ == "__main__":
    main(sys.argv)
