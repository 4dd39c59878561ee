"""The Linux system calls containment needs, through ctypes on the C library.

Mounts (the classic ``mount(2)`` and the new detached-mount API: ``fsopen``, ``fsmount``,
``open_tree``, ``move_mount``), namespaces (``unshare``, ``setns``), ``openat2`` with its
no-symlink resolution, ``prctl`` (parent-death signal, dumpable), capabilities.

This module imports nothing but the standard library: the container init program
(:mod:`mesos_secrets.containerizer.init`) loads it by path, in a bare interpreter, without
the rest of the package. Nothing here starts a process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _R = TypeVar("_R")

__all__ = [
    "AT_FDCWD",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "add_user_key",
    "attach_mount",
    "bind_mount",
    "bind_onto",
    "capability_count",
    "clone_mount",
    "disable_core_dumps",
    "drop_bounding_capabilities",
    "filesystem_type",
    "find_user_key",
    "in_own_thread",
    "invalidate_key",
    "is_root",
    "make_mounts_private",
    "make_tree_read_only",
    "map_own_user",
    "mount",
    "mount_id",
    "new_filesystem",
    "new_tmpfs",
    "openat2",
    "read_key",
    "rename_noreplace",
    "set_capabilities",
    "set_dumpable",
    "set_name",
    "set_no_new_privileges",
    "set_parent_death_signal",
    "setns",
    "umount",
    "unshare",
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

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000

AT_FDCWD = -100
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

# The new mount API and openat2 have one syscall number on every architecture (Linux 5.1+).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442
#: add_key(2) and keyctl(2), by machine (their numbers differ; elsewhere: ENOSYS).
_KEY_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219)}
_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_INVALIDATE = 21
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11
_NO_KEY = (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED)
#: statfs' f_type of file systems kept in memory only.
TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOUNT_ATTR = {MS_RDONLY: 0x1, MS_NOSUID: 0x2, MS_NODEV: 0x4, MS_NOEXEC: 0x8}
_OPEN_TREE_CLONE = 0x1
_AT_RECURSIVE = 0x8000
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
_libc.prctl.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long
_libc.renameat2.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]
_libc.renameat2.restype = ctypes.c_int
_RENAME_NOREPLACE = 0x1
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_libc.capset.restype = ctypes.c_int


def _fail(what: str, path: str | os.PathLike[str] | int | None = None) -> OSError:
    errno = ctypes.get_errno()
    name = None if path is None or isinstance(path, int) else os.fspath(path)
    return OSError(errno, f"{what}: {os.strerror(errno)}", name)


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _syscall(what: str, number: int, *args: object, path: str | None = None) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        raise _fail(what, path)
    return int(result)


def is_root() -> bool:
    return os.geteuid() == 0


# --- the classic mount calls ---------------------------------------------------------


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
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    read_only: bool,
    noexec: bool = False,
) -> None:
    """Bind ``source`` onto ``target``, ``nosuid,nodev`` (``ro``, ``noexec`` when asked).

    The remount sets the flags exactly: what the source mount had is not kept.
    """
    mount(os.fspath(source), target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
    flags |= (MS_RDONLY if read_only else 0) | (MS_NOEXEC if noexec else 0)
    mount(None, target, None, flags)


def umount(target: str | os.PathLike[str], *, detach: bool = False) -> None:
    """umount2(2); ``detach`` is MNT_DETACH (gone now, freed when no longer used)."""
    if _libc.umount2(_b(target), MNT_DETACH if detach else 0) != 0:
        raise _fail("umount", target)


def make_mounts_private() -> None:
    """Stop mount events propagating in or out of this namespace (``mount --make-rprivate /``)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


# --- detached mounts ------------------------------------------------------------------


