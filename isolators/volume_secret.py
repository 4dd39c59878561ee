"""``volume_secret``: SECRET volumes, as read-only files on a private, bounded tmpfs.

Mesos' ``volume/secret`` isolator (``reference/mesos.md`` §6) puts each secret on an
unbounded ramfs, world-readable and root-owned, and checks no paths. Here:

- one tmpfs per container, ``nosuid,nodev,noexec``, ``noswap`` where the kernel has it
  (a warning where it does not); the secrets may take ``size`` (default 1 MiB) in all,
  and the tmpfs is twice that, so that a new generation of them always fits beside the
  old one; a secret over the cap is an error before anything is written, never a
  truncated file;
- on it, as the kubelet lays out a secret volume: a directory per generation (``..1``,
  ``..2``…, root's, ``0755``) holding the files by volume index (``0``, ``1``…; mode
  ``0400``, ``0600`` for an RW volume, owned by the task's user), and a link
  ``..data -> ..N`` to the current one. A generation is complete before ``..data``
  points to it, and never changed afterwards;
- a read-only volume at a relative path (the common case) is rotatable: the whole
  tmpfs is bound read-only at ``<sandbox>/.mesos-secrets``, and the container path is a
  relative link to ``.mesos-secrets/..data/<index>`` (``a/pw -> ../.mesos-secrets/..data/0``),
  which works on the host's filesystem and in an image alike (where the sandbox is
  ``/mnt/mesos/sandbox``). :meth:`VolumeSecretIsolator.refresh` writes a new generation
  and swaps ``..data`` with one ``rename(2)``: a reader that opened the file keeps the
  old value, one that opens it afterwards gets the new one, none ever sees a mix (the
  old generation's files go a second later, for a reader already on its way). A
  single-file bind, as before, would pin the file's inode, as a Kubernetes ``subPath``
  does: a new value could never reach the task;
- an absolute path (an existing host file, bound over in the task's own mount
  namespace, or a path inside the image) and an RW volume stay single-file binds of
  ``..1/<index>``, never through ``..data``: they keep their value while the task runs
  (a refresh reports them as ``fixed``);
- a secret the container's ``optional`` names that cannot be resolved at launch gets
  no file and no bind; a rotatable volume's link is made all the same, and leads
  nowhere until a refresh delivers the file;
- ``..``, NUL and empty components are refused by the model, a path at or beneath
  ``.mesos-secrets``, a ``.mesos-secrets`` already in the sandbox and anything already at
  a rotatable volume's path are refused here, and a symbolic link anywhere on the way
  is refused here (and again by the launcher, which also checks that each mount point
  is still the inode made for it);
- the tmpfs is never mounted on the host: it is a detached filesystem (``fsmount``),
  written through its fd (kept until cleanup, for refreshes), and attached only inside
  the task's mount namespace. No other process can see it or copy it into a namespace
  of its own, and it vanishes with the task (or with us, should we die);
- what is made in the sandbox (directories, ``.mesos-secrets``, placeholders, links) is
  journalled with its inode and removed by fd at cleanup, only if it is still that
  inode: a task that swaps a directory for a link cannot steer the cleanup (run as
  root) outside its sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import attrs

from mesos_secrets import linux, nofollow
from mesos_secrets.errors import ConfigError, IsolatorError, LaunchError, printable
from mesos_secrets.isolator import (
    SECRET_VOLUMES,
    ContainerConfig,
    Filesystem,
    Isolator,
    LaunchInfo,
    Mount,
    Refreshed,
    TaskUser,
)
from mesos_secrets.mesos import ContainerType, Volume, VolumeMode
from mesos_secrets.names import agent_name
from mesos_secrets.resolver import ResolveContext, SecretResolver
from mesos_secrets.secret import Secret
from mesos_secrets.secretbytes import SecretBytes

if TYPE_CHECKING:
    from mesos_secrets.redacted_output import OutputRedaction

__all__ = ["SECRETS_DIR", "VolumeSecretIsolator", "parse_size"]

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: The source name of our tmpfs mounts, as mount tables show it.
SOURCE = "mesos-secrets"
#: Where the tmpfs appears in the sandbox, for the rotatable volumes' links.
SECRETS_DIR = ".mesos-secrets"
#: The link to the current generation, and the name its replacement is made under.
DATA = "..data"
_DATA_NEXT = "..data.tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
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


def _generation(number: int) -> str:
    return f"..{number}"


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


@attrs.frozen
class _Plan:
    """Where secret volume number ``index`` goes: ``base / relative``, or a host file
    ``host``. A read-only one in the sandbox is ``rotatable`` (a link into the tmpfs)."""

    volume: Volume
    index: int
    base: Path | None = None
    relative: str = ""
    host: Path | None = None
    host_inode: nofollow.Identity | None = None

    @property
    def secret(self) -> Secret:
        assert self.volume.secret is not None  # only SECRET volumes are planned
        return self.volume.secret

    @property
    def label(self) -> str:
        return f"volume '{self.volume.container_path}' ({self.secret.describe()})"

    @property
    def reference(self) -> str | None:
        """The secret's reference name (what a refresh names); None for a VALUE."""
        return self.secret.reference.name if self.secret.reference is not None else None

    @property
    def rotatable(self) -> bool:
        return not self.volume.container_path.startswith("/") and self.mode is VolumeMode.RO

    @property
    def mode(self) -> VolumeMode:
        return self.volume.mode


