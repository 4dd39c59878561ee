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

Authenticated metadata (format 2)
---------------------------------
Sealing a field binds its value to a name, key and version, not the rows around it:
which version is current, which versions are kept, which fields each has. Format 1
trusted those rows, so ``UPDATE secrets SET current = 1`` made ``get`` answer the old
password, and a deleted field row went unnoticed. Format 2 authenticates them, under
HMAC-SHA256 with a key derived from the store key by HKDF-SHA256 (its own ``info``, so
the MAC key is independent of the AES key, which predates format 2 and still seals the
fields and the key check as format 1 did):

- a secret's *record*: its name, current version and timestamps, and every row of its
  versions (number, time) and fields (version, key, nonce), as canonical JSON that keeps
  SQLite's types apart (a text nonce is not the blob it spells). The nonces pin each
  field to the one ciphertext written with it (GCM authenticates the rest), which the
  associated data alone does not do across ``rm`` and a new ``put`` of the same name:
  both start at version 1.
- the store's *manifest*: every secret's name and the MAC of its record, MAC'd itself
  (another domain), in the ``meta`` table. Without it a secret whose rows are all
  deleted would be indistinguishable from one removed with ``rm``, and replaying an
  earlier record of one secret (still in the WAL, or in an old copy) would pass.

A MAC rather than an AEAD-sealed copy of the metadata: the metadata is not secret (the
names and keys are in the clear in the rows anyway), only its integrity matters, and a
MAC computed from the rows themselves leaves no second copy to disagree with them.

``get`` recomputes the secret's record and compares its MAC with the manifest's; ``list``
does so for each listed secret and checks that the manifest and the rows name the same
secrets; ``put`` checks the secret it extends before sealing the new record into a new
manifest, so it never blesses an edit. ``delete`` removes a secret whatever state its
rows are in (that is how a tampered secret is discarded) but, like every operation,
only on an authentic manifest. Verifying the manifest costs time in the number of
secrets, so a connection keeps the one it verified until SQLite's ``data_version`` says
another connection has committed: in a long-running process a ``get`` checks one
record, a few microseconds.

Not detected: bringing back an earlier state of the database *as a whole* (a copy of
the file, or pages of it while still in the WAL). Every record and the manifest then
agree, and nothing outside the database remembers the newer state (doing so would need
writable state kept apart from the database, which a restored copy of the directory
would roll back too).

Format 1
--------
A format 1 store's rows were never authenticated, and its key check is a fixed value
that any old copy of the database (or anyone who once read it) holds: a store that says
format 1 and opens under the key may just as well be a format 2 store turned back, its
old key check put back and its rows edited (``UPDATE secrets SET current = 1``).
Nothing in the database tells the two apart once every trace of format 2 is removed,
so a format 1 store is never migrated on its own: every operation refuses it, and
:meth:`LocalStore.migrate` (``mesos-secrets secret migrate``), run by its owner who
knows the store was written by an earlier version, trusts its rows once and seals them.

What is detected:

- a format 1 store, whatever it holds, is refused until migrated: an edit is never
  sealed, nor a value answered, without the owner's ``migrate``;
- a store that says format 1 but whose key check opens only as format 2's (the format
  row alone turned back), or that holds a row format 1 never wrote in ``meta`` (the
  manifest and its MAC, which only format 2 writes), is reported as tampering, by
  ``migrate`` too, and left as it is.

What is not: a format 2 store turned back with its old key check replayed *and* every
format 2 row of ``meta`` removed looks exactly like a store written by format 1 (format
2 adds no column and no table). Only its owner can tell, and ``migrate`` on it seals
whatever rows it holds: a store that was of format 2 and says format 1 again is not to
be migrated, but replaced by a copy you trust. A format 1 store opened with a wrong key
is refused and left as it is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from mesos_secrets.audit import note
from mesos_secrets.errors import (
    ConfigError,
    ResolverError,
    SecretNotFoundError,
    SecretValidationError,
    StoreError,
    printable,
)
from mesos_secrets.names import normalize_key, normalize_name
from mesos_secrets.resolver import ResolveContext, SecretResolver, select_field
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes

