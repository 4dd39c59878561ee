"""``local``: the embedded encrypted store, and the default resolver.

One directory (``MESOS_SECRETS_HOME``, default ``~/.local/share/mesos-secrets``) holds:

- ``key``: 32 random bytes, created ``0600`` on first write; refused when the group or
  others may access it, when another user owns it, or when it is not a regular file (it
  is opened non-blocking, so a named pipe is refused instead of waited on). A symbolic
  link is followed, as secret mounts are made of them: the checks apply to the file it
  leads to;
- ``secrets.db``: SQLite (WAL, ``secure_delete``), where each field of each version of
  each secret is sealed with AES-256-GCM under a fresh nonce. The associated data binds
  the ciphertext to its secret name, key and version, so a ciphertext moved to another
  row fails to open instead of yielding another secret's value.

A secret is a set of fields (``KEY=VALUE``), versioned like Vault's KV v2: every
``put`` writes a new version, the newest ``max_versions`` are kept. Writers in several
processes are serialized by SQLite (``BEGIN IMMEDIATE``), so none loses an update.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mesos_secrets.errors import (
    ConfigError,
    ResolverError,
    SecretNotFoundError,
    SecretValidationError,
    StoreError,
)
from mesos_secrets.names import normalize_key, normalize_name
from mesos_secrets.resolver import ResolveContext, SecretResolver, select_field
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["HOME_ENV", "LocalResolver", "LocalStore", "SecretInfo", "default_home"]

HOME_ENV = "MESOS_SECRETS_HOME"
KEY_SIZE = 32
NONCE_SIZE = 12
FORMAT = b"mesos-secrets-store/1"
_KEYCHECK = b"mesos-secrets keycheck"
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name    TEXT PRIMARY KEY,
    current INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name    TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS fields (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    key        TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
);
"""


