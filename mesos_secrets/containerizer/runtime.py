"""The runtime directory: what front ends keep about their containers, and how they claim it.

``/run/mesos-secrets`` for root, ``$XDG_RUNTIME_DIR/mesos-secrets`` for anyone else (or,
without XDG_RUNTIME_DIR, ``<tmp>/mesos-secrets-<uid>``), or ``runtime_dir`` from the
configuration::

    containers/<id>/    a container: owner.json, and what its isolators and launcher keep
    sandboxes/<id>/     a temporary sandbox made by ``run`` (owner.json says where)
    runc/               runc's state

Every front end on the node shares it, so it is trusted only when it is ours: a
directory (not a link) owned by our uid that no one else can write to, in a parent
that no one else can swap it out of. It is created ``0700`` when missing, and refused
otherwise with a message saying why: a directory another user planted under a
predictable name in ``/tmp`` would otherwise steer our cleanup into our own files.

A claim (a container, a sandbox) is made complete, then made visible: created as
``.new-<id>``, locked (``flock``), its ``owner.json`` written, then renamed into place.
Its owner holds the lock for as long as it lives, and the kernel releases it when the
owner dies however it dies: a claim whose lock can be taken is an orphan, one whose lock
is held is not, whatever stage its owner is at. Whoever takes an orphan's lock is the
only one cleaning it up. A ``.new-`` entry exists unlocked for a moment, between its
``mkdir`` and its ``flock``: claims are made under a shared lock (``.<kind>.lock``), and
``recover`` judges ``.new-`` entries only with that lock held exclusively.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import linux, nofollow
from ..errors import ConfigError, LaunchError

__all__ = [
    "Claim",
    "RuntimeDir",
    "default_fetcher_cache_dir",
    "default_runtime_dir",
    "default_store_dir",
    "process_start_time",
]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = ".new-"
OWNER = "owner.json"


def default_runtime_dir() -> Path:
    """``/run/mesos-secrets`` for root (cleared at boot); a per-user directory otherwise."""
    if linux.is_root():
        return Path("/run/mesos-secrets")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "mesos-secrets"
    return Path(tempfile.gettempdir()) / f"mesos-secrets-{os.geteuid()}"


def default_store_dir() -> Path:
    """The image store (:mod:`mesos_secrets.images`): ``/var/lib/mesos-secrets/images``
    for root, ``~/.cache/mesos-secrets/images`` (``$XDG_CACHE_HOME``) otherwise. Here,
    beside the runtime directory, so that front ends know it (to hide it from tasks, to
    clean up after dead pullers) without loading the provisioner."""
    if linux.is_root():
        return Path("/var/lib/mesos-secrets/images")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mesos-secrets" / "images"


def container_part(runtime_dir: Path, container_id: str, keeper: str) -> Path:
    """Where ``keeper`` (``provisioner``, ``runc``) keeps what it has of a container:
    ``containers/<id>/<keeper>``. Here, so that a front end finds what a dead one's
    provisioner left without loading the provisioner."""
    return runtime_dir / "containers" / container_id / keeper


def pulls_under_way(store: Path) -> Path:
    """Where pulls keep their partial downloads and unpacks in the image store
    ``store``: what one that died left is there, for recovery to remove."""
    return store / "tmp"


def default_fetcher_cache_dir() -> Path:
    """The fetcher's cache (:mod:`mesos_secrets.fetcher`), beside the image store."""
    return default_store_dir().parent / "fetcher"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (so a reused pid is not mistaken for it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as info:
            return info.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"runtime directory '{path}' is not safe to use: {why} (it must be a directory of "
        f"uid {os.geteuid()} that no one else can write to; remove it, or set runtime_dir)"
    )


