"""The node cache's copy that survives a restart of the agent, never on a disk.

So that an agent restarted while the store is down (a crash, an upgrade) can still serve
what it served before, within ``max_stale``. The copy is one file, ``cache``, in
``agent-cache/`` beside the agent's socket: a directory on memory-backed storage only
(tmpfs or ramfs; as root, a 16 MiB tmpfs is mounted there when it is not already, and
stays for the next agent; it goes at reboot with everything else). Its contents are
sealed with AES-256-GCM under a key kept in the kernel's keyring of the agent's user
(``keyctl``: memory only, gone at reboot, never in a file), bound to the socket's path.
No key, a key that does not open it, or a file that is not ours: the copy is discarded
and the agent starts with an empty cache.

Written atomically, ``0600``, at most once a second while the cache changes, and when
the agent stops; the values whose leases were revoked are no longer in it then.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from .. import linux
from ..secretbytes import SecretBytes
from .cache import Kept

__all__ = ["Snapshot", "forget"]

log = logging.getLogger("mesos_secrets.agent")

_FORMAT = 1
_NAME = "cache"
_NONCE = 12
_KEY_BYTES = 32
_TMPFS_SIZE = "16m"


class Snapshot:
    """The sealed copy in ``directory``, under the keyring key ``description``."""

    def __init__(self, directory: Path, description: str, key: bytes) -> None:
        self.directory = directory
        self.description = description
        self._key = key
        self._aad = f"mesos-secrets agent cache {_FORMAT} {description}".encode()

    @classmethod
    def open(cls, socket: Path) -> Snapshot | None:
        """The copy for the agent on ``socket``, or None (logged why) where it cannot be
        kept in memory only."""
        directory, description = _where(socket)
        try:
            _memory_directory(directory)
            key = _keyring_key(description)
        except OSError as error:
            log.warning(
                "the cache will not survive a restart: %s", error.strerror or type(error).__name__
            )
            return None
        return cls(directory, description, key)

    def load(self) -> list[Kept]:
        """What the last agent kept, as ages now; nothing if it cannot be trusted."""
        path = self.directory / _NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as error:
            log.warning("the kept cache cannot be read: %s", error.strerror)
            return []
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            data = file.read()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            log.warning("the kept cache at %s is not the agent's own: discarded", path)
            return []
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        try:
            plain = AESGCM(self._key).decrypt(data[:_NONCE], data[_NONCE:], self._aad)
            document = json.loads(plain)
            return _entries(document)
        except (InvalidTag, ValueError, KeyError, TypeError):
            log.warning("the kept cache does not open with this node's key: discarded")
            return []

    def save(self, entries: list[Kept]) -> None:
        """Replace the copy with ``entries`` ((name, key), value, age, freshness, version)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        now = time.time()
        document = {
            "format": _FORMAT,
            "entries": [
                {
                    "name": name,
                    "key": key,
                    "value": value.reveal().hex(),
                    "fetched": now - age,
                    "fresh": fresh,
                    "version": version,
                }
                for (name, key), value, age, fresh, version in entries
            ],
        }
        nonce = secrets.token_bytes(_NONCE)
        sealed = nonce + AESGCM(self._key).encrypt(nonce, json.dumps(document).encode(), self._aad)
        temporary = self.directory / f".{_NAME}.{os.getpid()}.tmp"
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(sealed)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, self.directory / _NAME)

    def discard(self) -> None:
        """Remove the copy and its key."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / _NAME)
        with contextlib.suppress(OSError):
            key = linux.find_user_key(self.description)
            if key is not None:
                linux.invalidate_key(key)


def forget(socket: Path) -> None:
    """Remove what an agent on ``socket`` kept for the next one: the sealed copy, its
    key, and the tmpfs mounted for it."""
    directory, description = _where(socket)
    Snapshot(directory, description, b"").discard()
    while os.path.ismount(directory):
        linux.umount(directory, detach=True)


def _where(socket: Path) -> tuple[Path, str]:
    """The copy's directory, and the description of its key in the keyring."""
    socket = Path(os.path.abspath(socket))
    digest = hashlib.sha256(os.fsencode(socket)).hexdigest()[:16]
    return socket.parent / "agent-cache", f"mesos-secrets-agent:{digest}"


def _entries(document: Any) -> list[Kept]:
    if document.get("format") != _FORMAT:
        raise ValueError("format")
    now = time.time()
    out: list[Kept] = []
    for entry in document["entries"]:
        name, key, version = entry["name"], entry["key"], entry["version"]
        if not isinstance(name, str) or not isinstance(key, str | None):
            raise TypeError("entry")
        value = SecretBytes(bytes.fromhex(entry["value"]))
        age = max(0.0, now - float(entry["fetched"]))
        out.append(((name, key), value, age, float(entry["fresh"]), version))
    return out


def _memory_directory(directory: Path) -> None:
    """``directory`` exists, is ours, ``0700``, and on memory-backed storage (mounting a
    tmpfs there as root when it is not)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(0, f"'{directory}' is not a directory of the agent's user")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    if linux.filesystem_type(directory) in (linux.TMPFS_MAGIC, linux.RAMFS_MAGIC):
        return
    if not linux.is_root():
        raise OSError(0, f"'{directory}' is not on memory-backed storage (tmpfs)")
    linux.mount(
        "mesos-secrets-agent",
        directory,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        f"size={_TMPFS_SIZE},mode=0700",
    )


def _keyring_key(description: str) -> bytes:
    found = linux.find_user_key(description)
    if found is not None:
        key = linux.read_key(found)
        if len(key) == _KEY_BYTES:
            return key
        linux.invalidate_key(found)
    key = secrets.token_bytes(_KEY_BYTES)
    linux.add_user_key(description, key)
    return key