@attrs.define(eq=False)
class _Container:
    """What refreshes need of a running container's volumes (never a value): the tmpfs
    fd, who resolves for it, its user, its volumes and its current generation."""

    fd: int
    #: Without root: the user namespace the tmpfs was made in (-1: none, root's).
    user_namespace: int
    context: ResolveContext | None
    user: TaskUser
    plans: tuple[_Plan, ...]
    optional: frozenset[str]
    #: The sizes of the files of the volumes that never change, by index.
    fixed_sizes: Mapping[int, int] = attrs.field(factory=dict)
    generation: int = 1
    #: The generation ``..data`` left, whose files go a moment later, and when.
    retiring: int | None = None
    timer: threading.Timer | None = None
    #: Held while the tmpfs is written, and by cleanup before the fd is closed.
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    #: Its redacted output, told each new value before the task can read it (or None).
    redaction: OutputRedaction | None = None


class VolumeSecretIsolator(Isolator):
    """Delivers SECRET volumes: a tmpfs, attached and bound in the task's mount namespace.
    As root; without root, in a user namespace of the user's own (``containerizer.userns``)."""

    name = "volume_secret"
    provides = frozenset({SECRET_VOLUMES})
    #: How long the old generation's files stay once ``..data`` left them: a reader that
    #: read the link just before the swap still finds the file it is opening (removed at
    #: once, it would find nothing). A refresh in the meantime removes them first.
    retire_after_s: ClassVar[float] = 1.0

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
        #: The detached tmpfs of each container and what refreshes need, until cleanup.
        self._containers: dict[str, _Container] = {}
        self._lock = threading.Lock()

    # --- prepare ----------------------------------------------------------------------

    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        container = config.container
        volumes = container.secret_volumes() if container is not None else ()
        if container is None or not volumes:
            return None
        if container.type is not ContainerType.MESOS:
            raise self._error(
                config.container_id,
                "Can only prepare the secret volume isolator for a MESOS container",
            )
        # Every check that needs no secret comes first: a bad path resolves nothing.
        plans = [self._plan(config, index, volume) for index, volume in enumerate(volumes)]
        self._check_distinct(config, plans)
        values = self._resolve(config, plans)
        sizes = [None if v is None else len(v) for v in values]
        self._check_sizes(config.container_id, list(zip(plans, sizes, strict=True)))

        directory = self.container_dir(config.container_id)
        tmpfs = user_namespace = -1
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging = directory / "tmpfs"  # where it is attached, in the task's namespace
            staging.mkdir(mode=0o700, exist_ok=True)
            tmpfs, user_namespace, noswap = self._new_tmpfs(config)
            self._warn_of_swap(noswap)
            state = _Container(
                fd=tmpfs,
                user_namespace=user_namespace,
                context=config.context,
                user=config.user,
                plans=tuple(plans),
                optional=config.optional,
                redaction=config.redaction,
                fixed_sizes={
                    p.index: size
                    for p, size in zip(plans, sizes, strict=True)
                    if size is not None and not p.rotatable
                },
            )
            first = {p.index: v for p, v in zip(plans, values, strict=True) if v is not None}
            self._write_generation(config.container_id, state, 1, first)
            os.symlink(_generation(1), DATA, dir_fd=state.fd)
            mounts = self._mounts(config, plans, first, staging, directory)
            with self._lock:  # complete: refreshes may use it from now on
                self._containers[config.container_id] = state
        except BaseException:
            for fd in (tmpfs, user_namespace):
                if fd >= 0:
                    os.close(fd)
            # The chain would clean up too; an isolator used alone must not leave anything.
            self.cleanup(config.container_id)
            raise
        log.info(
            "%d secret(s) written to the tmpfs of container %s",
            len(first),
            config.container_id,
        )
        return LaunchInfo(
            mounts=tuple(mounts),
            detach=(staging,),
            filesystems=(Filesystem(state.fd, staging),),
            given=tuple(
                (plan.volume.container_path, first[plan.index])
                for plan in plans
                if plan.index in first
            ),
            user_namespace=user_namespace if user_namespace >= 0 else None,
            refreshable=any(plan.rotatable for plan in plans),
        )

    def _mounts(
        self,
        config: ContainerConfig,
        plans: Sequence[_Plan],
        written: Collection[int],
        staging: Path,
        directory: Path,
    ) -> list[Mount]:
        """The tmpfs bound at ``.mesos-secrets`` and a link for each rotatable volume; a
        single-file bind of ``..1/<index>`` for each other volume ``written``."""
        sandbox = Path(os.path.realpath(config.sandbox))
        mounts = []
        if any(plan.rotatable for plan in plans):
            at, made = self._secrets_dir(config, sandbox, directory)
            mounts.append(Mount(staging, at, read_only=True, base=sandbox, inode=made))
        for plan in plans:
            if plan.rotatable:  # made even for a missing optional secret: a refresh
                self._make_entry(config, plan, sandbox, directory, link=True)
                continue
            if plan.index not in written:  # optional, not resolved: nothing bound
                continue
            source = staging / _generation(1) / str(plan.index)
            read_only = plan.mode is VolumeMode.RO
            if plan.host is not None:
                target, base, inode = plan.host, None, plan.host_inode
            elif config.rootfs is not None and plan.base == config.rootfs:
                # In an image: runc makes the mount point, inside the image's overlay.
                target, base, inode = plan.base / plan.relative, None, None
            else:
                target, inode = self._make_entry(config, plan, sandbox, directory)
                base = sandbox
            mounts.append(Mount(source, target, read_only, base=base, inode=inode))
        return mounts

    def _error(self, container_id: str, message: str) -> IsolatorError:
        return IsolatorError(message, isolator=self.name, container_id=container_id)

    def _plan(self, config: ContainerConfig, index: int, volume: Volume) -> _Plan:
        path = volume.container_path
        if not path.startswith("/"):
            parts = [part for part in path.split("/") if part != "."]
            if not parts:
                raise self._error(
                    config.container_id,
                    f"container path '{path}' is the sandbox itself, not a file in it",
                )
            if parts[0] == SECRETS_DIR:
                raise self._error(
                    config.container_id,
                    f"container path '{path}' is in '{SECRETS_DIR}', the sandbox directory "
                    "that holds the secret volumes' tmpfs; choose another path",
                )
            return _Plan(volume, index, base=config.sandbox, relative="/".join(parts))
        if config.rootfs is not None:
            return _Plan(volume, index, base=config.rootfs, relative=path.lstrip("/"))
        # No image: an existing host file, bound over in the task's mount namespace.
        no_links = linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
        try:
            fd = linux.openat2(linux.AT_FDCWD, path, os.O_PATH, no_links)
        except FileNotFoundError:
            raise self._error(
                config.container_id, f"Absolute container path '{path}' does not exist"
            ) from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._error(
                    config.container_id,
                    f"Absolute container path '{path}' goes through a symbolic link; secret "
                    "volumes are never written through links",
                ) from None
            raise self._error(
                config.container_id, f"cannot open '{path}': {error.strerror}"
            ) from None
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise self._error(
                config.container_id, f"Absolute container path '{path}' is not a regular file"
            )
        return _Plan(volume, index, host=Path(path), host_inode=nofollow.identity(info))

    def _check_distinct(self, config: ContainerConfig, plans: Sequence[_Plan]) -> None:
        """Two volumes at one path of the sandbox would be one file, or one over the other."""
        seen: set[str] = set()
        for plan in plans:
            if plan.base is None or plan.base == config.rootfs:
                continue
            if plan.relative in seen:
                raise self._error(
                    config.container_id,
                    f"container path '{plan.volume.container_path}' is given to more than "
                    "one secret volume",
                )
            seen.add(plan.relative)

    def _resolve(self, config: ContainerConfig, plans: list[_Plan]) -> list[SecretBytes | None]:
        return self.resolve_each(config, [(p.label, p.secret) for p in plans])

    def _check_sizes(self, container_id: str, sizes: Sequence[tuple[_Plan, int | None]]) -> None:
        """Each secret, and all of them (page-rounded), within the cap. None: no file."""
        total = 0
        for plan, size in sizes:
            if size is None:
                continue
            if size > self.size:
                raise self._error(
                    container_id,
                    f"{plan.label} is {human(size)}, more than the secret volume size "
                    f"cap of {human(self.size)} (option 'size' of the volume_secret isolator)",
                )
            total += _pages(size)
        if total > self.size:
            count = sum(size is not None for _, size in sizes)
            raise self._error(
                container_id,
                f"the {count} secret volumes take {human(total)} on the tmpfs, more than "
                f"the size cap of {human(self.size)} (option 'size' of the volume_secret isolator)",
            )

    def _new_tmpfs(self, config: ContainerConfig) -> tuple[int, int, bool]:
        """The container's tmpfs, detached: an fd of its root, mounted nowhere; without
        root, an fd of the user namespace it was made in (else -1); and whether it is
        kept out of swap.

        Twice the cap: a new generation always fits beside the current one. Its root is
        root's (without root: the user's) and ``0755``: it is only ever seen inside the
        task's own mount namespace, and the files in it are the task user's, ``0400``.
        Without root it is made in a user namespace of the user's own
        (:mod:`mesos_secrets.containerizer.userns`), which the task's init joins; for a
        task in an image, one where the user is root, as runc needs.
        """
        options: dict[str, str | None] = {"size": str(2 * self.size), "mode": "0755"}
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        user_namespace = -1
        if linux.is_root():
            options |= {"uid": "0", "gid": "0"}  # without root: its maker's, the user's
            try:
                fd, noswap = linux.new_tmpfs(options, flags, source=SOURCE, noswap=self.noswap)
            except OSError as error:
                raise self._error(
                    config.container_id, f"cannot make the secret tmpfs: {error.strerror}"
                ) from None
        else:
            from mesos_secrets.containerizer import userns  # noqa: PLC0415

            try:
                made = userns.private_tmpfs(
                    options,
                    flags,
                    source=SOURCE,
                    as_root=userns.maps_user_to_root(config),
                )
            except LaunchError as error:
                raise self._error(config.container_id, str(error)) from None
            (fd,), user_namespace, noswap = made.tmpfs, made.user_namespace, made.noswap
        return fd, user_namespace, noswap

    def _warn_of_swap(self, noswap: bool) -> None:
        """Once per process: where the tmpfs could not be kept out of swap, say so."""
        global _WARNED_SWAP  # noqa: PLW0603 (once per process)
        if self.noswap and not noswap and not _WARNED_SWAP:
            _WARNED_SWAP = True
            log.warning(
                "secret volumes may be written to swap: %s",
                "this kernel's tmpfs has no 'noswap' option (Linux 6.4+)"
                if linux.is_root()
                else "only root may keep a tmpfs out of swap",
            )

    def _write_generation(
        self,
        container_id: str,
        state: _Container,
        number: int,
        values: Mapping[int, SecretBytes],
        *,
        keep: Collection[int] = (),
    ) -> None:
        """Make generation ``number``: ``values`` by volume index, and the files of
        ``keep`` (indexes) linked from the current generation, unchanged. Nothing points
        to it yet, so each file can be written in place; on any failure it is removed."""
        name = _generation(number)
        os.mkdir(name, 0o755, dir_fd=state.fd)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=state.fd)
            try:
                os.fchmod(fd, 0o755)
                if keep:
                    current = os.open(_generation(state.generation), _DIR_FLAGS, dir_fd=state.fd)
                    try:
                        for index in keep:
                            os.link(
                                str(index),
                                str(index),
                                src_dir_fd=current,
                                dst_dir_fd=fd,
                                follow_symlinks=False,
                            )
                    finally:
                        os.close(current)
                for plan in state.plans:
                    value = values.get(plan.index)
                    if value is not None:
                        self._write(container_id, state.user, plan, fd, value)
            finally:
                os.close(fd)
        except BaseException:
            try:
                nofollow.remove_tree_at(state.fd, name)
            except OSError as error:
                log.warning("could not remove the unfinished secret generation: %s", error)
            raise

    def _write(
        self, container_id: str, user: TaskUser, plan: _Plan, dir_fd: int, value: SecretBytes
    ) -> None:
        """Write one secret, as ``index`` in the generation directory ``dir_fd``."""
        mode = 0o600 if plan.mode is VolumeMode.RW else 0o400
        fd = os.open(str(plan.index), _NEW_FILE, mode, dir_fd=dir_fd)
        try:
            view = memoryview(value.reveal())
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, user.uid, user.gid)
            os.fchmod(fd, mode)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise self._error(
                    container_id,
                    f"{plan.label} does not fit in the {human(2 * self.size)} secret tmpfs",
                ) from None
            raise
        finally:
            os.close(fd)

    def _secrets_dir(
        self, config: ContainerConfig, sandbox: Path, directory: Path
    ) -> tuple[Path, nofollow.Identity]:
        """Create ``sandbox/.mesos-secrets``, where the tmpfs is bound: a directory of
        ours, journalled; whatever is there already (the task's) is refused, never used."""
        fd = nofollow.open_directory(sandbox)
        try:
            base = nofollow.identity(os.fstat(fd))
            try:
                os.mkdir(SECRETS_DIR, 0o755, dir_fd=fd)
            except FileExistsError:
                raise self._error(
                    config.container_id,
                    f"the sandbox has a '{SECRETS_DIR}' already ({_kind(fd, SECRETS_DIR)}), "
                    "where the secret volumes' tmpfs goes: it is never reused or followed",
                ) from None
            made = os.open(SECRETS_DIR, _DIR_FLAGS, dir_fd=fd)
            try:
                info = os.fstat(made)
                _record(directory / "created.json", sandbox, base, [SECRETS_DIR], info)
                os.fchmod(made, 0o755)
            finally:
                os.close(made)
            return sandbox / SECRETS_DIR, nofollow.identity(info)
        finally:
            os.close(fd)

    def _make_entry(
        self,
        config: ContainerConfig,
        plan: _Plan,
        sandbox: Path,
        directory: Path,
        *,
        link: bool = False,
    ) -> tuple[Path, nofollow.Identity]:
        """Create ``sandbox/relative`` without following any symbolic link: an empty
        file (a mount point), or with ``link`` a relative link to the volume's file under
        ``.mesos-secrets/..data``.

        Parent directories are made as needed. Each entry made is journalled with its
        inode as soon as it exists, so cleanup can remove it (and only it) after a crash.
        Returns its path and inode. An existing file is bound over, as in Mesos; a link
        is made only where there is nothing yet.
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
            if link:
                target = "../" * (len(parts) - 1) + f"{SECRETS_DIR}/{DATA}/{plan.index}"
                try:
                    os.symlink(target, last, dir_fd=fd)
                except FileExistsError:
                    raise self._taken(config, plan, walked, fd, last) from None
                info = os.stat(last, dir_fd=fd, follow_symlinks=False)
                _record(journal, sandbox, base, parts, info, link=target)
                os.chown(last, config.user.uid, config.user.gid, dir_fd=fd, follow_symlinks=False)
                return walked, nofollow.identity(info)
            try:
                placeholder = os.open(last, _NEW_FILE, 0o400, dir_fd=fd)
            except FileExistsError:
                info = os.stat(last, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    raise self._taken(config, plan, walked, fd, last) from None
                return walked, nofollow.identity(info)
            try:
                info = os.fstat(placeholder)
                _record(journal, sandbox, base, parts, info)
            finally:
                os.close(placeholder)
            return walked, nofollow.identity(info)
        finally:
            os.close(fd)

    def _taken(
        self, config: ContainerConfig, plan: _Plan, walked: Path, dir_fd: int, name: str
    ) -> IsolatorError:
        kind = _kind(dir_fd, name)
        if kind == "a symbolic link":
            return self._error(
                config.container_id,
                f"container path '{plan.volume.container_path}' is a symbolic link at "
                f"'{walked}'; secret volumes are never written through links",
            )
        if plan.rotatable:
            return self._error(
                config.container_id,
                f"container path '{plan.volume.container_path}' is taken at '{walked}' "
                f"({kind}); a secret volume's link is made only where there is nothing yet",
            )
        return self._error(
            config.container_id,
            f"container path '{plan.volume.container_path}' is {kind} at '{walked}', not "
            "a regular file",
        )

    def _not_followed(
        self, config: ContainerConfig, plan: _Plan, walked: Path, error: OSError
    ) -> IsolatorError:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symbolic link" if walked.is_symlink() else "not a directory"
            return self._error(
                config.container_id,
                f"container path '{plan.volume.container_path}' goes through '{walked}', which "
                f"is {what}; secret volumes are never written through links",
            )
        return self._error(config.container_id, f"cannot create '{walked}': {error.strerror}")

    # --- while the task runs --------------------------------------------------------------

    def refresh(self, container_id: str, names: Collection[str]) -> Refreshed | None:
        """Deliver the current values of the secrets named to the container's rotatable
        volumes: a new generation, then ``..data`` swapped to it, then the old one
        removed. Nothing is written when no value changed. A failure (a secret that
        cannot be resolved, a full tmpfs) is an :class:`IsolatorError` naming the volume,
        and leaves the current generation as it was."""
        with self._lock:
            state = self._containers.get(container_id)
        if state is None:
            log.debug("no secret volumes of container %s to refresh here", container_id)
            return None
        with state.lock:
            if state.fd < 0:  # cleaned up meanwhile
                log.debug("no secret volumes of container %s to refresh here", container_id)
                return None
            self._retire_now(state)  # so that a new generation always fits
            wanted = {agent_name(name) for name in names}
            named = [
                plan
                for plan in state.plans
                if plan.reference is not None and agent_name(plan.reference) in wanted
            ]
            if not named:
                return None
            fixed = tuple(plan.label for plan in named if not plan.rotatable)
            rotatable = [plan for plan in named if plan.rotatable]
            if not rotatable:
                return Refreshed(fixed=fixed)
            values = self.resolve_for(
                container_id,
                state.context,
                [(plan.label, plan.secret) for plan in rotatable],
                optional=state.optional,
            )
            try:
                current = self._read_current(state, rotatable)
                changed: dict[int, SecretBytes] = {}
                updated = []
                for plan, value in zip(rotatable, values, strict=True):
                    # An optional secret that still cannot be resolved keeps what it has.
                    if value is not None and current.get(plan.index) != value:
                        changed[plan.index] = value
                        updated.append(plan.label)
                if not changed:
                    return Refreshed(fixed=fixed)
                if state.redaction is not None:  # before the task can read them
                    by_path = {plan.index: plan.volume.container_path for plan in rotatable}
                    state.redaction.learn((by_path[i], v) for i, v in changed.items())
                self._swap(container_id, state, changed)
            except OSError as error:
                raise self._error(
                    container_id, f"cannot refresh the secret volumes: {error.strerror}"
                ) from None
            log.info(
                "%d secret volume(s) of container %s have new values (generation %d)",
                len(updated),
                container_id,
                state.generation,
            )
            return Refreshed(updated=tuple(updated), fixed=fixed)

    def _read_current(self, state: _Container, plans: Sequence[_Plan]) -> dict[int, SecretBytes]:
        """The current generation's files of ``plans``, by index (none: no file yet)."""
        values: dict[int, SecretBytes] = {}
        fd = os.open(_generation(state.generation), _DIR_FLAGS, dir_fd=state.fd)
        try:
            for plan in plans:
                try:
                    file = os.open(
                        str(plan.index), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                    )
                except FileNotFoundError:
                    continue
                try:
                    chunks = []
                    while chunk := os.read(file, 1 << 16):
                        chunks.append(chunk)
                    values[plan.index] = SecretBytes(b"".join(chunks))
                finally:
                    os.close(file)
        finally:
            os.close(fd)
        return values

    def _swap(
        self, container_id: str, state: _Container, changed: Mapping[int, SecretBytes]
    ) -> None:
        """Write generation N+1 (``changed``, and the other rotatable files as they are),
        point ``..data`` to it with one rename, then remove generation N's files."""
        rotatable = [plan for plan in state.plans if plan.rotatable]
        present = self._present(state, rotatable)
        sizes: list[tuple[_Plan, int | None]] = []
        for plan in state.plans:
            value = changed.get(plan.index)
            if value is not None:
                sizes.append((plan, len(value)))
            elif plan.rotatable:
                sizes.append((plan, present.get(plan.index)))
            else:
                sizes.append((plan, state.fixed_sizes.get(plan.index)))
        self._check_sizes(container_id, sizes)  # the cap holds for every generation
        new = state.generation + 1
        keep = [index for index in present if index not in changed]
        self._write_generation(container_id, state, new, changed, keep=keep)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_DATA_NEXT, dir_fd=state.fd)
            os.symlink(_generation(new), _DATA_NEXT, dir_fd=state.fd)
            os.rename(_DATA_NEXT, DATA, src_dir_fd=state.fd, dst_dir_fd=state.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                nofollow.remove_tree_at(state.fd, _generation(new))
            raise
        state.retiring, state.generation = state.generation, new
        if state.timer is not None:
            state.timer.cancel()
        state.timer = threading.Timer(self.retire_after_s, self._retire_later, (state,))
        state.timer.daemon = True
        state.timer.start()

    @staticmethod
    def _present(state: _Container, plans: Sequence[_Plan]) -> dict[int, int]:
        """The sizes of ``plans``' files in the current generation, by index."""
        sizes: dict[int, int] = {}
        fd = os.open(_generation(state.generation), _DIR_FLAGS, dir_fd=state.fd)
        try:
            for plan in plans:
                info = nofollow.stat_at(fd, str(plan.index))
                if info is not None and stat.S_ISREG(info.st_mode):
                    sizes[plan.index] = info.st_size
        finally:
            os.close(fd)
        return sizes

    def _retire_later(self, state: _Container) -> None:
        with state.lock:
            if state.fd >= 0:  # else cleaned up: the tmpfs is gone with its fd
                self._retire_now(state)

    @staticmethod
    def _retire_now(state: _Container) -> None:
        """Remove the rotatable files of the generation ``..data`` left (a reader that has
        one open keeps it), and its directory once empty (the fixed volumes' files stay
        where they are bound from)."""
        if state.retiring is None:
            return
        name = _generation(state.retiring)
        state.retiring = None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=state.fd)
            try:
                for plan in state.plans:
                    if plan.rotatable:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(str(plan.index), dir_fd=fd)
                remaining = os.listdir(fd)
            finally:
                os.close(fd)
            if not remaining:
                os.rmdir(name, dir_fd=state.fd)
        except OSError as error:
            log.warning("could not remove secret generation %s: %s", name, error.strerror)

    # --- cleanup ------------------------------------------------------------------------

    def verify(self, container_id: str) -> None:
        """After the fetch: what prepare made in the sandbox is still there as it made
        it. A fetched file, or an archive's member, at a secret volume's path would
        otherwise take the secret's place in silence (the fetcher replaces links)."""
        for entry in _read_journal(self.container_dir(container_id) / "created.json"):
            if not _still_ours(entry):
                raise IsolatorError(
                    f"'{printable(str(entry.get('path')))}' in the sandbox was replaced after "
                    "the secret volumes were prepared (by a fetched URI or one of its "
                    "archive's members?): a secret volume's path is never overwritten",
                    isolator=self.name,
                    container_id=container_id,
                )

    def cleanup(self, container_id: str) -> None:
        with self._lock:
            state = self._containers.pop(container_id, None)
        if state is not None:
            with state.lock:  # after a refresh under way: the fd is not closed under it
                if state.timer is not None:
                    state.timer.cancel()
                os.close(state.fd)
                state.fd = -1
                if state.user_namespace >= 0:
                    os.close(state.user_namespace)
                    state.user_namespace = -1
        directory = self.container_dir(container_id)
        if not directory.exists():
            return
        for entry in reversed(_read_journal(directory / "created.json")):
            _remove_created(entry)
        nofollow.remove_tree(directory)