def _check_parent(path: Path) -> None:
    """Nobody else may be able to rename our directory away and put theirs in its place."""
    info = path.stat()
    me = os.geteuid()
    if info.st_uid not in (0, me):
        raise _refuse(path / "…", f"its parent '{path}' belongs to uid {info.st_uid}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise _refuse(path / "…", f"its parent '{path}' is writable by others")


def _open_trusted(path: Path) -> tuple[Path, int]:
    """Create (``0700``) or check the runtime directory; returns its real path and an fd."""
    try:
        return _open_checked(Path(os.path.abspath(path)))
    except OSError as error:
        where = f" ('{error.filename}')" if error.filename and error.filename != str(path) else ""
        raise ConfigError(
            f"cannot use runtime directory '{path}': {error.strerror}{where}"
        ) from None


def _open_checked(path: Path) -> tuple[Path, int]:
    parent = Path(os.path.realpath(path.parent))
    for ancestor in (parent, *parent.parents):
        if os.path.lexists(ancestor):
            if not os.path.isdir(ancestor):
                raise OSError(errno.ENOTDIR, "not a directory", str(ancestor))
            break
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_parent(parent)
    path = parent / path.name
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(path, "it is a symbolic link or not a directory") from None
        raise ConfigError(f"cannot open runtime directory '{path}': {error.strerror}") from None
    info = os.fstat(fd)
    why = None
    if info.st_uid != os.geteuid():
        why = f"it belongs to uid {info.st_uid}"
    elif info.st_mode & 0o022:
        why = f"others can write to it (mode {stat.S_IMODE(info.st_mode):04o})"
    if why is not None:
        os.close(fd)
        raise _refuse(path, why)
    return path, fd


class RuntimeDir:
    """The trusted runtime directory, held open for the life of the front end."""

    def __init__(self, path: Path | None = None) -> None:
        self.fd = -1
        self.path, self.fd = _open_trusted(path or default_runtime_dir())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def _kind(self, kind: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(kind, 0o700, dir_fd=self.fd)
        try:
            return os.open(kind, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as error:
            raise ConfigError(
                f"cannot open '{self.path / kind}' (runtime directory): {error.strerror}"
            ) from None

    @contextlib.contextmanager
    def _making_claims(self, kind: str, *, exclusive: bool) -> Iterator[None]:
        """Shared while a claim is made; exclusive to judge claims being made."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(f".{kind}.lock", flags, 0o600, dir_fd=self.fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def claim(self, kind: str, name: str, record: Mapping[str, Any]) -> Claim:
        """Claim ``kind/name``: it appears, complete and locked, or not at all."""
        kind_fd = self._kind(kind)
        temporary = _NEW + name
        fd = -1
        try:
            with self._making_claims(kind, exclusive=False):
                os.mkdir(temporary, 0o700, dir_fd=kind_fd)
                fd = os.open(temporary, _DIR_FLAGS, dir_fd=kind_fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            owner = {"pid": os.getpid(), "start": process_start_time(os.getpid()), **record}
            _write_json(fd, OWNER, owner)
            linux.rename_noreplace(kind_fd, temporary, name)
        except FileExistsError:
            if fd >= 0:
                nofollow.remove_tree_at(kind_fd, temporary)
                os.close(fd)
            os.close(kind_fd)
            raise LaunchError(f"{kind[:-1]} '{name}' exists already") from None
        except BaseException:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    nofollow.remove_tree_at(kind_fd, temporary)
                os.close(fd)
            os.close(kind_fd)
            raise
        return Claim(self.path / kind, kind_fd, name, fd, owner)

    def orphans(self, kind: str) -> Iterator[Claim]:
        """The claims of ``kind`` whose owner is gone, each locked by us as it is given."""
        try:
            kind_fd = os.open(kind, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return
        try:
            names = sorted(os.listdir(kind_fd))
        finally:
            os.close(kind_fd)
        for name in names:
            claim = self._take(kind, name)
            if claim is not None:
                yield claim

    def _take(self, kind: str, name: str) -> Claim | None:
        kind_fd = os.open(kind, _DIR_FLAGS, dir_fd=self.fd)
        if name.startswith(_NEW):
            with self._making_claims(kind, exclusive=True):
                return self._try(kind, kind_fd, name)
        return self._try(kind, kind_fd, name)

    def _try(self, kind: str, kind_fd: int, name: str) -> Claim | None:
        """The claim ``name`` if its owner is gone (locked by us), else None."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=kind_fd)
        except FileNotFoundError:
            os.close(kind_fd)
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):  # nothing of ours: not a claim
                log.warning("removing '%s', which is not a claim", self.path / kind / name)
                os.unlink(name, dir_fd=kind_fd)
            os.close(kind_fd)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner holds it: alive
            os.close(fd)
            os.close(kind_fd)
            return None
        now = nofollow.stat_at(kind_fd, name)
        if now is None or nofollow.identity(now) != nofollow.identity(os.fstat(fd)):
            # Its owner removed it (and then let go of the lock) after we opened it.
            os.close(fd)
            os.close(kind_fd)
            return None
        record = _read_json(fd, OWNER)
        if _owner_alive(record):  # a claim made before locks were taken
            os.close(fd)
            os.close(kind_fd)
            return None
        return Claim(self.path / kind, kind_fd, name, fd, record)


def _owner_alive(record: Mapping[str, Any]) -> bool:
    try:
        pid, start = int(record["pid"]), record["start"]
    except (KeyError, TypeError, ValueError):
        return False
    return start is not None and pid != os.getpid() and process_start_time(pid) == start


class Claim:
    """A locked entry of the runtime directory; released when its owner is done with it."""

    def __init__(
        self, parent: Path, parent_fd: int, name: str, fd: int, record: Mapping[str, Any]
    ) -> None:
        self.path = parent / name
        self.name = name.removeprefix(_NEW)
        self.complete = not name.startswith(_NEW)
        self.record = dict(record)
        self._parent_fd = parent_fd
        self._entry = name
        self.fd = fd
        self._identity = nofollow.identity(os.fstat(fd))

    def update(self, **fields: Any) -> None:
        """Add to ``owner.json`` (atomically: a new file renamed over the old)."""
        self.record.update(fields)
        _write_json(self.fd, OWNER + ".new", self.record)
        os.rename(OWNER + ".new", OWNER, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def remove(self) -> None:
        """Delete the claim's directory (by fd, never following a link), then unlock."""
        try:
            nofollow.remove_tree_at(self._parent_fd, self._entry, expect=self._identity)
        finally:
            self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.close(self._parent_fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"<Claim {self.path}>"


def _write_json(dir_fd: int, name: str, value: Mapping[str, Any]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(value, out)


def _read_json(dir_fd: int, name: str) -> dict[str, Any]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, encoding="utf-8") as source:
            value = json.load(source)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