def default_home() -> Path:
    """``$MESOS_SECRETS_HOME``, else ``$XDG_DATA_HOME/mesos-secrets``, else ``~/.local/share``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "mesos-secrets"


@attrs.frozen
class SecretInfo:
    """What ``ls`` shows of a secret: never a value."""

    name: str
    version: int
    keys: tuple[str, ...]
    created: float
    updated: float


def _aad(name: str, key: str, version: int) -> bytes:
    return b"\0".join((FORMAT, name.encode(), key.encode(), str(version).encode()))


class LocalStore:
    """The embedded encrypted store. Thread-safe; safe across processes.

    Nothing is created until the first :meth:`put`: reading a store that does not
    exist finds no secrets and leaves no files behind.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        max_versions: int = 10,
    ) -> None:
        if not isinstance(max_versions, int) or max_versions < 1:
            raise ConfigError("'max_versions' must be a positive integer")
        self.home = Path(home) if home is not None else default_home()
        self.key_file = Path(key_file) if key_file is not None else self.home / "key"
        self.db_path = self.home / "secrets.db"
        self.max_versions = max_versions
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._aead: AESGCM | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"LocalStore('{_show(self.home)}')"

    # --- public API ---------------------------------------------------------------

    def put(self, name: str, fields: Mapping[str, bytes | str | SecretBytes]) -> int:
        """Store a new version of secret ``name`` with these fields; return its number."""
        name = normalize_name(name)
        if not fields:
            raise SecretValidationError(f"secret '{name}' needs at least one KEY=VALUE field")
        plain = {normalize_key(key): _as_bytes(value) for key, value in fields.items()}
        with self._lock, self._transaction(create=True) as conn:
            assert conn is not None  # create=True always opens the store
            aead = self._cipher()
            now = time.time()
            row = conn.execute("SELECT current FROM secrets WHERE name = ?", (name,)).fetchone()
            version = (row[0] if row else 0) + 1
            if row:
                conn.execute(
                    "UPDATE secrets SET current = ?, updated = ? WHERE name = ?",
                    (version, now, name),
                )
            else:
                conn.execute("INSERT INTO secrets VALUES (?, ?, ?, ?)", (name, version, now, now))
            conn.execute("INSERT INTO versions VALUES (?, ?, ?)", (name, version, now))
            for key, value in plain.items():
                nonce = secrets.token_bytes(NONCE_SIZE)
                sealed = aead.encrypt(nonce, value, _aad(name, key, version))
                conn.execute(
                    "INSERT INTO fields VALUES (?, ?, ?, ?, ?)", (name, version, key, nonce, sealed)
                )
            conn.execute(
                "DELETE FROM versions WHERE name = ? AND version <= ?",
                (name, version - self.max_versions),
            )
        return version

    def get(self, name: str, version: int | None = None) -> dict[str, SecretBytes]:
        """The fields of secret ``name`` (its newest version, or ``version``)."""
        name = normalize_name(name)
        with self._lock, self._transaction(create=False) as conn:
            if conn is None:
                raise self._not_found(name)
            row = conn.execute("SELECT current FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._not_found(name)
            wanted = row[0] if version is None else version
            rows = conn.execute(
                "SELECT key, nonce, ciphertext FROM fields WHERE name = ? AND version = ?",
                (name, wanted),
            ).fetchall()
            if not rows:
                kept = [
                    v
                    for (v,) in conn.execute(
                        "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,)
                    )
                ]
                raise SecretNotFoundError(
                    f"secret '{name}' has no version {wanted} in the embedded store at "
                    f"'{_show(self.home)}' (kept: {', '.join(map(str, kept))})",
                    reference=name,
                    resolver="local",
                )
            aead = self._cipher()
            out: dict[str, SecretBytes] = {}
            for key, nonce, sealed in rows:
                try:
                    out[key] = SecretBytes(aead.decrypt(nonce, sealed, _aad(name, key, wanted)))
                except InvalidTag:
                    raise StoreError(
                        f"secret '{name}' key '{key}' (version {wanted}) failed its integrity "
                        f"check: the store at '{_show(self.home)}' was damaged or tampered with",
                        reference=name,
                        key=key,
                        resolver="local",
                    ) from None
            return out

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        """Every secret whose name is ``prefix`` or lies under it, sorted by name."""
        root = normalize_name(prefix) if prefix not in (None, "", "/") else ""
        with self._lock, self._transaction(create=False) as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT s.name, s.current, s.created, s.updated, group_concat(f.key, '/') "
                "FROM secrets s JOIN fields f ON f.name = s.name AND f.version = s.current "
                "WHERE s.name = ? OR substr(s.name, 1, ?) = ? "
                "GROUP BY s.name ORDER BY s.name",
                (root, len(root) + 1, root + "/"),
            ).fetchall()
        return [
            SecretInfo(name, version, tuple(sorted(keys.split("/"))), created, updated)
            for name, version, created, updated, keys in rows
        ]

    def delete(self, name: str) -> None:
        """Remove secret ``name`` and all its versions (overwritten on disk: secure_delete)."""
        name = normalize_name(name)
        with self._lock, self._transaction(create=False) as conn:
            if (
                conn is None
                or not conn.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount
            ):
                raise self._not_found(name)

    def check(self) -> None:
        """Open the store if it exists: checks the key file, the format and the key."""
        with self._lock, self._transaction(create=False):
            pass

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._aead = None

    # --- opening --------------------------------------------------------------------

    def _not_found(self, name: str) -> SecretNotFoundError:
        return SecretNotFoundError(
            f"secret '{name}' not found in the embedded store at '{_show(self.home)}'",
            reference=name,
            resolver="local",
        )

    def _cipher(self) -> AESGCM:
        assert self._aead is not None
        return self._aead

    @contextlib.contextmanager
    def _transaction(self, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        """One transaction on the store; ``None`` when it does not exist and ``create`` is off."""
        started = time.monotonic()
        try:
            conn = self._connection(create)
            if conn is None:
                yield None
                return
            conn.execute("BEGIN IMMEDIATE" if create else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise self._store_error(error, time.monotonic() - started) from None

    def _store_error(self, error: sqlite3.Error, waited: float) -> StoreError:
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            # SQLite gives up at once, without waiting, where waiting could deadlock.
            reason = (
                f"busy for more than {_BUSY_TIMEOUT_S:.0f}s ({error})"
                if waited >= _BUSY_TIMEOUT_S
                else f"another process is using it ({error}, after {waited:.1f}s)"
            )
        else:
            reason = f"corrupted or not a mesos-secrets store ({error})"
        return StoreError(f"the embedded store '{_show(self.db_path)}' cannot be used: {reason}")

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited across fork() is not ours to use
        exists = self._database_exists()
        if not exists and not create:
            return None
        if not exists:
            # The key comes first: whoever sees the database file may count on the key.
            try:
                self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                raise self._unusable(self.home, error) from None
            if not self.key_file.exists():
                self._create_key()
        key = self._read_key()
        if not exists:
            try:
                self._create_database(AESGCM(key))
            except OSError as error:
                raise self._unusable(self.home, error) from None
        conn = sqlite3.connect(
            self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            aead = AESGCM(key)
            self._initialize(conn, aead)
        except BaseException:
            conn.close()
            raise
        self._conn, self._aead, self._pid = conn, aead, os.getpid()
        return conn

    def _database_exists(self) -> bool:
        """Whether the database file is there; a StoreError when it cannot be looked for,
        or is not a regular file (a named pipe would make SQLite wait forever)."""
        try:
            info = os.stat(self.db_path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise self._unusable(self.home, error) from None
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(
                f"the embedded store '{_show(self.db_path)}' is not a regular file "
                f"({_kind(info.st_mode)})"
            )
        return True

    def _unusable(self, path: Path, error: OSError) -> StoreError:
        return StoreError(
            f"the embedded store at '{_show(self.home)}' cannot be used: {_reason(path, error)}"
        )

    def _create_database(self, aead: AESGCM) -> None:
        """Make the database whole under a private name, then link(2) it into place.

        Nobody ever opens it empty: two processes that find an empty file and both turn
        it to WAL collide, and SQLite answers one of them "database is locked" at once,
        without waiting (it would have to upgrade a read lock it holds). Whoever links
        first wins; the others use that database.
        """
        tmp = self.db_path.with_name(f".{self.db_path.name}.{secrets.token_hex(8)}")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                self._initialize(conn, aead)
            finally:
                conn.close()  # the last connection: checkpoints, removes -wal and -shm
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.db_path)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)

    def _initialize(self, conn: sqlite3.Connection, aead: AESGCM) -> None:
        """Create the schema if needed, then check the format and that the key fits."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            nonce = secrets.token_bytes(NONCE_SIZE)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('keycheck', ?)",
                (FORMAT, nonce + aead.encrypt(nonce, _KEYCHECK, FORMAT)),
            )
            meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if meta.get("format") != FORMAT:
            raise StoreError(
                f"'{_show(self.db_path)}' is not a mesos-secrets store of a format this "
                "version reads"
            )
        check = meta["keycheck"]
        try:
            aead.decrypt(check[:NONCE_SIZE], check[NONCE_SIZE:], FORMAT)
        except InvalidTag:
            raise StoreError(
                f"the key file '{_show(self.key_file)}' does not belong to the store "
                f"'{_show(self.db_path)}' "
                "(a wrong or replaced key file)"
            ) from None

    def _read_key(self) -> bytes:
        # Non-blocking: opening a named pipe would wait for a writer. Symbolic links are
        # followed (secret mounts are made of them); what is checked is the file opened.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(self.key_file, flags)
        except FileNotFoundError:
            raise StoreError(
                f"the key file '{_show(self.key_file)}' of the store "
                f"'{_show(self.db_path)}' is missing"
            ) from None
        except OSError as error:
            raise StoreError(
                f"cannot read the key file '{_show(self.key_file)}': {error.strerror}"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StoreError(
                    f"the key file '{_show(self.key_file)}' is not a regular file "
                    f"({_kind(info.st_mode)})"
                )
            if info.st_mode & 0o077:
                raise StoreError(
                    f"the key file '{_show(self.key_file)}' may be accessed by group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); "
                    f"run: chmod 600 '{_show(self.key_file)}'"
                )
            if info.st_uid != os.geteuid():
                raise StoreError(
                    f"the key file '{_show(self.key_file)}' belongs to uid {info.st_uid}, "
                    f"not to this user (uid {os.geteuid()})"
                )
            key = os.read(fd, KEY_SIZE + 1)
        finally:
            os.close(fd)
        if len(key) != KEY_SIZE:
            raise StoreError(
                f"the key file '{_show(self.key_file)}' is not a key of this store "
                f"(expected {KEY_SIZE} bytes)"
            )
        return key

    def _create_key(self) -> None:
        """Write a new key atomically: a private temporary file, then link(2) into place."""
        try:
            self._write_key()
        except OSError as error:
            raise StoreError(
                f"cannot create the key file '{_show(self.key_file)}': "
                f"{_reason(self.key_file.parent, error)}"
            ) from None

    def _write_key(self) -> None:
        self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.key_file.with_name(f".{self.key_file.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.key_file)  # fails if another process got there first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()


def _show(path: object) -> str:
    """A path (or any name read from disk) for a message: control characters escaped."""
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a file"


def _reason(path: Path, error: OSError) -> str:
    """Why ``path`` (a directory to use or make) failed: for "not a directory" and
    "file exists", the file in the way, which may be ``path`` or one above it."""
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        for candidate in (path, *path.parents):
            try:
                if not stat.S_ISDIR(os.stat(candidate).st_mode):
                    return f"'{_show(candidate)}' is not a directory"
            except OSError:
                continue
    return error.strerror or type(error).__name__


def _as_bytes(value: bytes | str | SecretBytes) -> bytes:
    if isinstance(value, SecretBytes):
        return value.reveal()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"a secret value is bytes, str or SecretBytes, not {type(value).__name__}")


class LocalResolver(SecretResolver):
    """Resolves references from the embedded store.

    Options: ``home`` (default ``$MESOS_SECRETS_HOME``), ``key_file`` (default
    ``<home>/key``), ``max_versions`` (default 10).
    """

    name = "local"

    def __init__(
        self,
        home: Path | None = None,
        key_file: Path | None = None,
        max_versions: int = 10,
    ) -> None:
        self.store = LocalStore(home, key_file=key_file, max_versions=max_versions)

    def __repr__(self) -> str:
        return f"<LocalResolver {str(self.store.home)!r}>"

    def private_paths(self) -> tuple[Path, ...]:
        return (self.store.home, self.store.key_file)

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        try:
            fields = self.store.get(reference.name)
        except SecretValidationError as error:
            raise ResolverError(
                f"cannot resolve secret '{reference}': {error.message}",
                reference=reference.name,
                key=reference.key,
                resolver=self.name,
            ) from None
        return select_field(
            reference,
            fields,
            resolver=self.name,
            where=f"the embedded store at '{self.store.home}'",
        )

    def check(self) -> None:
        self.store.check()

    def close(self) -> None:
        self.store.close()
