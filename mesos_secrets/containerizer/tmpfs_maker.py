"""Makes a tmpfs for an unprivileged front end, in a user namespace of its own.

Run by :func:`.userns.private_tmpfs` as ``python -I -S -c BOOT tmpfs_maker.py SOCK_FD
FLAGS source=… KEY=VALUE…`` (a bare interpreter; :mod:`mesos_secrets.linux` is loaded
by path, as the init loads it). It unshares a user and a mount namespace, maps its own
uid and gid (nothing else), makes a detached tmpfs with the options given, and sends
its fd and the user namespace's fd over SOCK_FD (``ok`` or ``ok noswap``); on failure,
``error WHY`` (``error unshare: WHY`` when the namespaces cannot be made). No value ever
passes through it: it only makes the empty filesystem.
"""

from __future__ import annotations

import os
import socket
import sys
from importlib.machinery import SourceFileLoader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _linux() -> Any:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "linux.py")
    module = type(sys)("_mesos_secrets_linux")
    module.__file__ = path
    SourceFileLoader(module.__name__, path).exec_module(module)
    return module


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    step = "unshare"
    try:
        linux = _linux()
        flags = int(argv[2])
        options = dict(item.partition("=")[::2] for item in argv[3:])
        source = options.pop("source")
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        step = "map the user into its namespace"
        linux.map_own_user()
        step = "make the tmpfs"
        tmpfs, noswap = linux.new_tmpfs(options, flags, source=source, noswap=True)
        user_namespace = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        socket.send_fds(sock, [b"ok noswap" if noswap else b"ok"], [tmpfs, user_namespace])
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else str(error)
        said = f"unshare: {why}" if step == "unshare" else f"cannot {step}: {why}"
        sock.sendall(b"error " + said.encode())
    os._exit(0)