def _kind(dir_fd: int, name: str) -> str:
    """What ``name`` is, in words (never followed)."""
    info = nofollow.stat_at(dir_fd, name)
    if info is None:
        return "gone"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if stat.S_ISREG(info.st_mode):
        return "a file"
    return "not a regular file"


def _record(
    journal: Path,
    base: Path,
    base_inode: nofollow.Identity,
    parts: list[str],
    info: os.stat_result,
    *,
    link: str | None = None,
) -> None:
    """Journal an entry prepare made: where, which inode, and for a symbolic link what it
    points to (never a value)."""
    entry: dict[str, object] = {
        "base": os.fspath(base),
        "base_inode": list(base_inode),
        "path": "/".join(parts),
        "inode": list(nofollow.identity(info)),
    }
    if link is not None:
        entry["link"] = link
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


def _still_ours(entry: dict[str, object]) -> bool:
    """Whether an entry prepare made is still there, as it made it (the same inode; a
    link: pointing where it was made to point). Looked at without following links."""
    base, base_inode = entry.get("base"), entry.get("base_inode")
    path, inode, link = entry.get("path"), entry.get("inode"), entry.get("link")
    if not (isinstance(base, str) and isinstance(path, str)):
        return False
    parent, _, name = path.rpartition("/")
    try:
        root = nofollow.open_directory(base)
        try:
            if list(nofollow.identity(os.fstat(root))) != base_inode:
                return False
            directory = nofollow.open_directory(parent, dir_fd=root) if parent else os.dup(root)
            try:
                info = nofollow.stat_at(directory, name)
                if info is None or list(nofollow.identity(info)) != inode:
                    return False
                if link is None:
                    return True
                return stat.S_ISLNK(info.st_mode) and os.readlink(name, dir_fd=directory) == link
            finally:
                os.close(directory)
        finally:
            os.close(root)
    except OSError:
        return False


def _remove_created(entry: dict[str, object]) -> None:
    """Remove a placeholder file, a link or a directory we made, only if it is still
    that inode (a link: and still pointing where we made it point).

    From an fd of the sandbox (checked to be the sandbox it was), walking down without
    following links: whatever the task did to the names on the way, nothing outside
    the sandbox, and nothing but what we made, is removed. A directory the task put
    files in stays.
    """
    base, base_inode = entry.get("base"), entry.get("base_inode")
    path, inode, link = entry.get("path"), entry.get("inode"), entry.get("link")
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
            if link is not None:
                if stat.S_ISLNK(info.st_mode) and os.readlink(name, dir_fd=directory) == link:
                    os.unlink(name, dir_fd=directory)
            elif stat.S_ISREG(info.st_mode) and info.st_size == 0:
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
