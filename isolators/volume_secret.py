"""``volume_secret``: SECRET volumes, as read-only files on a private, bounded tmpfs.

Mesos' ``volume/secret`` isolator (``reference/mesos.md`` §6) puts each secret on an
unbounded ramfs, world-readable and root-owned, and checks no paths. Here:

- one tmpfs per container, ``nosuid,nodev,noexec``, ``noswap`` where the kernel has it
  (a warning where it does not), capped at ``size`` (default 1 MiB); a secret over the
  cap is an error before anything is written, never a truncated file;
- each secret written atomically (temporary file, then rename) with mode ``0400``
  (``0600`` for an RW volume), owned by the task's user, in a ``0700`` directory;
- target paths as in Mesos: relative ones inside the sandbox, absolute ones inside the
  image's root filesystem or, without an image, an existing host file bound over in
  the task's own mount namespace; ``..``, NUL and empty components are refused by the
  model, and a symbolic link anywhere on the way is refused here (and again by the
  launcher, which also checks that each mount point is still the inode made for it);
- the tmpfs is never mounted on the host: it is a detached filesystem (``fsmount``),
  written through its fd, and attached only inside the task's mount namespace. No
  other process can see it or copy it into a namespace of its own, and it vanishes
  with the task (or with us, should we die before the task starts);
- the placeholders made in the sandbox are journalled with their inodes and removed
  by fd at cleanup, only if they are still those inodes: a task that swaps a directory
  for a link cannot steer the cleanup (run as root) outside its sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
from pathlib import Path

import attrs

from mesos_secrets import linux, nofollow
from mesos_secrets.errors import ConfigError, IsolatorError
from mesos_secrets.isolator import (
    SECRET_VOLUMES,
    ContainerConfig,
    Filesystem,
    Isolator,
    LaunchInfo,
    Mount,
)
from mesos_secrets.mesos import ContainerType, Volume, VolumeMode
from mesos_secrets.resolver import SecretResolver
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["VolumeSecretIsolator", "parse_size"]

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: The source name of our tmpfs mounts, as mount tables show it.
SOURCE = "mesos-secrets"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(i?b?)\s*", re.IGNORECASE)
_WARNED_SWAP = False


def parse_size(value: int | str) -> int:
    """``1048576``, ``"1MiB"``, ``"512k"``, ``"1M"`` -> bytes (K, M, G are binary, as tmpfs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _SIZE.fullmatch(str(value))
        if not match:
            raise ConfigError(f"size {value!r} is not a size such as 1048576, 512KiB or 1MiB")
        number = int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
    if number < PAGE_SIZE:
        raise ConfigError(f"size {value!r} is smaller than one page ({PAGE_SIZE} bytes)")
    return number


def human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


@attrs.frozen
class _Plan:
    """Where one secret volume goes: ``base / relative``, or a host file ``host``."""

    volume: Volume
    base: Path | None = None
    relative: str = ""
    host: Path | None = None
    host_inode: nofollow.Identity | None = None

    @property
    def label(self) -> str:
        secret = self.volume.secret
        return f"volume '{self.volume.container_path}' ({secret.describe() if secret else '?'})"


class VolumeSecretIsolator(Isolator):
    """Delivers SECRET volumes. Needs root (it mounts a tmpfs and binds in a namespace)."""

    name = "volume_secret"
    provides = frozenset({SECRET_VOLUMES})

    def __init__(
        self,
        resolver: SecretResolver,
        runtime_dir: Path,
        size: int | str = "1MiB",
        noswap: bool = True,
    ) -> None:
        super().__init__(resolver, runtime_dir)
        self.size = parse_size(size)
        self.noswap = noswap
        #: The detached tmpfs of each container, until its task runs.
        self._filesystems: dict[str, int] = {}

    # --- prepare ----------------------------------------------------------------------

    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        container = config.container
        volumes = container.secret_volumes() if container is not None else ()
        if container is None or not volumes:
            return None
        if container.type is not ContainerType.MESOS:
            raise self._error(
                config, "Can only prepare the secret volume isolator for a MESOS container"
            )
        if not linux.is_root():
            raise self._error(
                config,
                f"SECRET volumes ({', '.join(v.container_path for v in volumes)}) need root: "
                "the volume_secret isolator mounts a tmpfs and binds files in the task's "
                "own mount namespace",
            )
        # Every check that needs no secret comes first: a bad path resolves nothing.
        plans = [self._plan(config, volume) for volume in volumes]
        values = self._resolve(config, plans)
        self._check_sizes(config, plans, values)

        directory = self.container_dir(config.container_id)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging = directory / "tmpfs"  # where it is attached, in the task's namespace
            staging.mkdir(mode=0o700, exist_ok=True)
            tmpfs = self._new_tmpfs(config)
            self._filesystems[config.container_id] = tmpfs
            sandbox = Path(os.path.realpath(config.sandbox))
            mounts = []
            for index, (plan, value) in enumerate(zip(plans, values, strict=True)):
                name = self._write(config, plan, tmpfs, index, value)
                read_only = plan.volume.mode is VolumeMode.RO
                if plan.host is not None:
                    target, base, inode = plan.host, None, plan.host_inode
                elif config.rootfs is not None and plan.base == config.rootfs:
                    # In an image: runc makes the mount point, inside the image's overlay.
                    target, base, inode = plan.base / plan.relative, None, None
                else:
                    target, inode = self._mount_point(config, plan, sandbox, directory)
                    base = sandbox
                mounts.append(Mount(staging / name, target, read_only, base=base, inode=inode))
        except BaseException:
            # The chain would clean up too; an isolator used alone must not leave anything.
            self.cleanup(config.container_id)
            raise
        log.info(
            "%d secret(s) written to the tmpfs of container %s", len(mounts), config.container_id
        )
        return LaunchInfo(
            mounts=tuple(mounts),
            detach=(staging,),
            filesystems=(Filesystem(tmpfs, staging),),
        )

    def _error(self, config: ContainerConfig, message: str) -> IsolatorError:
        return IsolatorError(message, isolator=self.name, container_id=config.container_id)

    def _plan(self, config: ContainerConfig, volume: Volume) -> _Plan:
        path = volume.container_path
        if not path.startswith("/"):
            return _Plan(volume, base=config.sandbox, relative=path)
        if config.rootfs is not None:
            return _Plan(volume, base=config.rootfs, relative=path.lstrip("/"))
        # No image: an existing host file, bound over in the task's mount namespace.
        no_links = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
        try:
            fd = linux.openat2(linux.AT_FDCWD, path, os.O_PATH, no_links)
        except FileNotFoundError:
            raise self._error(config, f"Absolute container path '{path}' does not exist") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._error(
                    config,
                    f"Absolute container path '{path}' goes through a symbolic link; secret "
                    "volumes are never written through links",
                ) from None
            raise self._error(config, f"cannot open '{path}': {error.strerror}") from None
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise self._error(config, f"Absolute container path '{path}' is not a regular file")
        return _Plan(volume, host=Path(path), host_inode=nofollow.identity(info))

    def _resolve(self, config: ContainerConfig, plans: list[_Plan]) -> list[SecretBytes]:
        return self.resolve_each(
            config, [(p.label, p.volume.secret) for p in plans if p.volume.secret is not None]
        )

    def _check_sizes(
        self, config: ContainerConfig, plans: list[_Plan], values: list[SecretBytes]
    ) -> None:
        total = 0
        for plan, value in zip(plans, values, strict=True):
            if len(value) > self.size:
                raise self._error(
                    config,
                    f"{plan.label} is {human(len(value))}, more than the secret volume size "
                    f"cap of {human(self.size)} (option 'size' of the volume_secret isolator)",
                )
            total += -(-len(value) // PAGE_SIZE) * PAGE_SIZE
        if total > self.size:
            raise self._error(
                config,
                f"the {len(values)} secret volumes take {human(total)} on the tmpfs, more than "
                f"the size cap of {human(self.size)} (option 'size' of the volume_secret isolator)",
            )

    def _new_tmpfs(self, config: ContainerConfig) -> int:
        """The container's tmpfs, detached: an fd of its root, mounted nowhere."""
        global _WARNED_SWAP  # noqa: PLW0603 (once per process)
        user = config.user
        options: dict[str, str | None] = {
            "size": str(self.size),
            "mode": "0700",
            "uid": str(user.uid),
            "gid": str(user.gid),
        }
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        try:
            fd, noswap = linux.new_tmpfs(options, flags, source=SOURCE, noswap=self.noswap)
        except OSError as error:
            raise self._error(config, f"cannot make the secret tmpfs: {error.strerror}") from None
        if self.noswap and not noswap and not _WARNED_SWAP:
            _WARNED_SWAP = True
            log.warning(
                "this kernel's tmpfs has no 'noswap' option (Linux 6.4+): secret volumes "
                "may be written to swap"
            )
        return fd

    def _write(
        self, config: ContainerConfig, plan: _Plan, tmpfs: int, index: int, value: SecretBytes
    ) -> str:
        """Write one secret atomically: a private temporary file, then rename(2)."""
        final = str(index)
        temporary = f".{index}.tmp"
        mode = 0o600 if plan.volume.mode is VolumeMode.RW else 0o400
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, mode, dir_fd=tmpfs)
        try:
            view = memoryview(value.reveal())
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, config.user.uid, config.user.gid)
            os.fchmod(fd, mode)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise self._error(
                    config, f"{plan.label} does not fit in the {human(self.size)} secret tmpfs"
                ) from None
            raise
        finally:
            os.close(fd)
        os.rename(temporary, final, src_dir_fd=tmpfs, dst_dir_fd=tmpfs)
        return final

    def _mount_point(
        self, config: ContainerConfig, plan: _Plan, sandbox: Path, directory: Path
    ) -> tuple[Path, nofollow.Identity]:
        """Create ``sandbox/relative`` (an empty file) without following any symbolic link.

        Parent directories are made as needed. Each entry made is journalled with its
        inode as soon as it exists, so cleanup can remove it (and only it) after a crash.
        Returns the mount point and its inode.
        """
        parts = plan.relative.split("/")
        journal = directory / "created.json"
        fd = nofollow.open_directory(sandbox)
        base = nofollow.identity(os.fstat(fd))
        walked = sandbox
        try:
            for depth, part in enumerate(parts[:-1]):
                walked = walked / part
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    made = os.fstat(next_fd)
                    _record(journal, sandbox, base, parts[: depth + 1], made)
                    os.fchown(next_fd, config.user.uid, config.user.gid)
                except OSError as error:
                    raise self._not_followed(config, plan, walked, error) from None
                os.close(fd)
                fd = next_fd
            last = parts[-1]
            walked = walked / last
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                placeholder = os.open(last, flags, 0o400, dir_fd=fd)
            except FileExistsError:
                info = os.stat(last, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                    raise self._error(
                        config,
                        f"container path '{plan.volume.container_path}' is {kind} at "
                        f"'{walked}'; secret volumes are never written through links",
                    ) from None
                return walked, nofollow.identity(info)
            try:
                info = os.fstat(placeholder)
                _record(journal, sandbox, base, parts, info)
            finally:
                os.close(placeholder)
            return walked, nofollow.identity(info)
        finally:
            os.close(fd)

    def _not_followed(
        self, config: ContainerConfig, plan: _Plan, walked: Path, error: OSError
    ) -> IsolatorError:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symbolic link" if walked.is_symlink() else "not a directory"
            return self._error(
                config,
                f"container path '{plan.volume.container_path}' goes through '{walked}', which "
                f"is {what}; secret volumes are never written through links",
            )
        return self._error(config, f"cannot create '{walked}': {error.strerror}")

    # --- after launch, and cleanup -------------------------------------------------------

    def isolate(self, container_id: str, pid: int) -> None:
        """The task has the tmpfs attached in its namespace now: our fd is not needed."""
        fd = self._filesystems.pop(container_id, None)
        if fd is not None:
            os.close(fd)

    def cleanup(self, container_id: str) -> None:
        self.isolate(container_id, 0)
        directory = self.container_dir(container_id)
        if not directory.exists():
            return
        for entry in reversed(_read_journal(directory / "created.json")):
            _remove_created(entry)
        nofollow.remove_tree(directory)


def _record(
    journal: Path, base: Path, base_inode: nofollow.Identity, parts: list[str], info: os.stat_result
) -> None:
    """Journal an entry prepare made: where, and which inode (never a value)."""
    entry = {
        "base": os.fspath(base),
        "base_inode": list(base_inode),
        "path": "/".join(parts),
        "inode": list(nofollow.identity(info)),
    }
    with journal.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _read_journal(journal: Path) -> list[dict[str, object]]:
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            break  # a torn last line after a crash: nothing after it was created
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _remove_created(entry: dict[str, object]) -> None:
    """Remove a placeholder file or directory we made, only if it is still that inode.

    From an fd of the sandbox (checked to be the sandbox it was), walking down without
    following links: whatever the task did to the names on the way, nothing outside
    the sandbox, and nothing but what we made, is removed. A directory the task put
    files in stays.
    """
    base, base_inode = entry.get("base"), entry.get("base_inode")
    path, inode = entry.get("path"), entry.get("inode")
    if not (isinstance(base, str) and isinstance(path, str)):
        return
    parent, _, name = path.rpartition("/")
    try:
        root = nofollow.open_directory(base)
    except OSError as error:
        log.debug("left %s/%s in place: %s", base, path, error.strerror)
        return
    try:
        if list(nofollow.identity(os.fstat(root))) != base_inode:
            log.warning("left %s/%s in place: the sandbox is not the one it was", base, path)
            return
        directory = nofollow.open_directory(parent, dir_fd=root) if parent else os.dup(root)
        try:
            info = nofollow.stat_at(directory, name)
            if info is None or list(nofollow.identity(info)) != inode:
                return
            if stat.S_ISREG(info.st_mode) and info.st_size == 0:
                os.unlink(name, dir_fd=directory)
            elif stat.S_ISDIR(info.st_mode):
                with contextlib.suppress(OSError):  # only if empty: the task's files stay
                    os.rmdir(name, dir_fd=directory)
        finally:
            os.close(directory)
    except OSError as error:
        log.debug("left %s/%s in place: %s", base, path, error.strerror)
    finally:
        os.close(root)
