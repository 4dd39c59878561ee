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
  model, and a symbolic link on the way is refused here;
- the tmpfs is mounted under the runtime directory (``0700``, root only) while the
  files are written and the task starts; once the task runs it is detached from the
  host, so it lives only in the task's mount namespace and vanishes with it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from pathlib import Path

import attrs

from mesos_secrets import linux
from mesos_secrets.errors import ConfigError, IsolatorError
from mesos_secrets.isolator import (
    SECRET_VOLUMES,
    ContainerConfig,
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
_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(i?b?)\s*", re.IGNORECASE)
_NOSWAP_SUPPORTED: bool | None = None  # learned at the first mount


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
            tmpfs = directory / "tmpfs"
            tmpfs.mkdir(mode=0o700, exist_ok=True)
            self._mount_tmpfs(config, tmpfs)
            mounts = []
            for index, (plan, value) in enumerate(zip(plans, values, strict=True)):
                source = self._write(config, plan, tmpfs, index, value)
                target = plan.host or self._mount_point(config, plan, directory)
                mounts.append(Mount(source, target, read_only=plan.volume.mode is VolumeMode.RO))
        except BaseException:
            # The chain would clean up too; an isolator used alone must not leave a mount.
            self.cleanup(config.container_id)
            raise
        log.info(
            "%d secret(s) written to the tmpfs of container %s", len(mounts), config.container_id
        )
        return LaunchInfo(mounts=tuple(mounts), detach=(tmpfs,))

    def _error(self, config: ContainerConfig, message: str) -> IsolatorError:
        return IsolatorError(message, isolator=self.name, container_id=config.container_id)

    def _plan(self, config: ContainerConfig, volume: Volume) -> _Plan:
        path = volume.container_path
        if not path.startswith("/"):
            return _Plan(volume, base=config.sandbox, relative=path)
        if config.rootfs is not None:
            return _Plan(volume, base=config.rootfs, relative=path.lstrip("/"))
        # No image: an existing host file, bound over in the task's mount namespace.
        host = Path(path)
        if not os.path.lexists(host):
            raise self._error(config, f"Absolute container path '{path}' does not exist")
        real = host.resolve()
        if not real.is_file():
            raise self._error(config, f"Absolute container path '{path}' is not a regular file")
        return _Plan(volume, host=real)

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

    def _mount_tmpfs(self, config: ContainerConfig, target: Path) -> None:
        global _NOSWAP_SUPPORTED  # noqa: PLW0603 (a fact about the kernel, learned once)
        user = config.user
        options = f"size={self.size},mode=0700,uid={user.uid},gid={user.gid}"
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        if self.noswap and _NOSWAP_SUPPORTED is not False:
            try:
                linux.mount("tmpfs", target, "tmpfs", flags, options + ",noswap")
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise self._error(config, f"cannot mount the secret tmpfs: {error}") from None
                _NOSWAP_SUPPORTED = False
                log.warning(
                    "this kernel's tmpfs has no 'noswap' option (Linux 6.4+): secret volumes "
                    "may be written to swap"
                )
            else:
                _NOSWAP_SUPPORTED = True
                return
        try:
            linux.mount("tmpfs", target, "tmpfs", flags, options)
        except OSError as error:
            raise self._error(config, f"cannot mount the secret tmpfs: {error}") from None

    def _write(
        self, config: ContainerConfig, plan: _Plan, tmpfs: Path, index: int, value: SecretBytes
    ) -> Path:
        """Write one secret atomically: a private temporary file, then rename(2)."""
        final = tmpfs / str(index)
        temporary = tmpfs / f".{index}.tmp"
        mode = 0o600 if plan.volume.mode is VolumeMode.RW else 0o400
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, mode)
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
        temporary.rename(final)
        return final

    def _mount_point(self, config: ContainerConfig, plan: _Plan, directory: Path) -> Path:
        """Create ``base/relative`` (an empty file) without following any symbolic link.

        Parent directories are made as needed. What is created is recorded first, so
        cleanup can remove it even after a crash.
        """
        assert plan.base is not None
        parts = plan.relative.split("/")
        journal = directory / "created.json"
        in_sandbox = plan.base == config.sandbox
        fd = os.open(plan.base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        walked = plan.base
        try:
            for part in parts[:-1]:
                walked = walked / part
                try:
                    next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    _record(journal, walked)
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if in_sandbox:
                        os.chown(part, config.user.uid, config.user.gid, dir_fd=fd)
                    next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as error:
                    raise self._not_followed(config, plan, walked, error) from None
                os.close(fd)
                fd = next_fd
            last = parts[-1]
            walked = walked / last
            try:
                _record(journal, walked)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(last, flags, 0o400, dir_fd=fd))
            except FileExistsError:
                info = os.stat(last, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                    raise self._error(
                        config,
                        f"container path '{plan.volume.container_path}' is {kind} at "
                        f"'{walked}'; secret volumes are never written through links",
                    ) from None
        finally:
            os.close(fd)
        return walked

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
        """The task has its own copy of the tmpfs now: take it off the host's tree."""
        linux.detach_all(self.container_dir(container_id))

    def cleanup(self, container_id: str) -> None:
        directory = self.container_dir(container_id)
        if not directory.exists():
            return
        linux.detach_all(directory)
        for path in reversed(_read_journal(directory / "created.json")):
            _remove_created(path)
        linux.remove_tree(directory)


def _record(journal: Path, path: Path) -> None:
    """Append ``path`` to the list of what prepare created (paths only, never a value)."""
    with journal.open("a", encoding="utf-8") as out:
        out.write(json.dumps(os.fspath(path)) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _read_journal(journal: Path) -> list[Path]:
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    paths = []
    for line in lines:
        try:
            paths.append(Path(json.loads(line)))
        except ValueError:
            break  # a torn last line after a crash: nothing after it was created
    return paths


def _remove_created(path: Path) -> None:
    """Remove a placeholder file or directory we created, only if it is still as we left it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    try:
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            path.unlink()
        elif stat.S_ISDIR(info.st_mode):
            path.rmdir()  # only if empty: the task may have put files there
    except OSError as error:
        log.debug("left %s in place: %s", path, error.strerror)