def new_filesystem(
    fstype: str, options: dict[str, str | None], flags: int = 0, *, source: str | None = None
) -> int:
    """A new filesystem, mounted nowhere: an fd of its root (``fsopen`` + ``fsmount``).

    ``options`` are the filesystem's (``{"size": "1m", "noswap": None}``: None is a
    flag); ``flags`` the MS_RDONLY/MS_NOSUID/MS_NODEV/MS_NOEXEC mount attributes. The
    filesystem appears in no mount table: no other process can see it, copy it into a
    namespace of its own, or find it after we die. It is freed when the last fd and the
    last place it is attached to are gone. The fd is close-on-exec.
    """
    context = _syscall("fsopen", _SYS_FSOPEN, _b(fstype), _FSOPEN_CLOEXEC)
    try:
        settings = dict(options)
        if source is not None:
            settings["source"] = source
        for key, value in settings.items():
            if value is None:
                _syscall(
                    f"fsconfig {key}", _SYS_FSCONFIG, context, _FSCONFIG_SET_FLAG, _b(key), None, 0
                )
            else:
                _syscall(
                    f"fsconfig {key}",
                    _SYS_FSCONFIG,
                    context,
                    _FSCONFIG_SET_STRING,
                    _b(key),
                    _b(value),
                    0,
                )
        _syscall("fsconfig create", _SYS_FSCONFIG, context, _FSCONFIG_CMD_CREATE, None, None, 0)
        attributes = sum(bit for flag, bit in _MOUNT_ATTR.items() if flags & flag)
        return _syscall("fsmount", _SYS_FSMOUNT, context, _FSMOUNT_CLOEXEC, attributes)
    finally:
        os.close(context)


_NOSWAP: bool | None = None  # does this kernel's tmpfs take noswap? learned once


def new_tmpfs(
    options: dict[str, str | None], flags: int = 0, *, source: str, noswap: bool = True
) -> tuple[int, bool]:
    """A detached tmpfs (see :func:`new_filesystem`), ``noswap`` where the kernel has it
    (Linux 6.4+). Returns the fd, and whether its pages are kept out of swap."""
    global _NOSWAP  # noqa: PLW0603 (a fact about the kernel)
    if noswap and _NOSWAP is not False:
        try:
            fd = new_filesystem("tmpfs", {**options, "noswap": None}, flags, source=source)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            _NOSWAP = False
        else:
            _NOSWAP = True
            return fd, True
    return new_filesystem("tmpfs", options, flags, source=source), False


def clone_mount(dir_fd: int, path: str, *, recursive: bool = False) -> int:
    """A detached copy of what is at ``path`` (relative to ``dir_fd``; "" is ``dir_fd``
    itself): ``open_tree``. ``recursive`` copies the mounts under it too."""
    flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | (_AT_RECURSIVE if recursive else 0)
    if not path:
        flags |= _AT_EMPTY_PATH
    return _syscall("open_tree", _SYS_OPEN_TREE, dir_fd, _b(path), flags, path=path)


def attach_mount(fd: int, target: str | os.PathLike[str] | int) -> None:
    """Attach a detached mount (``fd``) at ``target``: a path, or an fd opened on it."""
    if isinstance(target, int):
        _syscall(
            "move_mount",
            _SYS_MOVE_MOUNT,
            fd,
            b"",
            target,
            b"",
            _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH,
        )
    else:
        _syscall(
            "move_mount",
            _SYS_MOVE_MOUNT,
            fd,
            b"",
            AT_FDCWD,
            _b(target),
            _MOVE_MOUNT_F_EMPTY_PATH,
            path=os.fspath(target),
        )


def set_mount_flags(fd: int, flags: int) -> None:
    """``mount_setattr``: exactly these of MS_RDONLY/NOSUID/NODEV/NOEXEC on a mount fd."""
    wanted = sum(bit for flag, bit in _MOUNT_ATTR.items() if flags & flag)
    cleared = sum(_MOUNT_ATTR.values()) & ~wanted
    attr = struct.pack("QQQQ", wanted, cleared, 0, 0)
    _syscall("mount_setattr", _SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, attr, len(attr))


def make_tree_read_only(path: str) -> None:
    """``mount_setattr(AT_RECURSIVE)``: every mount at or under ``path`` read-only, in one
    call, their other flags kept."""
    attr = struct.pack("QQQQ", _MOUNT_ATTR[MS_RDONLY], 0, 0, 0)
    _syscall(
        "mount_setattr",
        _SYS_MOUNT_SETATTR,
        AT_FDCWD,
        _b(path),
        _AT_RECURSIVE,
        attr,
        len(attr),
        path=path,
    )


