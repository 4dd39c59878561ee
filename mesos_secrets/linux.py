"""The few Linux system calls the isolators and launcher need: mount, umount, unshare.

Called through ctypes on the C library, so no ``mount(8)`` process is started and no
helper binary is needed. Everything here is safe to call between ``fork()`` and
``exec()`` (no allocation-heavy Python beyond building the arguments).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path

__all__ = [
    "CLONE_NEWNS",
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "bind_mount",
    "detach_all",
    "is_root",
    "make_mounts_private",
    "mount",
    "mount_points_under",
    "remove_tree",
    "set_parent_death_signal",
    "umount",
    "unshare_mount_namespace",
]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
CLONE_NEWNS = 0x20000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.prctl.restype = ctypes.c_int
PR_SET_PDEATHSIG = 1


def _fail(what: str, path: str | os.PathLike[str] | None) -> OSError:
    errno = ctypes.get_errno()
    return OSError(
        errno, f"{what}: {os.strerror(errno)}", None if path is None else os.fspath(path)
    )


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def is_root() -> bool:
    return os.geteuid() == 0


def mount(
    source: str | None,
    target: str | os.PathLike[str],
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2). Raises OSError with the target path on failure."""
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail("mount", target)


def bind_mount(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, read_only: bool
) -> None:
    """Bind ``source`` onto ``target``; a read-only bind needs a second, remounting call."""
    mount(os.fspath(source), target, None, MS_BIND)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def umount(target: str | os.PathLike[str], *, detach: bool = False) -> None:
    """umount2(2); ``detach`` is MNT_DETACH (lazy: gone now, freed when unused)."""
    if _libc.umount2(_b(target), MNT_DETACH if detach else 0) != 0:
        raise _fail("umount", target)


def unshare_mount_namespace() -> None:
    """Move the calling process into a new mount namespace (a copy of the current one)."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise _fail("unshare(CLONE_NEWNS)", None)


def set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): receive ``signum`` when the thread that forked us dies.

    So a task does not outlive a front end killed with SIGKILL. Credentials changes
    clear it: call it after switching users.
    """
    if _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_PDEATHSIG)", None)


def make_mounts_private() -> None:
    """Stop mount events propagating in or out of this namespace (``mount --make-rprivate /``).

    Private, not slave: the host detaches the secret tmpfs after launch, and that
    unmount must not reach the task's copy of it.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def detach_all(root: str | os.PathLike[str]) -> None:
    """Detach every mount at or under ``root`` (deepest first)."""
    for point in mount_points_under(root):
        umount(point, detach=True)


def remove_tree(root: Path) -> None:
    """Detach what is mounted under ``root``, then delete it: never into a mounted fs."""
    if not root.exists():
        return
    detach_all(root)
    shutil.rmtree(root)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points_under(root: str | os.PathLike[str]) -> list[Path]:
    """Mount points at or under ``root`` in this mount namespace, deepest first."""
    base = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)
