"""File operations that never follow a link: for trees a task may have written into.

Cleanup runs as root (without root, as the task's own user) over directories the task's
user controls (its sandbox, the placeholders of its secret files, an image's overlay). A
path walked by name can be redirected by a link the task planted a moment before, so
here every walk starts from a directory fd, opens each step with ``O_NOFOLLOW`` (or
``openat2`` with ``RESOLVE_NO_SYMLINKS``), removes with ``unlinkat``, and checks that
what it removes is still the inode it expects.

Removal is iterative and keeps one directory fd open at a time (it climbs back with
``..``, checking each parent's identity), so a tree deeper than Python's recursion limit
or the fd limit is removed all the same. It never descends into another filesystem
mounted inside the tree: as root it detaches that mount first (by fd, not by path), as
anyone else it refuses. Anyone else also gives itself the permission it needs on its
own directories (``u+rwx``), which root has whatever their mode.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from . import linux

__all__ = [
    "Identity",
    "identity",
    "open_directory",
    "remove_tree",
    "remove_tree_at",
    "stat_at",
]

log = logging.getLogger(__name__)

#: (st_dev, st_ino): what a file is, whatever its name.
Identity = tuple[int, int]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def identity(info: os.stat_result) -> Identity:
    return info.st_dev, info.st_ino


def open_directory(path: str | os.PathLike[str], *, dir_fd: int = linux.AT_FDCWD) -> int:
    """Open a directory whose path holds no symbolic link at all (ELOOP if one does).

    Relative to ``dir_fd`` the path must also stay beneath it.
    """
    resolve = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
    if dir_fd != linux.AT_FDCWD:
        resolve |= linux.RESOLVE_BENEATH
    return linux.openat2(dir_fd, path, os.O_RDONLY | os.O_DIRECTORY, resolve)


def stat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of ``name`` in ``dir_fd``; None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_tree(path: str | os.PathLike[str], *, expect: Identity | None = None) -> bool:
    """Remove ``path`` (a file or a whole tree). No component of ``path`` may be a link.

    ``expect``: remove it only if it is still that inode. Returns False if there was
    nothing to remove (or it is not the expected inode any more), True otherwise.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    try:
        parent_fd = open_directory(parent or "/")
    except FileNotFoundError:
        return False
    try:
        return remove_tree_at(parent_fd, name, expect=expect)
    finally:
        os.close(parent_fd)


def remove_tree_at(parent_fd: int, name: str, *, expect: Identity | None = None) -> bool:
    """Remove ``name`` in the directory ``parent_fd``; see :func:`remove_tree`."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a name in a directory: {name!r}")
    info = stat_at(parent_fd, name)
    if info is None:
        return False
    if expect is not None and identity(info) != expect:
        log.warning("left %r in place: it is not the file that was created there", name)
        return False
    if not stat.S_ISDIR(info.st_mode):
        _unlink(parent_fd, name, info)
        return True
    mount = linux.mount_id(parent_fd)
    fd, found = _open_child(parent_fd, name, info, mount)
    try:
        _empty(fd, mount)
    finally:
        os.close(fd)
    _rmdir(parent_fd, name, found)
    return True


def _open_child(
    parent_fd: int, name: str, info: os.stat_result, mount: int
) -> tuple[int, Identity]:
    """Open a subdirectory we listed, on its parent's mount (``mount``), as the inode we
    saw. Only such children are returned, so one walk stays on one mount throughout.

    Returns the fd and the directory's identity (once mounts on it are detached).
    """
    for _ in range(32):  # mounts stacked on one another
        fd = _open_to_empty(parent_fd, name, info, mount)
        if linux.mount_id(fd) != mount:
            _detach(fd, name)
            fresh = stat_at(parent_fd, name)
            if fresh is None or not stat.S_ISDIR(fresh.st_mode):
                raise OSError(errno.ESTALE, f"'{name}' changed while it was being removed")
            info = fresh
            continue
        if identity(os.fstat(fd)) != identity(info):
            os.close(fd)
            raise OSError(errno.ESTALE, f"'{name}' changed while it was being removed")
        return fd, identity(info)
    raise OSError(errno.EBUSY, f"'{name}' has too many mounts on it")


def _open_to_empty(parent_fd: int, name: str, info: os.stat_result, mount: int) -> int:
    """Open a subdirectory to empty it. Root may whatever its mode. Another user is
    made able to on a directory of its own (an overlay's work directory is ``000``, a
    task may leave one ``0500``): ``u+rwx``, set only on the inode that was listed, on
    the walk's mount, through an fd that is then reopened (never the name again)."""
    if linux.is_root():
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    path = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=parent_fd)  # fmt: skip
    try:
        here = os.fstat(path)
        if identity(here) != identity(info):
            raise OSError(errno.ESTALE, f"'{name}' changed while it was being removed")
        mine = linux.mount_id(path) == mount and here.st_uid == os.geteuid()
        if mine and here.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            os.chmod(f"/proc/self/fd/{path}", stat.S_IMODE(here.st_mode) | stat.S_IRWXU)
        return os.open(f"/proc/self/fd/{path}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(path)


def _detach(fd: int, name: str) -> None:
    """Detach the mount ``fd`` is the root of: through the fd, never through a path."""
    try:
        if not linux.is_root():
            raise OSError(errno.EBUSY, f"'{name}' is a mount point")
        linux.umount(f"/proc/self/fd/{fd}", detach=True)
    finally:
        os.close(fd)


def _unlink(dir_fd: int, name: str, info: os.stat_result) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # replaced by a directory since we looked: look again
        remove_tree_at(dir_fd, name)


def _rmdir(dir_fd: int, name: str, expected: Identity) -> None:
    info = stat_at(dir_fd, name)
    if info is None:
        return
    if identity(info) != expected:
        raise OSError(errno.ESTALE, f"'{name}' was replaced while it was being removed")
    os.rmdir(name, dir_fd=dir_fd)


def _empty(top: int, mount: int) -> None:
    """Remove everything in the directory ``top`` (left open, and empty), on ``mount``."""
    # The levels above the current one: (identity, name in the level above, names left).
    fd = top
    levels: list[tuple[Identity, str, list[str]]] = []
    here: Identity = identity(os.fstat(top))
    name_here = ""
    pending = _names(top)
    try:
        while True:
            if pending:
                child = pending.pop()
                info = stat_at(fd, child)
                if info is None:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    _unlink(fd, child, info)
                    continue
                child_fd, child_identity = _open_child(fd, child, info, mount)
                levels.append((here, name_here, pending))
                if fd != top:  # keep one fd open below the top: climb back with ".."
                    os.close(fd)
                fd, here, name_here = child_fd, child_identity, child
                pending = _names(child_fd)
                continue
            if not levels:
                return
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            parent_identity, parent_name, parent_pending = levels.pop()
            if identity(os.fstat(parent)) != parent_identity:
                os.close(parent)
                raise OSError(errno.ESTALE, "a directory was moved while it was being removed")
            os.close(fd)
            if levels:
                fd = parent
            else:
                os.close(parent)
                fd = top
            _rmdir(fd, name_here, here)
            here, name_here, pending = parent_identity, parent_name, parent_pending
    finally:
        if fd != top:
            os.close(fd)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return [entry.name for entry in entries]