# cryptography (and, through it, OpenSSL's hashlib) loads when the store is opened, in
# the methods below that use it: a run that resolves nothing from the store does not pay
# ~8 ms for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["HOME_ENV", "LocalResolver", "LocalStore", "SecretInfo", "default_home"]

HOME_ENV = "MESOS_SECRETS_HOME"
KEY_SIZE = 32
NONCE_SIZE = 12
FORMAT = b"mesos-secrets-store/2"
_FORMAT_1 = b"mesos-secrets-store/1"
#: The fields' associated data starts with this, as it did in format 1: their
#: ciphertexts are kept as they are.
_FIELD_CONTEXT = _FORMAT_1
_KEYCHECK = b"mesos-secrets keycheck"
_MAC_INFO = b"mesos-secrets-store/2 metadata MAC key"
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

# One secret's rows, in the order its record lists them. The same statements serve
# reading and sealing, so both see the rows alike.
_SECRET_ROW = "SELECT current, created, updated FROM secrets WHERE name = ?"
_VERSION_ROWS = "SELECT version, created FROM versions WHERE name = ? ORDER BY version"
_FIELD_ROWS = (
    "SELECT version, key, nonce, CASE WHEN version = ? THEN ciphertext END "
    "FROM fields WHERE name = ? ORDER BY version, key"
)

_REMOVED = "its rows were removed outside mesos-secrets"
_ADDED = "it was added outside mesos-secrets"
_CHANGED = (
    "its versions or fields were changed outside mesos-secrets (rolled back, added or removed)"
)


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


@attrs.frozen
class _Rows:
    """One secret's rows as read from the database, which its record is made of."""

    secret: tuple[Any, ...]  # current, created, updated
    versions: list[tuple[Any, ...]]  # (version, created), by version
    fields: list[tuple[Any, ...]]  # (version, key, nonce), by version then key

    def record(self, name: object) -> bytes:
        """Canonical JSON of the rows, SQLite's types kept apart (a blob is an object)."""
        return _RECORD.encode(
            [FORMAT.decode(), name, self.secret, self.versions, self.fields]
        ).encode()


def _blob(value: object) -> object:
    if isinstance(value, bytes):
        return {"blob": value.hex()}
    raise TypeError(f"a record holds no {type(value).__name__}")


_RECORD = json.JSONEncoder(separators=(",", ":"), default=_blob)


