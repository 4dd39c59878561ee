"""Private tmpfs for an unprivileged front end, in a user namespace of its own.

As root, the secret volumes' tmpfs is a detached filesystem the front end makes
(``fsopen``), writes through its fd, and the container's init attaches inside the task's
mount namespace. A user without root cannot make a tmpfs in the host's namespaces. It
can in a user namespace it makes, with a mount namespace of that namespace's own. So
:func:`private_tmpfs` starts a short-lived helper (:data:`MAKER`, a bare interpreter, as
the init is). The helper unshares a user namespace and a mount namespace, maps the
user's own uid and gid into them (nothing else), makes the detached tmpfs there, and
hands back their fds and the user namespace's. Then it exits. The namespace lives on in
the fds.

The front end writes the secrets through a tmpfs fd, as root does (its files are the
user's: the uid is mapped). The container's init joins that user namespace
(``setns``) instead of making one, and makes the task's PID, mount and IPC namespaces
in it. Its mount namespace is then owned by the tmpfs's user namespace, so it may
attach the tmpfs there. Nothing is ever mounted in the host's mount namespace, and a
tmpfs goes when its last fd and the container's mount namespace do. What a user
namespace cannot give: ``noswap`` (the kernel allows it only to the host's root), so
rootless secret files may reach swap.

A task in an image is run by runc, which must be root in that namespace: there the
user is mapped as uid and gid 0 (:func:`maps_user_to_root`), and runc's own bundle and
state tmpfs are made in the same namespace (``join``) as the secrets'.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LaunchError

if TYPE_CHECKING:
    from ..isolator import ContainerConfig

__all__ = ["FORBIDDEN", "MAKER", "PrivateTmpfs", "maps_user_to_root", "private_tmpfs"]

#: The helper: run by a bare interpreter, loaded by path as the init is.
MAKER = Path(__file__).with_name("tmpfs_maker.py")
#: What it says when the kernel forbids unprivileged user namespaces.
FORBIDDEN = (
    "this kernel forbids unprivileged user namespaces (sysctl user.max_user_namespaces, "
    "kernel.unprivileged_userns_clone, or an AppArmor policy), which file secrets and "
    "images need without root; allow them, or run as root"
)
_TIMEOUT_S = 30.0


class PrivateTmpfs:
    """The fds of tmpfs (``tmpfs``, in the order asked for) and of the user namespace
    they were made in (all close-on-exec; the caller closes them), whether their pages
    are kept out of swap, and whether that namespace maps the user as its root."""

    def __init__(
        self, tmpfs: list[int], user_namespace: int, *, noswap: bool, as_root: bool
    ) -> None:
        self.tmpfs = tmpfs
        self.user_namespace = user_namespace
        self.noswap = noswap
        self.as_root = as_root


def maps_user_to_root(config: ContainerConfig) -> bool:
    """Is the user the root of the container's user namespace? For a task in an image:
    runc, which runs it, must be root there (as rootless runc and Podman map the user),
    so the task and every file it is given are root's inside, the user's outside. A
    task on the host's filesystem keeps its own uid, as the host shows it."""
    return config.rootfs is not None


def private_tmpfs(
    options: Mapping[str, str | None],
    flags: int,
    *,
    source: str,
    count: int = 1,
    join: int | None = None,
    as_root: bool = False,
    what: str = "the secret tmpfs",
) -> PrivateTmpfs:
    """``count`` detached tmpfs (``options`` as :func:`~mesos_secrets.linux.new_tmpfs`
    takes them: size, mode…; they are the user's) in a new
    user namespace of the calling user's, which maps the user as they are or ``as_root``
    (see the module), or in the one ``join`` (an fd) is. LaunchError in one line, saying
    it cannot make ``what``, if they cannot be made."""
    from .launcher import BOOT  # noqa: PLC0415 (the launcher's loader, for the helper too)

    user_namespace = f"join:{join}" if join is not None else "root" if as_root else "own"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = [sys.executable, "-I", "-S", "-c", BOOT, str(MAKER), str(theirs.fileno())]
        argv += [str(flags), str(count), user_namespace, f"source={source}"]
        argv += [k if v is None else f"{k}={v}" for k, v in options.items()]
        try:
            done = subprocess.run(  # noqa: S603 (fixed argv: fds, flags and options)
                argv,
                executable="/proc/self/exe",
                pass_fds=(theirs.fileno(), *([] if join is None else [join])),
                env={},
                cwd="/",
                capture_output=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise LaunchError(f"cannot make {what}: {error}") from None
        theirs.close()
        message, fds, _, _ = socket.recv_fds(ours, 512, count + 1)
    finally:
        theirs.close()
        ours.close()
    words = message.split()
    try:
        if len(fds) != count + 1 or words[:1] != [b"ok"]:
            why = message.decode("utf-8", "replace").removeprefix("error ").strip()
            if not why:  # it died before it could say: its last line of stderr
                lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
                why = lines[-1] if lines else f"the helper exited with status {done.returncode}"
            if why.startswith("unshare:"):
                why = f"{why.removeprefix('unshare:').strip()}: {FORBIDDEN}"
            raise LaunchError(f"cannot make {what} in a user namespace: {why}")  # noqa: TRY301
        for fd in fds:
            os.set_inheritable(fd, False)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return PrivateTmpfs(fds[:-1], fds[-1], noswap=b"noswap" in words, as_root=b"root" in words[1:])