def bind_onto(
    source: str | os.PathLike[str], target_fd: int, *, read_only: bool, noexec: bool = True
) -> None:
    """Bind ``source`` onto what ``target_fd`` is opened on, ``nosuid,nodev`` (and ``ro``,
    ``noexec`` as asked): a detached copy is made, its flags set, then it is attached.

    Through the fd, not a path: nothing can be swapped in between the check of the
    target and the mount.
    """
    clone = clone_mount(AT_FDCWD, os.fspath(source))
    try:
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
        set_mount_flags(clone, flags | (MS_NOEXEC if noexec else 0))
        attach_mount(clone, target_fd)
    finally:
        os.close(clone)


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` is on (as in ``/proc/self/mountinfo``)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(f"no mnt_id for fd {fd}")


# --- paths -----------------------------------------------------------------------------


def openat2(dir_fd: int, path: str | os.PathLike[str], flags: int, resolve: int) -> int:
    """openat2(2): open ``path`` with ``resolve`` rules (RESOLVE_NO_SYMLINKS, …BENEATH).

    With RESOLVE_NO_SYMLINKS no component may be a symbolic link, and the answer is
    ELOOP, atomically: no window between checking and opening.
    """
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0, resolve)
    return _syscall("openat2", _SYS_OPENAT2, dir_fd, _b(path), how, len(how), path=os.fspath(path))


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """renameat2(RENAME_NOREPLACE) within ``dir_fd``: FileExistsError if ``new`` exists."""
    if _libc.renameat2(dir_fd, _b(old), dir_fd, _b(new), _RENAME_NOREPLACE) != 0:
        raise _fail("rename", new)


# --- namespaces and process attributes --------------------------------------------------


def unshare(flags: int) -> None:
    """unshare(2): move the calling process into new namespaces (PID: its children)."""
    if _libc.unshare(flags) != 0:
        raise _fail("unshare")


def setns(fd: int, flags: int) -> None:
    """setns(2) with a pidfd: move the calling process into the namespaces ``flags`` of
    that process, all at once (PID: its children). The process must still run: a pidfd
    never pins a namespace, nor lets a reused pid stand for the one it was opened on.
    With an fd of a namespace itself (``/run/netns/NAME``), ``flags`` is its one type
    (the call fails if the fd is another kind of namespace)."""
    if _libc.setns(fd, flags) != 0:
        raise _fail("setns")


def in_own_thread(work: Callable[[], _R], name: str = "mesos-secrets-netns") -> _R:
    """``work()``, run in a thread of its own that ends with it: what it does to its
    namespaces (``unshare``, ``setns`` of a network namespace) stays in that thread,
    and nothing forks. Its value; what it raised is raised again here."""
    import threading  # noqa: PLC0415 (not for the container init, which never needs it)

    outcome: list[_R] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 (raised again by the caller)
            failed.append(error)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return outcome[0]


def set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): receive ``signum`` when the thread that forked us dies.

    Credential changes clear it: set it after switching users.
    """
    if _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_PDEATHSIG)")


def set_name(name: str) -> None:
    """prctl(PR_SET_NAME): the process's name in ``ps`` and ``/proc/<pid>/comm``."""
    buffer = ctypes.create_string_buffer(os.fsencode(name)[:15])
    _libc.prctl(PR_SET_NAME, ctypes.cast(buffer, ctypes.c_void_p).value or 0, 0, 0, 0)


def map_own_user(*, as_root: bool = False) -> None:
    """In a user namespace just made (by unshare), map the caller's own uid and gid into
    it, and nothing else (no setgroups, as an unprivileged user must): as they are, or
    ``as_root``, as the namespace's uid and gid 0 (its root, as rootless runc has it)."""
    uid, gid = os.geteuid(), os.getegid()
    inside_uid, inside_gid = (0, 0) if as_root else (uid, gid)
    with open("/proc/self/uid_map", "w", encoding="ascii") as out:
        out.write(f"{inside_uid} {uid} 1\n")
    with open("/proc/self/setgroups", "w", encoding="ascii") as out:
        out.write("deny")
    with open("/proc/self/gid_map", "w", encoding="ascii") as out:
        out.write(f"{inside_gid} {gid} 1\n")


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): not dumpable means no core file, and ``/proc/<pid>/``'s
    environ, mem, maps… readable only with CAP_SYS_PTRACE, even by the same user."""
    if _libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_DUMPABLE)")


def disable_core_dumps() -> None:
    """RLIMIT_CORE 0, soft and hard: a core file would hold what is in memory."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def set_no_new_privileges() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): no set-user-ID bit or file capability gives more."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")


def capability_count() -> int:
    """How many capabilities this kernel has (``cap_last_cap`` + 1)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as last:
            return int(last.read()) + 1
    except OSError:
        return 41


def drop_bounding_capabilities(keep: set[int]) -> None:
    """Remove every capability not in ``keep`` from the bounding set (for good)."""
    for cap in range(capability_count()):
        if cap not in keep and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise _fail(f"prctl(PR_CAPBSET_DROP, {cap})")


def set_capabilities(effective: set[int]) -> None:
    """Effective, permitted and inheritable sets = ``effective``; no ambient ones."""
    low = sum(1 << cap for cap in effective if cap < 32)
    high = sum(1 << (cap - 32) for cap in effective if cap >= 32)
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = struct.pack("6I", low, low, low, high, high, high)
    if _libc.capset(header, data) != 0:
        raise _fail("capset")
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise _fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


# --- the kernel's keyring and statfs ---------------------------------------------------


def _key_syscalls() -> tuple[int, int]:
    numbers = _KEY_SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise OSError(errno.ENOSYS, f"no keyring calls known on {os.uname().machine}")
    return numbers


def add_user_key(description: str, payload: bytes) -> int:
    """Put a ``user`` key in this user's keyring (memory only; it outlives the process
    and ends with the user's last process, or at boot). Its id."""
    return _syscall(
        "add_key",
        _key_syscalls()[0],
        b"user",
        description.encode(),
        payload,
        ctypes.c_size_t(len(payload)),
        ctypes.c_int(_KEY_SPEC_USER_KEYRING),
    )


def find_user_key(description: str) -> int | None:
    """The id of the ``user`` key ``description`` in this user's keyring, or None."""
    result = _libc.syscall(
        _key_syscalls()[1],
        ctypes.c_int(_KEYCTL_SEARCH),
        ctypes.c_long(_KEY_SPEC_USER_KEYRING),
        b"user",
        description.encode(),
        ctypes.c_long(0),
    )
    if result < 0:
        if ctypes.get_errno() in (
            errno.ENOKEY,
            errno.EKEYREVOKED,
            errno.EKEYEXPIRED,
        ):
            return None
        raise _fail("keyctl search")
    return int(result)


def read_key(key: int, size: int = 64) -> bytes:
    buffer = ctypes.create_string_buffer(size)
    length = _syscall(
        "keyctl read",
        _key_syscalls()[1],
        ctypes.c_int(_KEYCTL_READ),
        ctypes.c_long(key),
        buffer,
        ctypes.c_size_t(size),
    )
    return buffer.raw[: min(length, size)]


def invalidate_key(key: int) -> None:
    _syscall(
        "keyctl invalidate",
        _key_syscalls()[1],
        ctypes.c_int(_KEYCTL_INVALIDATE),
        ctypes.c_long(key),
    )


class _StatFS(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def filesystem_type(path: str | os.PathLike[str]) -> int:
    """statfs' ``f_type`` of the file system ``path`` is on (:data:`TMPFS_MAGIC`…)."""
    info = _StatFS()
    if _libc.statfs(_b(path), ctypes.byref(info)) != 0:
        raise _fail("statfs", path)
    return int(info.f_type) & 0xFFFFFFFF