def _aad(name: str, key: str, version: int) -> bytes:
    return b"\0".join((_FIELD_CONTEXT, name.encode(), key.encode(), str(version).encode()))


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
        self._mac_key: bytes | None = None
        self._pid = 0
        # The manifest last verified on this connection, and SQLite's data_version then.
        self._verified: tuple[int, dict[str, bytes]] | None = None

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
            try:
                manifest = dict(self._manifest(conn))
                rows = self._rows(conn, name)
                if rows is None:
                    self._check_absent(conn, name, manifest)
                    current = 0
                else:
                    self._check(name, rows, manifest)
                    current = rows.secret[0]
                aead = self._cipher()
                now = time.time()
                version = current + 1
                if rows is not None:
                    conn.execute(
                        "UPDATE secrets SET current = ?, updated = ? WHERE name = ?",
                        (version, now, name),
                    )
                else:
                    conn.execute(
                        "INSERT INTO secrets VALUES (?, ?, ?, ?)", (name, version, now, now)
                    )
                conn.execute("INSERT INTO versions VALUES (?, ?, ?)", (name, version, now))
                for key, value in plain.items():
                    nonce = os.urandom(NONCE_SIZE)
                    sealed = aead.encrypt(nonce, value, _aad(name, key, version))
                    conn.execute(
                        "INSERT INTO fields VALUES (?, ?, ?, ?, ?)",
                        (name, version, key, nonce, sealed),
                    )
                conn.execute(
                    "DELETE FROM versions WHERE name = ? AND version <= ?",
                    (name, version - self.max_versions),
                )
                written = self._rows(conn, name)
                assert written is not None
                manifest[name] = self._mac(b"secret", written.record(name))
                self._write_manifest(conn, manifest)
            finally:
                self._verified = None  # our own commits leave data_version as it was
        return version

    def get(self, name: str, version: int | None = None) -> dict[str, SecretBytes]:
        """The fields of secret ``name`` (its newest version, or ``version``)."""
        name = normalize_name(name)
        with self._lock, self._transaction(create=False) as conn:
            if conn is None:
                raise self._not_found(name)
            secret = conn.execute(_SECRET_ROW, (name,)).fetchone()
            manifest = self._manifest(conn)
            if secret is None:
                if name in manifest:
                    raise self._tampered(name, _REMOVED)
                raise self._not_found(name)
            wanted = secret[0] if version is None else version
            versions = conn.execute(_VERSION_ROWS, (name,)).fetchall()
            fields = conn.execute(_FIELD_ROWS, (wanted, name)).fetchall()
            self._check(name, _Rows(secret, versions, [row[:3] for row in fields]), manifest)
            kept = [number for number, _ in versions]
            if wanted not in kept:
                raise SecretNotFoundError(
                    f"secret '{name}' has no version {wanted} in the embedded store at "
                    f"'{_show(self.home)}' (kept: {', '.join(map(str, kept))})",
                    reference=name,
                    resolver="local",
                )
            aead = self._cipher()
            note(version=wanted)  # the node agent's inventory shows it
            out: dict[str, SecretBytes] = {}
            for number, key, nonce, sealed in fields:
                if number != wanted:
                    continue
                value = _unseal(aead, nonce, sealed, _aad(name, key, wanted))
                if value is None:
                    raise StoreError(
                        f"secret '{name}' key '{key}' (version {wanted}) failed its integrity "
                        f"check: the store at '{_show(self.home)}' was damaged or tampered with",
                        reference=name,
                        key=key,
                        resolver="local",
                    )
                out[key] = SecretBytes(value)
            return out

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        """Every secret whose name is ``prefix`` or lies under it, sorted by name."""
        root = normalize_name(prefix) if prefix not in (None, "", "/") else ""

        def listed(name: object) -> bool:
            # A name that is not text was not written by the store: always reported.
            return not isinstance(name, str) or name == root or name.startswith(root + "/")

        with self._lock:
            with self._transaction(create=False) as conn:
                if conn is None:
                    return []
                manifest = self._manifest(conn)
                found = conn.execute(
                    "SELECT name, current, created, updated FROM secrets ORDER BY name"
                ).fetchall()
                versions = _by_name(
                    conn.execute(
                        "SELECT name, version, created FROM versions ORDER BY name, version"
                    )
                )
                fields = _by_name(
                    conn.execute(
                        "SELECT name, version, key, nonce FROM fields ORDER BY name, version, key"
                    )
                )
            present = {row[0] for row in found}
            for name in sorted(manifest):
                if listed(name) and name not in present:
                    raise self._tampered(name, _REMOVED)
            for name in [*versions, *fields]:
                if listed(name) and name not in present:
                    raise self._tampered(name, _ADDED)
            infos = []
            for name, current, created, updated in found:
                if not listed(name):
                    continue
                rows = _Rows(
                    (current, created, updated), versions.get(name, []), fields.get(name, [])
                )
                self._check(name, rows, manifest)
                keys = tuple(sorted(key for number, key, _ in rows.fields if number == current))
                infos.append(SecretInfo(name, current, keys, created, updated))
            return infos

    def delete(self, name: str) -> None:
        """Remove secret ``name`` and all its versions (overwritten on disk: secure_delete).

        Whatever state its rows are in: this is how a tampered secret is discarded.
        """
        name = normalize_name(name)
        with self._lock, self._transaction(create=False, write=True) as conn:
            if conn is None:
                raise self._not_found(name)
            try:
                manifest = dict(self._manifest(conn))
                removed = sum(
                    conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,)).rowcount  # noqa: S608
                    for table in ("secrets", "versions", "fields")
                )
                if manifest.pop(name, None) is not None:
                    self._write_manifest(conn, manifest)
                elif not removed:
                    raise self._not_found(name)
            finally:
                self._verified = None

    def migrate(self) -> int | None:
        """Authenticate the metadata of a store written in format 1, trusting its rows as
        they are: the number of secrets sealed, or ``None`` when it is already of format
        2 (nothing is done).

        Run it once, on a store known to have been written by an earlier version: a store
        turned back into format 1 after its metadata was edited cannot always be told
        from one (see the module's documentation).
        """
        with self._lock:
            self.close()
            started = time.monotonic()
            try:
                conn = self._connect(create=False)
                if conn is None:
                    raise StoreError(
                        f"there is no embedded store at '{_show(self.home)}' to migrate"
                    )
                return self._adopt(conn, migrate=True)
            except sqlite3.Error as error:
                raise self._store_error(error, time.monotonic() - started) from None

    def check(self) -> None:
        """Open the store if it exists: checks the key file, the format, the key and the
        store's manifest."""
        with self._lock, self._transaction(create=False) as conn:
            if conn is not None:
                self._manifest(conn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._aead = None
            self._mac_key = None
            self._verified = None

    # --- authenticated metadata ------------------------------------------------------

    def _mac(self, domain: bytes, body: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.hmac import HMAC  # noqa: PLC0415

        assert self._mac_key is not None
        mac = HMAC(self._mac_key, hashes.SHA256())
        mac.update(domain + b"\0" + body)
        return mac.finalize()

    def _rows(self, conn: sqlite3.Connection, name: str) -> _Rows | None:
        secret = conn.execute(_SECRET_ROW, (name,)).fetchone()
        if secret is None:
            return None
        versions = conn.execute(_VERSION_ROWS, (name,)).fetchall()
        fields = conn.execute(_FIELD_ROWS, (None, name)).fetchall()
        return _Rows(secret, versions, [row[:3] for row in fields])

    def _check(self, name: object, rows: _Rows, manifest: dict[str, bytes]) -> None:
        """The secret's rows are those the store last wrote for it."""
        from cryptography.hazmat.primitives import constant_time  # noqa: PLC0415

        expected = manifest.get(name) if isinstance(name, str) else None
        if expected is None:
            raise self._tampered(name, _ADDED)
        if not constant_time.bytes_eq(self._mac(b"secret", rows.record(name)), expected):
            raise self._tampered(name, _CHANGED)

    def _check_absent(
        self, conn: sqlite3.Connection, name: str, manifest: dict[str, bytes]
    ) -> None:
        """A secret with no row in ``secrets`` has none anywhere, and is not in the manifest."""
        if name in manifest:
            raise self._tampered(name, _REMOVED)
        if conn.execute(
            "SELECT 1 FROM versions WHERE name = ? UNION ALL SELECT 1 FROM fields WHERE name = ?",
            (name, name),
        ).fetchone():
            raise self._tampered(name, _ADDED)

    def _manifest(self, conn: sqlite3.Connection) -> dict[str, bytes]:
        """The verified manifest: secret name -> MAC of its record."""
        from cryptography.hazmat.primitives import constant_time  # noqa: PLC0415

        (data_version,) = conn.execute("PRAGMA data_version").fetchone()
        if self._verified is not None and self._verified[0] == data_version:
            return self._verified[1]
        meta = dict(conn.execute("SELECT k, v FROM meta WHERE k IN ('manifest', 'manifest_mac')"))
        body, mac = meta.get("manifest"), meta.get("manifest_mac")
        if not (
            isinstance(body, bytes)
            and isinstance(mac, bytes)
            and constant_time.bytes_eq(self._mac(b"manifest", body), mac)
        ):
            raise self._tampered(None, "its list of secrets is missing or was altered")
        manifest = {name: bytes.fromhex(tag) for name, tag in json.loads(body)["secrets"].items()}
        self._verified = (data_version, manifest)
        return manifest

    def _write_manifest(self, conn: sqlite3.Connection, manifest: dict[str, bytes]) -> None:
        body = json.dumps(
            {"format": FORMAT.decode(), "secrets": {n: t.hex() for n, t in manifest.items()}},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('manifest', ?), ('manifest_mac', ?)",
            (body, self._mac(b"manifest", body)),
        )

    def _tampered(self, name: object, why: str) -> StoreError:
        where = f"the embedded store at '{_show(self.home)}' failed its integrity check: {why}"
        if name is None:
            return StoreError(where, resolver="local")
        return StoreError(
            f"secret '{_show(name)}' in {where}; remove it (secret rm) and put it again",
            reference=name if isinstance(name, str) else None,
            resolver="local",
        )

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
    def _transaction(
        self, *, create: bool, write: bool = False
    ) -> Iterator[sqlite3.Connection | None]:
        """One transaction on the store; ``None`` when it does not exist and ``create`` is off.

        A transaction that will write takes the write lock first (``BEGIN IMMEDIATE``):
        SQLite refuses at once, without waiting, to upgrade a read to a write.
        """
        started = time.monotonic()
        try:
            conn = self._connection(create)
            if conn is None:
                yield None
                return
            conn.execute("BEGIN IMMEDIATE" if create or write else "BEGIN")
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
        elif self._full():
            # SQLite says "disk I/O error" when it cannot make its journal: not corrupt.
            reason = f"the file system it is on is full ({error})"
        else:
            reason = f"corrupted or not a mesos-secrets store ({error})"
        return StoreError(f"the embedded store '{_show(self.db_path)}' cannot be used: {reason}")

    def _full(self) -> bool:
        """Whether the file system under the store has no room left (for this user)."""
        try:
            space = os.statvfs(self.home)
        except OSError:
            return False
        return space.f_bavail == 0 or space.f_favail == 0

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited across fork() is not ours to use
        self._verified = None
        conn = self._connect(create)
        if conn is not None:
            self._adopt(conn, migrate=False)
        return conn

    def _adopt(self, conn: sqlite3.Connection, *, migrate: bool) -> int | None:
        """Open ``conn`` (see :meth:`_open`) and make it the store's connection; closed
        when the store cannot be opened."""
        try:
            migrated = self._open(conn, migrate=migrate)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return migrated

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """A new connection to the database (made first when ``create``), the keys read;
        ``None`` when there is no database and ``create`` is off."""
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
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

        key = self._read_key()
        self._aead = AESGCM(key)
        self._mac_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO
        ).derive(key)
        if not exists:
            try:
                self._create_database()
            except OSError as error:
                raise self._unusable(self.home, error) from None
        conn = sqlite3.connect(
            self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
        except BaseException:
            conn.close()
            raise
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

    def _create_database(self) -> None:
        """Make the database whole under a private name, then link(2) it into place.

        Nobody ever opens it empty: two processes that find an empty file and both turn
        it to WAL collide, and SQLite answers one of them "database is locked" at once,
        without waiting (it would have to upgrade a read lock it holds). Whoever links
        first wins; the others use that database.
        """
        tmp = self.db_path.with_name(f".{self.db_path.name}.{os.urandom(8).hex()}")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                self._initialize(conn)
                conn.execute("COMMIT")
            finally:
                conn.close()  # the last connection: checkpoints, removes -wal and -shm
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.db_path)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)

    def _initialize(self, conn: sqlite3.Connection) -> None:
        """The schema and the metadata of a new, empty store (in a transaction)."""
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta VALUES ('format', ?), ('keycheck', ?)",
            (FORMAT, self._keycheck(FORMAT)),
        )
        self._write_manifest(conn, {})

    def _open(self, conn: sqlite3.Connection, *, migrate: bool) -> int | None:
        """Check the format and that the key fits; refuse a format 1 store, or migrate it
        when ``migrate`` (the number of secrets sealed; ``None``: already format 2)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrated = self._check_or_migrate(conn, migrate=migrate)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return migrated

    def _check_or_migrate(self, conn: sqlite3.Connection, *, migrate: bool) -> int | None:
        if not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
            self._initialize(conn)  # an empty file, as format 1 could leave one
        meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
        form = meta.get("format")
        if form not in (FORMAT, _FORMAT_1):
            raise StoreError(
                f"'{_show(self.db_path)}' is not a mesos-secrets store of a format this "
                "version reads"
            )
        check = meta.get("keycheck")
        if not self._keycheck_opens(check, form):
            if form == _FORMAT_1 and self._keycheck_opens(check, FORMAT):
                raise self._downgraded("its key check is format 2's")
            raise StoreError(
                f"the key file '{_show(self.key_file)}' does not belong to the store "
                f"'{_show(self.db_path)}' (a wrong or replaced key file)"
            )
        if form == FORMAT:
            return None
        # Format 1 wrote only these two rows of meta: any other is format 2's (the
        # manifest), left behind by whoever turned the store back.
        foreign = sorted(map(_show, meta.keys() - {"format", "keycheck"}))
        if foreign:
            raise self._downgraded(f"it holds rows of format 2 ({', '.join(foreign)})")
        if not migrate:
            raise StoreError(
                f"the embedded store at '{_show(self.home)}' is of format 1, written by an "
                "earlier version: run 'mesos-secrets secret migrate' once to authenticate "
                "its metadata (only if you did not expect format 2: a store brought back to "
                "format 1 may have been tampered with)",
                resolver="local",
            )
        return self._migrate(conn)

    def _keycheck_opens(self, check: object, form: object) -> bool:
        return (
            isinstance(check, bytes)
            and isinstance(form, bytes)
            and _unseal(self._cipher(), check[:NONCE_SIZE], check[NONCE_SIZE:], form) is not None
        )

    def _downgraded(self, why: str) -> StoreError:
        return self._tampered(
            None, f"it says format 1, but {why}: it was turned back from format 2"
        )

    def _migrate(self, conn: sqlite3.Connection) -> int:
        """Seal a format 1 store's metadata as it stands: it was never authenticated, so
        there is nothing older to check it against."""
        manifest = {}
        for (name,) in conn.execute("SELECT name FROM secrets").fetchall():
            rows = self._rows(conn, name) if isinstance(name, str) else None
            if rows is None:
                raise StoreError(
                    f"the embedded store '{_show(self.db_path)}' cannot be used: corrupted "
                    f"(secret name {_show(name)})"
                )
            manifest[name] = self._mac(b"secret", rows.record(name))
        self._write_manifest(conn, manifest)
        conn.execute("UPDATE meta SET v = ? WHERE k = 'keycheck'", (self._keycheck(FORMAT),))
        conn.execute("UPDATE meta SET v = ? WHERE k = 'format'", (FORMAT,))
        return len(manifest)

    def _keycheck(self, form: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher().encrypt(nonce, _KEYCHECK, form)

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
        tmp = self.key_file.with_name(f".{self.key_file.name}.{os.urandom(8).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, os.urandom(KEY_SIZE))
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
    return printable(text)


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


def _unseal(aead: AESGCM, nonce: object, sealed: object, aad: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext (or its nonce) is not authentic."""
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415

    if not isinstance(nonce, bytes) or not isinstance(sealed, bytes):
        return None
    try:
        return aead.decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError):  # ValueError: a nonce of the wrong size
        return None


def _by_name(rows: Iterator[tuple[Any, ...]]) -> dict[Any, list[tuple[Any, ...]]]:
    """Rows whose first column is a secret's name, grouped by it (the rest, in order)."""
    grouped: dict[Any, list[tuple[Any, ...]]] = {}
    for name, *rest in rows:
        grouped.setdefault(name, []).append(tuple(rest))
    return grouped


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
        fields = self._fields_of(reference)
        return select_field(
            reference,
            fields,
            resolver=self.name,
            where=f"the embedded store at '{self.store.home}'",
        )

    def resolve_fields(
        self, name: str, context: ResolveContext | None = None
    ) -> dict[str, SecretBytes]:
        return self._fields_of(Reference(name))

    def _fields_of(self, reference: Reference) -> dict[str, SecretBytes]:
        try:
            return self.store.get(reference.name)
        except SecretValidationError as error:
            raise ResolverError(
                f"cannot resolve secret '{reference}': {error.message}",
                reference=reference.name,
                key=reference.key,
                resolver=self.name,
            ) from None

    def answers_at_once(self, reference: Reference) -> bool:
        return True  # the store is in this process: threads would only wait on the GIL

    def check(self) -> None:
        self.store.check()

    def close(self) -> None:
        self.store.close()
