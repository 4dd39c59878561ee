"""Makes tmpfs for an unprivileged front end, in a user namespace of its own.

Run by :func:`.userns.private_tmpfs` as ``python -I -S -c BOOT tmpfs_maker.py SOCK_FD
FLAGS COUNT USERNS source=… KEY=VALUE|KEY…`` (a bare interpreter; :mod:`mesos_secrets.linux`
is loaded by path, as the init loads it). USERNS says which user namespace: ``own`` or
``root``, a new one, with a mount namespace of its own, where its uid and gid (nothing
else) are mapped as they are or as the namespace's root; or ``join:FD``, the one FD (an
fd it inherited) is, where it makes a mount namespace. There it makes COUNT detached
tmpfs with the options given, and sends their fds, then the user namespace's, over
SOCK_FD (``ok``, with ``noswap`` if they are kept out of swap and ``root`` if the user
is the namespace's root); on failure, ``error WHY`` (``error unshare: WHY`` when
a new user namespace cannot be made). No value ever passes through it: it only makes
empty filesystems.
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
        flags, count, user_namespace = int(argv[2]), int(argv[3]), argv[4]
        options: dict[str, str | None] = {}
        for item in argv[5:]:  # KEY=VALUE, or KEY alone: a flag
            key, equals, value = item.partition("=")
            options[key] = value if equals else None
        source = options.pop("source")
        if user_namespace.startswith("join:"):
            step = "join the container's user namespace"
            joined = int(user_namespace.removeprefix("join:"))
            linux.setns(joined, linux.CLONE_NEWUSER)
            os.close(joined)
            step = "make a mount namespace"
            linux.unshare(linux.CLONE_NEWNS)
        else:
            linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
            step = "map the user into its namespace"
            linux.map_own_user(as_root=user_namespace == "root")
        step = "make the tmpfs"
        made = [linux.new_tmpfs(options, flags, source=source, noswap=True) for _ in range(count)]
        noswap = all(swapless for _, swapless in made)
        fds = [fd for fd, _ in made]
        fds.append(os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC))
        # "root": the user is the namespace's uid 0 (seen from inside it, as it is now).
        answer = b"ok" + (b" noswap" if noswap else b"") + (b" root" if os.geteuid() == 0 else b"")
        socket.send_fds(sock, [answer], fds)
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else str(error)
        said = f"unshare: {why}" if step == "unshare" else f"cannot {step}: {why}"
        sock.sendall(b"error " + said.encode())
    os._exit(0)
