"""The container launcher for tasks with an image: an OCI bundle, run by runc.

The bundle's ``config.json`` carries the task's environment, secrets included, so it is
written only to a small tmpfs of the container's own (``0700``, root only) and that
tmpfs is detached as soon as runc has created the container: the file never reaches a
disk, and is gone while the task runs. runc keeps no copy of the environment in its
state.

In the container: the image's root filesystem (an overlay; see ``images``), the
sandbox at ``/mnt/mesos/sandbox`` as in Mesos (the working directory and
``MESOS_SANDBOX``), and each secret file bound read-only at its path — an absolute
``container_path`` inside the image, a relative one inside the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from .. import linux
from ..errors import LaunchError
from ..isolator import ContainerConfig, LaunchInfo, Mount
from .launcher import Launcher, Process, Termination, command_argv, task_environment

__all__ = ["SANDBOX", "RuncLauncher"]

#: Where the sandbox appears in the container, as in Mesos (--sandbox_directory).
SANDBOX = "/mnt/mesos/sandbox"
_START_TIMEOUT_S = 60.0

_MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
_READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


class _RuncProcess(Process):
    def __init__(self, popen: subprocess.Popen[bytes], launcher: RuncLauncher, name: str) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.launcher = launcher
        self.name = name

    def wait(self) -> Termination:
        return self._termination(self.popen.wait())

    def poll(self) -> Termination | None:
        code = self.popen.poll()
        return None if code is None else self._termination(code)

    @staticmethod
    def _termination(code: int) -> Termination:
        # runc reports a container killed by signal N as 128 + N.
        if code > 128:
            return Termination(signal=code - 128)
        return Termination.from_returncode(code)

    def kill(self, sig: int) -> None:
        self.launcher.runc("kill", self.name, str(int(sig)), check=False)


class RuncLauncher(Launcher):
    """Runs tasks whose ``config.rootfs`` is set, with ``runc run``."""

    def __init__(self, runtime_dir: Path, *, runc: str = "runc") -> None:
        self.runtime_dir = Path(runtime_dir)
        self.runc_path = shutil.which(runc) or runc
        self.state = self.runtime_dir / "runc"

    def container_dir(self, container_id: str) -> Path:
        return self.runtime_dir / "containers" / container_id / "runc"

    @staticmethod
    def name_of(container_id: str) -> str:
        return f"mesos-secrets-{container_id}"

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 (fixed arguments: ids, signals, paths)
            [self.runc_path, "--root", str(self.state), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise LaunchError(f"runc {args[0]} failed: {result.stderr.strip()[-500:]}")
        return result

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
        bundle = directory / "bundle"
        bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        linux.mount(
            "tmpfs",
            bundle,
            "tmpfs",
            linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
            "size=1m,mode=0700",
        )
        pid_file = directory / "pid"
        name = self.name_of(config.container_id)
        try:
            spec = self.spec(config, info)
            fd = os.open(
                bundle / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            with os.fdopen(fd, "w") as out:
                json.dump(spec, out)
            popen = subprocess.Popen(  # noqa: S603
                [
                    self.runc_path,
                    "--root",
                    str(self.state),
                    "run",
                    "--bundle",
                    str(bundle),
                    "--pid-file",
                    str(pid_file),
                    name,
                ],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                process_group=0,
            )
            self._wait_created(popen, pid_file)
        finally:
            # The container exists (or failed to): its spec, environment and all, goes.
            linux.umount(bundle, detach=True)
        return _RuncProcess(popen, self, name)

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
                popen.kill()
                popen.wait()
                raise LaunchError(
                    f"runc did not start the container within {_START_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.005)

    def destroy(self, container_id: str) -> None:
        """Delete the runc container (if any) and what the launcher kept. Idempotent."""
        directory = self.container_dir(container_id)
        if directory.exists():
            self.runc("delete", "--force", self.name_of(container_id), check=False)
            linux.remove_tree(directory)

    def spec(self, config: ContainerConfig, info: LaunchInfo) -> dict[str, Any]:
        """The OCI runtime spec for the task (held in memory and on the bundle's tmpfs only)."""
        assert config.rootfs is not None
        argv, _ = command_argv(config)
        env = task_environment(config, info, sandbox=SANDBOX)
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
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": SANDBOX,
                "type": "bind",
                "source": str(config.sandbox),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
        ]
        mounts += [self._secret_mount(config, mount) for mount in info.mounts]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {
                    "uid": user.uid,
                    "gid": user.gid,
                    "additionalGids": [g for g in user.groups if g != user.gid],
                },
                "args": argv,
                "env": [
                    f"{k.decode(errors='surrogateescape')}={v.decode(errors='surrogateescape')}"
                    for k, v in env.items()
                ],
                "cwd": SANDBOX,
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
                "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")],
                "maskedPaths": _MASKED,
                "readonlyPaths": _READ_ONLY,
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


def _bind(mount: Mount, destination: str) -> dict[str, Any]:
    options = ["bind", "ro" if mount.read_only else "rw", "nosuid", "nodev", "noexec"]
    return {
        "destination": destination,
        "type": "bind",
        "source": str(mount.source),
        "options": options,
    }
