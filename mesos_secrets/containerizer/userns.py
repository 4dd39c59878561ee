"""A private tmpfs for an unprivileged front end, in a user namespace of its own.

As root, the secret volumes' tmpfs is a detached filesystem the front end makes
(``fsopen``), writes through its fd, and the container's init attaches inside the task's
mount namespace. A user without root cannot make a tmpfs in the host's namespaces. It
can in a user namespace it makes, with a mount namespace of that namespace's own. So
:func:`private_tmpfs` starts a short-lived helper (:data:`MAKER`, a bare interpreter, as
the init is). The helper unshares a user namespace and a mount namespace, maps the
user's own uid and gid into them (nothing else), makes the detached tmpfs there, and
hands back two fds: the tmpfs and the user namespace. Then it exits. The namespace
lives on in the fds.

The front end writes the secrets through the tmpfs fd, as root does (its files are the
user's: the uid is mapped). The container's init joins that user namespace
(``setns``) instead of making one, and makes the task's PID, mount and IPC namespaces
in it. Its mount namespace is then owned by the tmpfs's user namespace, so it may
attach the tmpfs there. Nothing is ever mounted in the host's mount namespace, and the
tmpfs goes when its last fd and the container's mount namespace do. What a user
namespace cannot give: ``noswap`` (the kernel allows it only to the host's root), so
rootless secret files may reach swap.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import LaunchError

__all__ = ["FORBIDDEN", "MAKER", "PrivateTmpfs", "private_tmpfs"]

#: The helper: run by a bare interpreter, loaded by path as the init is.
MAKER = Path(__file__).with_name("tmpfs_maker.py")
#: What it says when the kernel forbids unprivileged user namespaces.
FORBIDDEN = (
    "this kernel forbids unprivileged user namespaces (sysctl user.max_user_namespaces, "
    "kernel.unprivileged_userns_clone, or an AppArmor policy), which file secrets need "
    "without root; allow them, or run as root"
)
_TIMEOUT_S = 30.0


class PrivateTmpfs:
    """The fds of a tmpfs and of the user namespace it was made in (both close-on-exec;
    the caller closes them), and whether its pages are kept out of swap."""

    def __init__(self, tmpfs: int, user_namespace: int, noswap: bool) -> None:
        self.tmpfs = tmpfs
        self.user_namespace = user_namespace
        self.noswap = noswap


def private_tmpfs(options: Mapping[str, str], flags: int, *, source: str) -> PrivateTmpfs:
    """A detached tmpfs (``options``: size, mode, uid, gid…) in a new user namespace of
    the calling user's (see the module). LaunchError in one line if it cannot be made."""
    from .launcher import BOOT  # noqa: PLC0415 (the launcher's loader, for the helper too)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = [sys.executable, "-I", "-S", "-c", BOOT, str(MAKER), str(theirs.fileno())]
        argv += [str(flags), f"source={source}", *(f"{k}={v}" for k, v in options.items())]
        try:
            done = subprocess.run(  # noqa: S603 (fixed argv: an fd, flags and options)
                argv,
                executable="/proc/self/exe",
                pass_fds=(theirs.fileno(),),
                env={},
                cwd="/",
                capture_output=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise LaunchError(f"cannot make the secret tmpfs: {error}") from None
        theirs.close()
        message, fds, _, _ = socket.recv_fds(ours, 512, 2)
    finally:
        theirs.close()
        ours.close()
    if len(fds) != 2 or not message.startswith(b"ok"):
        for fd in fds:
            os.close(fd)
        why = message.decode("utf-8", "replace").removeprefix("error ").strip()
        if not why:  # it died before it could say: its last line of stderr
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"the helper exited with status {done.returncode}"
        if why.startswith("unshare:"):
            why = f"{why.removeprefix('unshare:').strip()}: {FORBIDDEN}"
        raise LaunchError(f"cannot make the secret tmpfs in a user namespace: {why}")
    for fd in fds:
        os.set_inheritable(fd, False)
    return PrivateTmpfs(fds[0], fds[1], message == b"ok noswap")
