"""The container launcher for tasks with an image: an OCI bundle, run by runc.

runc itself runs inside a container of our init (:mod:`.init`): in its PID namespace,
so that a front end killed with SIGKILL takes runc and the task with it (runc alone
would leave the task running), and in its mount namespace, where the image's overlay
is mounted and runc keeps its state on a tmpfs of its own: none of it is ever in the
host's mount table, and none of it outlives the container.

The bundle's ``config.json`` carries the task's environment, secrets included, so it is
written only to a small detached tmpfs (``0700``, root's; without root, the user's)
attached in that mount namespace, and deleted as soon as runc has created the
container: the file never reaches a disk, and is gone while the task runs.

In the container: the image's root filesystem (an overlay; see ``images``), the
sandbox at ``/mnt/mesos/sandbox`` as in Mesos (``MESOS_SANDBOX``, and the working
directory unless the image names its own WorkingDir), the secret volumes' tmpfs bound
read-only at ``/mnt/mesos/sandbox/.mesos-secrets`` (a relative ``container_path`` is a
relative link into it, made in the sandbox: it resolves there as on the host), and each
other secret file bound at its path — an absolute ``container_path`` inside the image,
an RW one inside the sandbox. What runs is the task's command merged with the image's
Entrypoint and Cmd, with the image's Env under the task's environment (``image_config``).

A network namespace from the ``network`` isolator is named in the spec
(``linux.namespaces``, by its ``/run/netns`` path): runc joins the task to it, where the
task would otherwise share the host's network.

Without root, the same happens in a user namespace of the user's own where the user is
mapped as root, and no one else is mapped (``userns``): the bundle's and state's tmpfs
are made there (in the secret volumes' namespace when they made one), our init joins it
and mounts the overlay in its mount namespace, and runc runs as that namespace's root,
which makes it use its rootless cgroup manager. The task is that root: the user, seen
from the host. The spec then binds the host's ``/sys`` read-only, the mounts under it
too (a sysfs is mounted only by the owner of the network namespace), and asks for no
extra groups (``setgroups`` is denied there).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from .. import linux, nofollow
from ..errors import LaunchError
from ..isolator import ContainerConfig, Filesystem, LaunchInfo, Mount
from . import capabilities as caps
from . import userns
from .launcher import (
    DEFAULT_PATH,
    PROC_MASKED,
    PROC_READ_ONLY,
    ExecPlan,
    InitProcess,
    Launcher,
    Process,
    Termination,
    command_argv,
    start_init,
    task_environment,
)
from .runtime import container_part

__all__ = ["SANDBOX", "RuncLauncher"]

#: Where the sandbox appears in the container, as in Mesos (--sandbox_directory).
SANDBOX = "/mnt/mesos/sandbox"
_START_TIMEOUT_S = 60.0

_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_CLONE_NEWUTS = 0x04000000  # runc gives the task a UTS namespace of its own


class _RuncProcess(InitProcess):
    """The container init running ``runc run``: its status is runc's, which is the task's."""

    def wait(self) -> Termination:
        return self._termination(super().wait())

    def poll(self) -> Termination | None:
        termination = super().poll()
        return None if termination is None else self._termination(termination)

    @staticmethod
    def _termination(termination: Termination) -> Termination:
        # runc reports a container killed by signal N as 128 + N.
        code = termination.exit_code
        if code is not None and code > 128:
            return Termination(signal=code - 128)
        return termination


class RuncLauncher(Launcher):
    """Runs tasks whose ``config.rootfs`` is set, with ``runc run``, inside our init."""

    def __init__(self, runtime_dir: Path, *, runc: str = "runc") -> None:
        self.runtime_dir = Path(runtime_dir)
        self.runc_path = shutil.which(runc) or runc

    def container_dir(self, container_id: str) -> Path:
        return container_part(self.runtime_dir, container_id, "runc")

    @staticmethod
    def name_of(container_id: str) -> str:
        return f"mesos-secrets-{container_id}"

    def launch(
        self,
        config: ContainerConfig,
        info: LaunchInfo,
        *,
        stdin: IO[Any] | int | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> Process:
        if config.rootfs is None:
            raise LaunchError("the runc launcher runs tasks in an image, and this task has none")
        directory = self.container_dir(config.container_id)
        bundle, state = directory / "bundle", directory / "state"
        for path in (bundle, state):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid_file = directory / "pid"
        name = self.name_of(config.container_id)
        rootless = not linux.is_root()
        spec = self.spec(config, info, rootless=rootless)
        opened: list[int] = []
        try:
            bundle_fd, state_fd, user_namespace = self._small_tmpfs(info, opened, rootless=rootless)
            fd = os.open(
                "config.json",
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o600,
                dir_fd=bundle_fd,
            )
            with os.fdopen(fd, "w") as out:
                json.dump(spec, out)
            filesystems = [
                *info.filesystems,
                Filesystem(bundle_fd, bundle),
                Filesystem(state_fd, state),
            ]
            plan = {
                "ipc": False,  # runc makes the task's own
                "filesystems": [[fs.fd, str(fs.at)] for fs in filesystems],
                "mounts": [m.to_plan() for m in info.mounts if m.fstype is not None],
                "task": {
                    "argv": [
                        _b64(a)
                        for a in (
                            self.runc_path,
                            "--root",
                            str(state),
                            "run",
                            "--bundle",
                            str(bundle),
                            "--pid-file",
                            str(pid_file),
                            name,
                        )
                    ],
                    "executable": self.runc_path,
                    "env": [[_b64("PATH"), _b64(DEFAULT_PATH)]],
                    "cwd": "/",
                    "user": None,
                    "capabilities": None,
                },
            }
            popen = start_init(
                plan,
                cgroups=config.cgroup_procs,
                user_namespace=rootless,
                join_user_namespace=user_namespace,
                fds=[fs.fd for fs in filesystems],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            try:
                self._wait_created(popen, pid_file)
            except BaseException:
                popen.kill()
                popen.wait()
                raise
            # The container exists: its spec, environment and all, goes.
            os.unlink("config.json", dir_fd=bundle_fd)
        finally:
            for made in opened:
                os.close(made)
        return _RuncProcess(popen, plan=self._exec_plan(config, info, rootless=rootless))

    @staticmethod
    def _small_tmpfs(
        info: LaunchInfo, opened: list[int], *, rootless: bool
    ) -> tuple[int, int, int | None]:
        """The bundle's and runc's state's tmpfs (both hold the environment: config.json,
        and runc's state.json; never on disk), detached, ``0700``, and, without root,
        the user namespace they were made in, which the init joins: the secret volumes'
        if they made one (their tmpfs must be attached there too), else a new one; the
        user is its root, as runc needs. Every fd is added to ``opened`` as it comes,
        for the caller to close."""
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        small: dict[str, str | None] = {"size": "1m", "mode": "0700"}
        if rootless:
            made = userns.private_tmpfs(
                small,
                flags,
                source="mesos-secrets",
                count=2,
                join=info.user_namespace,
                as_root=True,
                what="runc's bundle",
            )
            opened += [*made.tmpfs, made.user_namespace]
            if not made.as_root:
                raise LaunchError(
                    "the container's user namespace does not map the user as its root, "
                    "which runc needs to run a task in an image"
                )
            bundle_fd, state_fd = made.tmpfs
            return bundle_fd, state_fd, made.user_namespace
        bundle_fd, _ = linux.new_tmpfs(small, flags, source="mesos-secrets")
        opened.append(bundle_fd)
        state_fd, _ = linux.new_tmpfs(small, flags, source="mesos-secrets")
        opened.append(state_fd)
        return bundle_fd, state_fd, None

    @staticmethod
    def _exec_plan(config: ContainerConfig, info: LaunchInfo, *, rootless: bool) -> ExecPlan:
        """A command in the container (a check) runs as runc runs the task: in its
        namespaces (entered through the task's process: our init's PID 1, then runc,
        then runc's container process), as its user, with its capabilities."""
        user = config.user
        namespaces = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWIPC | _CLONE_NEWUTS
        if info.network_namespace is not None:
            namespaces |= linux.CLONE_NEWNET
        if rootless:  # the user namespace first: the rest belong to it
            namespaces |= linux.CLONE_NEWUSER
        return ExecPlan(
            depth=3,
            namespaces=namespaces,
            cgroups=tuple(config.cgroup_procs),
            task={
                "cwd": SANDBOX,
                "user": (
                    {"uid": user.uid, "gid": user.gid, "groups": list(user.groups)}
                    if user.uid != 0 and not rootless
                    else None
                ),
                "capabilities": sorted(caps.parse(_CAPABILITIES)),
                "no_new_privileges": True,
            },
            environment=task_environment(config, info, sandbox=SANDBOX),
        )

    @staticmethod
    def _wait_created(popen: subprocess.Popen[bytes], pid_file: Path) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not pid_file.exists():
            code = popen.poll()
            if code is not None:
                raise LaunchError(
                    f"runc could not start the container (exit status {code}; its error is above)"
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"runc did not start the container within {_START_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.005)

    def destroy(self, container_id: str) -> None:
        """Remove what the launcher kept (runc's state lived in the container). Idempotent."""
        nofollow.remove_tree(self.container_dir(container_id))

    def spec(
        self, config: ContainerConfig, info: LaunchInfo, *, rootless: bool = False
    ) -> dict[str, Any]:
        """The OCI runtime spec for the task (held in memory and on the bundle's tmpfs
        only). ``rootless``: runc runs as root in the container's user namespace, where
        only the user is mapped (as root): the task is that root, and the host's ``/sys``
        is bound read-only (a sysfs is mounted only from the network namespace's owner)."""
        assert config.rootfs is not None
        argv, _ = command_argv(config)
        env = task_environment(config, info, sandbox=SANDBOX)
        # The image's WorkingDir, as in Mesos (runc makes it if the image lacks it).
        image = config.image
        cwd = image.working_dir if image is not None and image.working_dir else SANDBOX
        user = config.user
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",  # noqa: S108 (inside the container)
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                **(
                    {"type": "none", "source": "/sys"}
                    if rootless
                    else {"type": "sysfs", "source": "sysfs"}
                ),
                "options": [
                    # The bind's mounts under it (cgroup hierarchies…) read-only too.
                    *(["rbind", "rro", "rnosuid", "rnoexec", "rnodev"] if rootless else []),
                    "nosuid",
                    "noexec",
                    "nodev",
                    "ro",
                ],
            },
            {
                "destination": SANDBOX,
                "type": "bind",
                "source": str(config.sandbox),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
        ]
        mounts += [
            self._secret_mount(config, mount) for mount in info.mounts if mount.fstype is None
        ]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": (
                    {"uid": 0, "gid": 0, "additionalGids": []}
                    if rootless
                    else {
                        "uid": user.uid,
                        "gid": user.gid,
                        "additionalGids": [g for g in user.groups if g != user.gid],
                    }
                ),
                "args": argv,
                "env": [
                    f"{k.decode(errors='surrogateescape')}={v.decode(errors='surrogateescape')}"
                    for k, v in env.items()
                ],
                "cwd": cwd,
                "capabilities": {
                    kind: list(_CAPABILITIES) for kind in ("bounding", "effective", "permitted")
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": True,
            },
            "root": {"path": str(config.rootfs), "readonly": False},
            "hostname": "mesos-secrets",
            "mounts": mounts,
            "linux": {
                **({"cgroupsPath": config.runc_cgroup} if config.runc_cgroup else {}),
                "namespaces": [
                    *({"type": kind} for kind in ("pid", "ipc", "uts", "mount")),
                    # The network isolator's namespace, seen where the host has it: runc
                    # runs in our init's mount namespace, a copy of the host's.
                    *(
                        [{"type": "network", "path": str(info.network_namespace)}]
                        if info.network_namespace is not None
                        else []
                    ),
                ],
                "maskedPaths": list(PROC_MASKED),
                "readonlyPaths": list(PROC_READ_ONLY),
            },
        }

    @staticmethod
    def _secret_mount(config: ContainerConfig, mount: Mount) -> dict[str, Any]:
        assert config.rootfs is not None
        target = mount.target
        with contextlib.suppress(ValueError):
            return _bind(mount, "/" + str(target.relative_to(config.rootfs)))
        with contextlib.suppress(ValueError):
            return _bind(mount, f"{SANDBOX}/{target.relative_to(config.sandbox)}")
        raise LaunchError(
            f"secret mount target '{target}' is neither in the image nor in the sandbox"
        )


def _b64(value: str) -> str:
    return base64.b64encode(os.fsencode(value)).decode("ascii")


def _bind(mount: Mount, destination: str) -> dict[str, Any]:
    options = ["bind", "ro" if mount.read_only else "rw", "nosuid", "nodev", "noexec"]
    return {
        "destination": destination,
        "type": "bind",
        "source": str(mount.source),
        "options": options,
    }
