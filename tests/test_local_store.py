"""The embedded encrypted store (resolver ``local``)."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from mesos_secrets import (
    ResolverError,
    Secret,
    SecretNotFoundError,
    SecretResolver,
    SecretValidationError,
    StoreError,
    get_resolver,
)
from mesos_secrets.testing import ResolverContract, canary, leaks
from resolvers.local import LocalResolver, LocalStore


def cli(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``mesos-secrets ARGS`` in a process of its own, as users run it."""
    exe = shutil.which("mesos-secrets", path=str(Path(sys.executable).parent))
    assert exe, "mesos-secrets is not installed in the test environment"
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *parts: bytes) -> None:
    """Exit status 1, nothing on stdout, one line on stderr holding every part."""
    assert result.returncode == 1, result.stderr.decode(errors="replace")
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    assert result.stderr.count(b"\n") == 1, result.stderr.decode(errors="replace")
    for part in parts:
        assert part in result.stderr, (part, result.stderr.decode(errors="replace"))


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail, instead of hanging, when the block blocks for longer than ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "store")
    yield s
    s.close()


class TestLocalContract(ResolverContract):
    """The shared resolver contract."""

    @pytest.fixture
    def resolver(self, tmp_path: Path) -> Iterator[SecretResolver]:
        with LocalResolver(home=tmp_path / "store") as resolver:
            yield resolver

    def store(self, resolver: SecretResolver, name: str, fields: dict[str, bytes]) -> None:
        assert isinstance(resolver, LocalResolver)
        resolver.store.put(name, fields)


class TestPutGet:
    def test_round_trip(self, store: LocalStore) -> None:
        """What is put comes back, every field, binary-safe."""
        store.put("/app/db", {"user": "app", "password": b"\x00\xffpw"})
        fields = store.get("/app/db")
        assert {k: v.reveal() for k, v in fields.items()} == {
            "user": b"app",
            "password": b"\x00\xffpw",
        }

    def test_names_are_normalized(self, store: LocalStore) -> None:
        """`app/db` and `/app/db` are the same secret."""
        store.put("app/db", {"k": "v"})
        assert store.get("/app/db")["k"].reveal() == b"v"

    def test_versions(self, store: LocalStore) -> None:
        """Each put is a new version; older ones can still be read."""
        assert store.put("/s", {"k": "one"}) == 1
        assert store.put("/s", {"k": "two", "x": "y"}) == 2
        assert store.get("/s")["k"].reveal() == b"two"
        assert set(store.get("/s", version=1)) == {"k"}
        assert store.get("/s", version=1)["k"].reveal() == b"one"

    def test_old_versions_are_pruned(self, tmp_path: Path) -> None:
        """Only the newest max_versions are kept."""
        store = LocalStore(tmp_path, max_versions=2)
        for i in range(4):
            store.put("/s", {"k": str(i)})
        with pytest.raises(SecretNotFoundError, match=r"no version 1 .*\(kept: 3, 4\)"):
            store.get("/s", version=1)

    def test_missing(self, store: LocalStore) -> None:
        """A missing secret is SecretNotFoundError naming it and the store."""
        store.put("/present", {"k": "v"})
        with pytest.raises(SecretNotFoundError, match="'/absent' not found in the embedded store"):
            store.get("/absent")

    def test_reading_creates_nothing(self, tmp_path: Path) -> None:
        """Reading, listing or checking a store that does not exist leaves no files."""
        store = LocalStore(tmp_path / "none")
        with pytest.raises(SecretNotFoundError):
            store.get("/x")
        assert store.list() == []
        store.check()
        assert not (tmp_path / "none").exists()

    @pytest.mark.parametrize("name", ["", "/", "a//b", "a/../b", "./a", "has space", "a@b"])
    def test_bad_names(self, store: LocalStore, name: str) -> None:
        """Bad names are refused before anything is written."""
        with pytest.raises(SecretValidationError, match="secret name"):
            store.put(name, {"k": "v"})
        assert not store.db_path.exists()

    @pytest.mark.parametrize("key", ["", "a b", "a/b", "é"])
    def test_bad_keys(self, store: LocalStore, key: str) -> None:
        """Bad keys are refused."""
        with pytest.raises(SecretValidationError, match="secret key"):
            store.put("/s", {key: "v"})

    def test_no_fields(self, store: LocalStore) -> None:
        """A secret needs at least one field."""
        with pytest.raises(SecretValidationError, match="at least one"):
            store.put("/s", {})

    @given(
        st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), st.binary(), min_size=1
        )
    )
    @settings(max_examples=50)
    def test_property_round_trip(
        self, tmp_path_factory: pytest.TempPathFactory, fields: dict[str, bytes]
    ) -> None:
        """For any fields, get returns what put stored."""
        store = LocalStore(tmp_path_factory.mktemp("prop"))
        store.put("/p", fields)
        assert {k: v.reveal() for k, v in store.get("/p").items()} == fields
        store.close()


class TestListDelete:
    def test_list(self, store: LocalStore) -> None:
        """ls shows names, versions and keys, sorted; a prefix matches whole components."""
        store.put("/app/db", {"user": "u", "password": "p"})
        store.put("/app/db", {"user": "u", "password": "q"})
        store.put("/app2/x", {"k": "v"})
        store.put("/app", {"k": "v"})
        assert [(i.name, i.version, i.keys) for i in store.list()] == [
            ("/app", 1, ("k",)),
            ("/app/db", 2, ("password", "user")),
            ("/app2/x", 1, ("k",)),
        ]
        assert [i.name for i in store.list("/app")] == ["/app", "/app/db"]
        assert [i.name for i in store.list("app/db")] == ["/app/db"]

    def test_delete(self, store: LocalStore) -> None:
        """rm removes every version; a second rm is not-found."""
        store.put("/s", {"k": "1"})
        store.put("/s", {"k": "2"})
        store.delete("/s")
        with pytest.raises(SecretNotFoundError):
            store.get("/s", version=1)
        with pytest.raises(SecretNotFoundError):
            store.delete("/s")
        assert store.put("/s", {"k": "3"}) == 1

    def test_delete_overwrites_on_disk(self, store: LocalStore) -> None:
        """Deleted ciphertext is zeroed in the file (secure_delete), not left in free pages."""
        store.put("/s", {"k": "x" * 4000})
        conn = sqlite3.connect(store.db_path)
        (sealed,) = conn.execute("SELECT ciphertext FROM fields").fetchone()
        conn.close()
        store.delete("/s")
        store.close()
        data = store.db_path.read_bytes()
        wal = store.db_path.with_name("secrets.db-wal")
        if wal.exists():
            data += wal.read_bytes()
        assert sealed[100:200] not in data


class TestFiles:
    def test_permissions(self, store: LocalStore) -> None:
        """The directory is 0700, the key and the database 0600."""
        store.put("/s", {"k": "v"})
        assert stat.S_IMODE(store.home.stat().st_mode) == 0o700
        assert stat.S_IMODE(store.key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.db_path.stat().st_mode) == 0o600
        assert store.key_file.stat().st_size == 32

    def test_value_is_not_on_disk_in_clear(self, store: LocalStore) -> None:
        """The files hold ciphertext only."""
        value = canary()
        store.put("/s", {"k": value})
        store.close()
        for path in store.home.iterdir():
            assert not leaks(value, path.read_bytes()), path

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o700 | 0o060])
    def test_key_file_too_open(self, store: LocalStore, mode: int) -> None:
        """A key file the group or others can access is refused."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.chmod(mode)
        with pytest.raises(StoreError, match=rf"group or others \(mode {mode:04o}\).*chmod 600"):
            store.get("/s")

    def test_key_file_missing(self, store: LocalStore) -> None:
        """A store whose key is gone says so, and no new key is made."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.unlink()
        with pytest.raises(StoreError, match="key file .* is missing"):
            store.get("/s")
        with pytest.raises(StoreError, match="key file .* is missing"):
            store.put("/t", {"k": "v"})
        assert not store.key_file.exists()

    def test_wrong_key_file(self, store: LocalStore) -> None:
        """A key of the right size but the wrong store is named as such."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.write_bytes(os.urandom(32))
        with pytest.raises(StoreError, match="does not belong to the store"):
            store.get("/s")

    def test_truncated_key_file(self, store: LocalStore) -> None:
        """A key file of the wrong size is refused."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.write_bytes(b"short")
        with pytest.raises(StoreError, match="expected 32 bytes"):
            store.get("/s")

    def test_key_file_fifo(self, store: LocalStore) -> None:
        """A key file that is a named pipe is refused at once: reading it would wait for a
        writer forever."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.unlink()
        os.mkfifo(store.key_file, 0o600)
        with deadline(5), pytest.raises(StoreError, match="key file .* is not a regular file"):
            store.get("/s")

    def test_key_file_fifo_cli(self, store: LocalStore) -> None:
        """`secret get` with a named pipe for a key file: one line, exit 1, no hang."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.unlink()
        os.mkfifo(store.key_file, 0o600)
        result = cli("--home", str(store.home), "secret", "get", "/s", timeout=20)
        assert_one_line_error(result, b"is not a regular file (a named pipe)", b"key")

    def test_key_file_directory(self, store: LocalStore) -> None:
        """A directory where the key file should be is named as such."""
        store.put("/s", {"k": "v"})
        store.close()
        store.key_file.unlink()
        store.key_file.mkdir(mode=0o700)
        with pytest.raises(StoreError, match=r"key file .* is not a regular file \(a directory\)"):
            store.get("/s")

    def test_key_file_symlink(self, tmp_path: Path) -> None:
        """A key file may be a symbolic link (secret mounts are made of them); the checks
        apply to the file it leads to."""
        target = tmp_path / "mount" / "key"
        store = LocalStore(tmp_path / "store", key_file=tmp_path / "key")
        store.put("/s", {"k": "v"})
        store.close()
        target.parent.mkdir()
        (tmp_path / "key").rename(target)
        (tmp_path / "key").symlink_to(target)
        assert store.get("/s")["k"].reveal() == b"v"
        store.close()
        target.chmod(0o644)
        with pytest.raises(StoreError, match="group or others"):
            store.get("/s")

    def test_database_fifo(self, store: LocalStore) -> None:
        """A named pipe in place of the database is refused, not waited on."""
        store.put("/s", {"k": "v"})
        store.close()
        store.db_path.unlink()
        os.mkfifo(store.db_path, 0o600)
        with deadline(5), pytest.raises(StoreError, match="is not a regular file"):
            store.get("/s")

    def test_corrupted_database(self, store: LocalStore) -> None:
        """A database file that is not SQLite is a clear StoreError."""
        store.put("/s", {"k": "v"})
        store.close()
        for suffix in ("-wal", "-shm"):
            store.db_path.with_name("secrets.db" + suffix).unlink(missing_ok=True)
        store.db_path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match="corrupted or not a mesos-secrets store"):
            store.get("/s")

    def test_tampered_ciphertext(self, store: LocalStore) -> None:
        """A flipped bit fails the integrity check for that field, named."""
        store.put("/s", {"k": "v"})
        store.close()
        conn = sqlite3.connect(store.db_path)
        (sealed,) = conn.execute("SELECT ciphertext FROM fields").fetchone()
        conn.execute("UPDATE fields SET ciphertext = ?", (bytes([sealed[0] ^ 1]) + sealed[1:],))
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="'/s' key 'k' .* failed its integrity check"):
            store.get("/s")

    def _copy_sealed(
        self, store: LocalStore, source: tuple[str, str], target: tuple[str, str]
    ) -> None:
        store.close()
        conn = sqlite3.connect(store.db_path)
        nonce, sealed = conn.execute(
            "SELECT nonce, ciphertext FROM fields WHERE name = ? AND key = ?", source
        ).fetchone()
        conn.execute(
            "UPDATE fields SET nonce = ?, ciphertext = ? WHERE name = ? AND key = ?",
            (nonce, sealed, *target),
        )
        conn.commit()
        conn.close()

    @pytest.mark.parametrize("forged_metadata", [False, True])
    def test_ciphertext_cannot_move_to_another_name(
        self, store: LocalStore, forged_metadata: bool
    ) -> None:
        """A ciphertext copied under another secret's name is caught by the metadata
        check, and would not decrypt there even if the metadata were forged to match."""
        store.put("/victim", {"password": "real"})
        store.put("/attacker", {"password": "chosen"})
        self._copy_sealed(store, ("/attacker", "password"), ("/victim", "password"))
        if forged_metadata:
            reseal_metadata(store)
            match = "'/victim' key 'password' .* integrity check"
        else:
            match = integrity_failure(store, "/victim")
        with pytest.raises(StoreError, match=match):
            store.get("/victim")

    @pytest.mark.parametrize("forged_metadata", [False, True])
    def test_ciphertext_cannot_move_to_another_key(
        self, store: LocalStore, forged_metadata: bool
    ) -> None:
        """A ciphertext copied under another key of the same secret: the same."""
        store.put("/s", {"password": "real", "note": "chosen"})
        self._copy_sealed(store, ("/s", "note"), ("/s", "password"))
        if forged_metadata:
            reseal_metadata(store)
            match = "key 'password' .* integrity check"
        else:
            match = integrity_failure(store, "/s")
        with pytest.raises(StoreError, match=match):
            store.get("/s")


# --- tampering: an attacker who can write the database file, but has not the key ----

FORMAT_1 = b"mesos-secrets-store/1"
SCHEMA_1 = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE secrets (
    name TEXT PRIMARY KEY, current INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE versions (
    name TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
    version INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE fields (
    name TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL,
    nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES versions(name, version) ON DELETE CASCADE
);
"""


def keycheck_1(key: bytes) -> bytes:
    """The key check of a format 1 store."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, b"mesos-secrets keycheck", FORMAT_1)


def make_store_1(home: Path, contents: dict[str, list[dict[str, bytes]]]) -> None:
    """A store as format 1 wrote it: secret name -> its versions' fields, oldest first."""
    home.mkdir(mode=0o700, parents=True)
    key = os.urandom(32)
    fd = os.open(home / "key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key)
    os.close(fd)
    aead = AESGCM(key)
    conn = sqlite3.connect(home / "secrets.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_1)
    conn.execute(
        "INSERT INTO meta VALUES ('format', ?), ('keycheck', ?)", (FORMAT_1, keycheck_1(key))
    )
    for name, versions in contents.items():
        conn.execute("INSERT INTO secrets VALUES (?, ?, 1000.5, 2000.25)", (name, len(versions)))
        for number, fields in enumerate(versions, 1):
            conn.execute("INSERT INTO versions VALUES (?, ?, 1500.0)", (name, number))
            for field, value in fields.items():
                nonce = os.urandom(12)
                aad = b"\0".join((FORMAT_1, name.encode(), field.encode(), str(number).encode()))
                conn.execute(
                    "INSERT INTO fields VALUES (?, ?, ?, ?, ?)",
                    (name, number, field, nonce, aead.encrypt(nonce, value, aad)),
                )
    conn.commit()
    conn.close()


def tamper(db: Path, *statements: str) -> None:
    """Run SQL on the database as the sqlite3 shell would (no foreign keys enforced)."""
    conn = sqlite3.connect(db)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def reseal_metadata(store: LocalStore) -> None:
    """Make the store trust its rows as they are now: what an attacker who could forge the
    metadata would get (by turning the store back into format 1, with the key in hand)."""
    store.close()
    key = store.key_file.read_bytes()
    conn = sqlite3.connect(store.db_path)
    conn.execute("DELETE FROM meta WHERE k NOT IN ('format', 'keycheck')")
    conn.execute("UPDATE meta SET v = ? WHERE k = 'format'", (FORMAT_1,))
    conn.execute("UPDATE meta SET v = ? WHERE k = 'keycheck'", (keycheck_1(key),))
    conn.commit()
    conn.close()
    store.migrate()


OLD, NEW = canary(), canary()

#: Edits of /app/db's rows (two versions, password OLD then NEW), each to be caught.
TAMPERINGS = {
    "current rolled back": ["UPDATE secrets SET current = 1 WHERE name = '/app/db'"],
    "newest version removed, current rolled back": [
        "DELETE FROM fields WHERE name = '/app/db' AND version = 2",
        "DELETE FROM versions WHERE name = '/app/db' AND version = 2",
        "UPDATE secrets SET current = 1 WHERE name = '/app/db'",
    ],
    "field row removed": [
        "DELETE FROM fields WHERE name = '/app/db' AND version = 2 AND key = 'user'"
    ],
    "field row added": [
        "INSERT INTO fields SELECT name, 2, 'extra', nonce, ciphertext FROM fields "
        "WHERE name = '/app/db' AND version = 1 AND key = 'user'"
    ],
    "old version row removed": ["DELETE FROM versions WHERE name = '/app/db' AND version = 1"],
    "version row added": ["INSERT INTO versions VALUES ('/app/db', 7, 0)"],
    "field row moved to another secret": [
        "UPDATE fields SET name = '/other' WHERE name = '/app/db' AND key = 'user' AND version = 2"
    ],
    "field row moved in from another secret": [
        "UPDATE fields SET name = '/app/db', version = 2, key = 'k' "
        "WHERE name = '/other' AND version = 1"
    ],
    "metadata swapped with another secret": [
        "UPDATE secrets SET name = '/swap' WHERE name = '/app/db'",
        "UPDATE secrets SET name = '/app/db' WHERE name = '/other'",
        "UPDATE secrets SET name = '/other' WHERE name = '/swap'",
    ],
    "timestamps changed": ["UPDATE secrets SET updated = updated + 1 WHERE name = '/app/db'"],
    "nonce type changed": [
        "UPDATE fields SET nonce = hex(nonce) WHERE name = '/app/db' AND version = 2"
    ],
}


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[LocalStore]:
    """A store with /app/db at version 2 (password NEW; version 1 had OLD) and /other at
    version 3."""
    store = LocalStore(tmp_path / "store")
    store.put("/app/db", {"user": "app", "password": OLD})
    store.put("/app/db", {"user": "app", "password": NEW})
    for value in ("1", "2", "3"):
        store.put("/other", {"k": value})
    yield store
    store.close()


def integrity_failure(store: LocalStore, name: str | None = None) -> str:
    where = re.escape(f"the embedded store at '{store.home}' failed its integrity check")
    return rf"^secret '{re.escape(name)}' in {where}" if name else rf"^{where}"


class TestTampering:
    """The metadata around the sealed values (current version, versions kept, each
    version's fields) is authenticated too: editing it is reported, never answered."""

    @pytest.mark.parametrize("statements", TAMPERINGS.values(), ids=TAMPERINGS.keys())
    @pytest.mark.parametrize("reopen", [True, False], ids=["reopened", "kept-open"])
    def test_get_reports_it(self, victim: LocalStore, statements: list[str], reopen: bool) -> None:
        """Whether the store is opened afresh or was open (and had checked the store)
        before the edit, the edited secret is reported, naming it and the store."""
        victim.get("/app/db")
        if reopen:
            victim.close()
        tamper(victim.db_path, *statements)
        with pytest.raises(StoreError, match=integrity_failure(victim, "/app/db")) as raised:
            victim.get("/app/db", version=1)
        assert not leaks(OLD, str(raised.value))
        assert not leaks(NEW, str(raised.value))
        for operation in (lambda: victim.get("/app/db"), victim.list):
            with pytest.raises(StoreError, match="failed its integrity check"):
                operation()

    @pytest.mark.parametrize(
        "statements",
        [
            TAMPERINGS["current rolled back"],
            TAMPERINGS["newest version removed, current rolled back"],
        ],
        ids=["current", "newest version removed"],
    )
    def test_cli_never_prints_the_old_value(
        self, victim: LocalStore, statements: list[str]
    ) -> None:
        """`secret get` after a rollback: exit 1, one line naming secret and store, and
        neither value on any output."""
        victim.close()
        tamper(victim.db_path, *statements)
        for args in (["get", "/app/db@password"], ["ls"], ["put", "/app/db", "password=-"]):
            result = cli("--home", str(victim.home), "secret", *args, stdin=b"x")
            assert_one_line_error(
                result, b"'/app/db'", f"'{victim.home}'".encode(), b"integrity check"
            )
            assert not leaks(OLD, result.stdout, result.stderr)
            assert not leaks(NEW, result.stdout, result.stderr)

    def test_secret_removed(self, victim: LocalStore) -> None:
        """A secret whose rows are all deleted is reported, not 'not found'."""
        victim.close()
        tamper(
            victim.db_path,
            "DELETE FROM secrets WHERE name = '/app/db'",
            "DELETE FROM versions WHERE name = '/app/db'",
            "DELETE FROM fields WHERE name = '/app/db'",
        )
        with pytest.raises(StoreError, match=integrity_failure(victim, "/app/db")):
            victim.get("/app/db")
        with pytest.raises(StoreError, match=integrity_failure(victim, "/app/db")):
            victim.list()
        assert victim.get("/other")["k"].reveal() == b"3"
        result = cli("--home", str(victim.home), "secret", "get", "/app/db")
        assert_one_line_error(result, b"'/app/db'", b"removed")

    def test_secret_added(self, victim: LocalStore) -> None:
        """Rows for a secret the store never wrote are reported."""
        tamper(
            victim.db_path,
            "INSERT INTO secrets SELECT '/rogue', current, created, updated FROM secrets "
            "WHERE name = '/other'",
            "INSERT INTO versions SELECT '/rogue', version, created FROM versions "
            "WHERE name = '/other'",
        )
        with pytest.raises(StoreError, match=integrity_failure(victim, "/rogue")):
            victim.get("/rogue")
        with pytest.raises(StoreError, match=integrity_failure(victim, "/rogue")):
            victim.list()

    @pytest.mark.parametrize(
        "statements",
        [
            ["DELETE FROM meta WHERE k = 'manifest'"],
            ["UPDATE meta SET v = v || 'x' WHERE k = 'manifest'"],
            ["DELETE FROM meta WHERE k = 'manifest_mac'"],
        ],
        ids=["removed", "altered", "mac removed"],
    )
    def test_manifest(self, victim: LocalStore, statements: list[str]) -> None:
        """The store's list of secrets, removed or edited: nothing is answered, and a put
        does not re-seal it."""
        victim.close()
        tamper(victim.db_path, *statements)
        for operation in (
            lambda: victim.get("/other"),
            victim.list,
            lambda: victim.put("/new", {"k": "v"}),
        ):
            with pytest.raises(StoreError, match=integrity_failure(victim)):
                operation()

    @pytest.mark.parametrize("drop_manifest", [False, True])
    def test_downgrade_to_format_1(self, victim: LocalStore, drop_manifest: bool) -> None:
        """Turning only the format row back to 1 (so that the store would be migrated,
        trusting rolled-back rows) is tampering: its key check opens as format 2's only.
        Refused by migrate too. (With format 1's key check replayed: TestDowngrade.)"""
        victim.close()
        tamper(
            victim.db_path,
            "UPDATE secrets SET current = 1 WHERE name = '/app/db'",
            f"UPDATE meta SET v = X'{FORMAT_1.hex()}' WHERE k = 'format'",
            *(["DELETE FROM meta WHERE k LIKE 'manifest%'"] if drop_manifest else []),
        )
        for operation in (lambda: victim.get("/app/db"), victim.migrate):
            with pytest.raises(StoreError, match=downgraded(victim.home) + ".*key check"):
                operation()
        assert meta_of(victim.db_path)["format"] == FORMAT_1

    def test_ciphertext_of_a_removed_secret(self, store: LocalStore) -> None:
        """`rm` then `put` of the same name starts again at version 1, the same name, key
        and version the removed secret's ciphertexts were sealed for: putting one back in
        place of the new one is caught."""
        store.put("/s", {"k": OLD})
        conn = sqlite3.connect(store.db_path)
        old = conn.execute("SELECT nonce, ciphertext FROM fields WHERE name = '/s'").fetchone()
        conn.close()
        store.delete("/s")
        store.put("/s", {"k": NEW})
        store.close()
        conn = sqlite3.connect(store.db_path)
        conn.execute("UPDATE fields SET nonce = ?, ciphertext = ? WHERE name = '/s'", old)
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match=integrity_failure(store, "/s")):
            store.get("/s")

    def test_ciphertext_type_changed(self, victim: LocalStore) -> None:
        """A ciphertext turned into text fails its integrity check like a damaged one."""
        tamper(
            victim.db_path,
            "UPDATE fields SET ciphertext = hex(ciphertext) WHERE name = '/app/db' "
            "AND version = 2 AND key = 'password'",
        )
        with pytest.raises(StoreError, match="'/app/db' key 'password' .* integrity check"):
            victim.get("/app/db")

    def test_put_does_not_seal_tampering(self, victim: LocalStore) -> None:
        """A put on a tampered secret is refused, so it cannot bless the edit."""
        tamper(victim.db_path, "UPDATE secrets SET current = 1 WHERE name = '/app/db'")
        with pytest.raises(StoreError, match=integrity_failure(victim, "/app/db")):
            victim.put("/app/db", {"password": "third"})
        with pytest.raises(StoreError, match=integrity_failure(victim, "/app/db")):
            victim.get("/app/db")

    def test_rm_discards_a_tampered_secret(self, victim: LocalStore) -> None:
        """rm is how a tampered (or removed) secret is discarded; the rest is untouched."""
        tamper(
            victim.db_path,
            "UPDATE secrets SET current = 1 WHERE name = '/app/db'",
            "INSERT INTO secrets VALUES ('/rogue', 1, 0, 0)",
        )
        victim.delete("/app/db")
        victim.delete("/rogue")
        with pytest.raises(SecretNotFoundError):
            victim.get("/app/db")
        assert [i.name for i in victim.list()] == ["/other"]
        assert victim.put("/app/db", {"password": "fresh"}) == 1
        victim.close()
        assert victim.get("/app/db")["password"].reveal() == b"fresh"

    def test_other_secrets_unaffected(self, victim: LocalStore) -> None:
        """A tampered secret does not stop others from being read, or a prefix listed."""
        tamper(victim.db_path, "UPDATE secrets SET current = 1 WHERE name = '/app/db'")
        assert victim.get("/other")["k"].reveal() == b"3"
        assert [i.name for i in victim.list("/other")] == ["/other"]
        victim.put("/new", {"k": "v"})
        assert victim.get("/new")["k"].reveal() == b"v"


def migrated(home: Path) -> LocalStore:
    """The store at ``home``, migrated to format 2 as its owner does, once."""
    store = LocalStore(home)
    store.migrate()
    return store


def meta_of(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT k, v FROM meta").fetchall())
    finally:
        conn.close()


def downgrade(db: Path, keycheck: bytes, *edits: str, keep_manifest: bool = False) -> None:
    """What an attacker without the key does to have ``edits`` trusted: mark the store as
    format 1 again, put back a format 1 key check (a fixed value, in any old copy of the
    database) and, unless ``keep_manifest``, remove what format 2 added to ``meta``."""
    tamper(
        db,
        *edits,
        f"UPDATE meta SET v = X'{FORMAT_1.hex()}' WHERE k = 'format'",
        f"UPDATE meta SET v = X'{keycheck.hex()}' WHERE k = 'keycheck'",
        *([] if keep_manifest else ["DELETE FROM meta WHERE k NOT IN ('format', 'keycheck')"]),
    )


ROLLBACK = "UPDATE secrets SET current = 1 WHERE name = '/app/db'"


class TestDowngrade:
    """A store turned back into format 1 with its old key check replayed, to have edited
    rows sealed as trusted: never migrated unless its owner asks, never answered."""

    @pytest.fixture
    def upgraded(self, tmp_path: Path) -> tuple[Path, bytes]:
        """A store written in format 1 (/app/db: password OLD), migrated, then given a
        new version (password NEW); and the key check its format 1 copy held."""
        home = tmp_path / "store"
        make_store_1(home, {"/app/db": [{"password": OLD.encode()}]})
        old_keycheck = meta_of(home / "secrets.db")["keycheck"]
        store = migrated(home)
        store.put("/app/db", {"password": NEW})
        store.close()
        return home, old_keycheck

    def test_replayed_keycheck_is_not_migrated(self, upgraded: tuple[Path, bytes]) -> None:
        """The old key check replayed and the current version rolled back: the store is
        refused as format 1, nothing is answered, and nothing is sealed."""
        home, old_keycheck = upgraded
        downgrade(home / "secrets.db", old_keycheck, ROLLBACK)
        before = meta_of(home / "secrets.db")
        store = LocalStore(home)
        for operation in (
            lambda: store.get("/app/db"),
            lambda: store.get("/app/db", version=1),
            store.list,
            lambda: store.put("/app/db", {"password": "third"}),
            lambda: store.delete("/app/db"),
            store.check,
        ):
            with pytest.raises(StoreError, match=format_1_refused(home)) as raised:
                operation()
            assert not leaks(OLD, str(raised.value))
            assert not leaks(NEW, str(raised.value))
        store.close()
        assert meta_of(home / "secrets.db") == before

    def test_replayed_keycheck_cli(self, upgraded: tuple[Path, bytes]) -> None:
        """From the command line: one line, exit 1, no value on any output."""
        home, old_keycheck = upgraded
        downgrade(home / "secrets.db", old_keycheck, ROLLBACK)
        for args in (["get", "/app/db@password"], ["ls"], ["put", "/app/db", "password=-"]):
            result = cli("--home", str(home), "secret", *args, stdin=b"x")
            assert_one_line_error(result, f"'{home}'".encode(), b"format 1", b"secret migrate")
            assert not leaks(OLD, result.stdout, result.stderr)
            assert not leaks(NEW, result.stdout, result.stderr)

    def test_keycheck_of_format_1_from_any_copy(self, victim: LocalStore) -> None:
        """A store that never was format 1: a format 1 key check under its key (as a copy
        of the key check of another store sharing the key file would be) is no better."""
        victim.close()
        key = victim.key_file.read_bytes()
        downgrade(victim.db_path, keycheck_1(key), ROLLBACK)
        with pytest.raises(StoreError, match=format_1_refused(victim.home)):
            victim.get("/app/db")

    @pytest.mark.parametrize("edit", [[ROLLBACK], []], ids=["rolled back", "as is"])
    def test_downgrade_keeping_format_2_rows(
        self, upgraded: tuple[Path, bytes], edit: list[str]
    ) -> None:
        """A format 1 store holding format 2's manifest was turned back: refused as
        tampering, by every operation and by migrate, and left as it is."""
        home, old_keycheck = upgraded
        downgrade(home / "secrets.db", old_keycheck, *edit, keep_manifest=True)
        before = meta_of(home / "secrets.db")
        store = LocalStore(home)
        for operation in (lambda: store.get("/app/db"), store.list, store.migrate):
            with pytest.raises(StoreError, match=downgraded(home)):
                operation()
        store.close()
        assert meta_of(home / "secrets.db") == before
        result = cli("--home", str(home), "secret", "migrate")
        assert_one_line_error(result, f"'{home}'".encode(), b"integrity check", b"format 1")

    def test_migrate_trusts_what_it_finds(self, upgraded: tuple[Path, bytes]) -> None:
        """The limit, as documented: a downgrade that removed every trace of format 2 is
        told from a store written by an earlier version only by its owner, who knows it
        was migrated already. Running migrate anyway trusts the rows as they are."""
        home, old_keycheck = upgraded
        downgrade(home / "secrets.db", old_keycheck, ROLLBACK)
        store = migrated(home)
        assert store.get("/app/db")["password"].reveal() == OLD.encode()
        store.close()


def format_1_refused(home: Path) -> str:
    return re.escape(f"the embedded store at '{home}' is of format 1") + r".*secret migrate"


def downgraded(home: Path) -> str:
    return integrity_failure(LocalStore(home)) + r".*format 1"


class TestMigration:
    """Format 1 stores (unauthenticated metadata) are refused until their owner migrates
    them, once, with `secret migrate`."""

    CONTENTS: ClassVar[dict[str, list[dict[str, bytes]]]] = {
        "/app/db": [{"user": b"app", "password": b"one"}, {"user": b"app", "password": b"two"}],
        "/other": [{"k": b"v"}],
    }

    def test_refused_until_migrated(self, tmp_path: Path) -> None:
        """A format 1 store is refused by every operation, and left as it is."""
        home = tmp_path / "store"
        make_store_1(home, self.CONTENTS)
        store = LocalStore(home)
        for operation in (
            lambda: store.get("/app/db"),
            store.list,
            lambda: store.put("/new", {"k": "v"}),
            lambda: store.delete("/other"),
            store.check,
        ):
            with pytest.raises(StoreError, match=format_1_refused(home)):
                operation()
        store.close()
        assert meta_of(home / "secrets.db")["format"] == FORMAT_1
        with pytest.raises(ResolverError, match=format_1_refused(home)):
            LocalResolver(home=home).resolve(Secret.for_reference("/other"))

    def test_migrate_reads_and_seals(self, tmp_path: Path) -> None:
        """Once migrated, the store reads as before and its metadata is authenticated."""
        home = tmp_path / "store"
        make_store_1(home, self.CONTENTS)
        store = LocalStore(home)
        assert store.migrate() == 2
        assert store.get("/app/db")["password"].reveal() == b"two"
        assert store.get("/app/db", version=1)["password"].reveal() == b"one"
        assert [(i.name, i.version, i.keys) for i in store.list()] == [
            ("/app/db", 2, ("password", "user")),
            ("/other", 1, ("k",)),
        ]
        assert store.list()[0].created == 1000.5
        store.close()
        assert meta_of(home / "secrets.db")["format"] == b"mesos-secrets-store/2"
        tamper(home / "secrets.db", "UPDATE secrets SET current = 1 WHERE name = '/app/db'")
        with pytest.raises(StoreError, match=integrity_failure(store, "/app/db")):
            store.get("/app/db")

    def test_migrate_is_idempotent(self, tmp_path: Path) -> None:
        """migrate on a format 2 store does nothing, whether just migrated, open or new."""
        home = tmp_path / "store"
        make_store_1(home, self.CONTENTS)
        assert LocalStore(home).migrate() == 2
        store = LocalStore(home)
        assert store.migrate() is None
        store.put("/app/db", {"password": "three"})
        assert store.get("/app/db")["password"].reveal() == b"three"
        assert store.migrate() is None  # while open
        assert store.get("/app/db")["password"].reveal() == b"three"
        store.close()
        fresh = LocalStore(tmp_path / "fresh")
        fresh.put("/s", {"k": "v"})
        assert fresh.migrate() is None
        fresh.close()

    def test_cli(self, tmp_path: Path) -> None:
        """From the command line: refused with the command to run, then migrated once."""
        home = tmp_path / "store"
        make_store_1(home, self.CONTENTS)
        for args in (["get", "/other"], ["put", "/app/db", "password=-"], ["ls"], ["rm", "/x"]):
            result = cli("--home", str(home), "secret", *args, stdin=b"3")
            assert_one_line_error(result, f"'{home}'".encode(), b"format 1", b"secret migrate")
        for args in (
            ["--home", str(home), "secret", "migrate"],
            ["secret", "migrate", "--home", str(home)],
        ):
            result = cli(*args)
            assert result.returncode == 0, result.stderr
            assert result.stdout == b""
            assert result.stderr.decode() in (
                f"migrated the embedded store at '{home}' to format 2 (2 secrets)\n",
                f"the embedded store at '{home}' is already of format 2\n",
            )
        assert b"already" in result.stderr
        result = cli("--home", str(home), "secret", "put", "/app/db", "password=-", stdin=b"3")
        assert result.returncode == 0, result.stderr
        result = cli("--home", str(home), "secret", "get", "/app/db@password")
        assert (result.returncode, result.stdout) == (0, b"3")
        tamper(home / "secrets.db", "DELETE FROM versions WHERE name = '/app/db' AND version = 1")
        assert_one_line_error(
            cli("--home", str(home), "secret", "get", "/app/db@password"), b"integrity check"
        )

    def test_cli_no_store(self, tmp_path: Path) -> None:
        """migrate where there is no store: one line, and nothing is created."""
        home = tmp_path / "none"
        assert_one_line_error(
            cli("--home", str(home), "secret", "migrate"),
            b"no embedded store",
            f"'{home}'".encode(),
        )
        assert not home.exists()

    def test_wrong_key_is_not_migrated(self, tmp_path: Path) -> None:
        """A format 1 store opened with the wrong key is refused and left as it was: its
        metadata is never sealed under a key that is not its own."""
        home = tmp_path / "store"
        make_store_1(home, self.CONTENTS)
        (home / "key").write_bytes(os.urandom(32))
        for operation in (lambda: LocalStore(home).get("/other"), LocalStore(home).migrate):
            with pytest.raises(StoreError, match="does not belong to the store"):
                operation()
        assert meta_of(home / "secrets.db")["format"] == FORMAT_1

    def test_empty(self, tmp_path: Path) -> None:
        home = tmp_path / "store"
        make_store_1(home, {})
        store = LocalStore(home)
        assert store.migrate() == 0
        assert store.list() == []
        store.put("/s", {"k": "v"})
        assert store.get("/s")["k"].reveal() == b"v"
        store.close()

    def test_unknown_format(self, store: LocalStore) -> None:
        """A store of a newer format is refused, not rewritten."""
        store.put("/s", {"k": "v"})
        store.close()
        tamper(store.db_path, "UPDATE meta SET v = 'mesos-secrets-store/3' WHERE k = 'format'")
        with pytest.raises(StoreError, match="not a mesos-secrets store of a format"):
            store.get("/s")


class TestUnusableHome:
    """A store directory that cannot be one: a one-line StoreError naming the path."""

    @pytest.fixture(params=["under a file", "a file"])
    def home(self, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
        """(the store directory, the file in its way)"""
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        return (blocker / "x" if request.param == "under a file" else blocker), blocker

    @pytest.mark.parametrize(
        "operation",
        [
            lambda s: s.put("/s", {"k": "v"}),
            lambda s: s.get("/s"),
            lambda s: s.list(),
            lambda s: s.delete("/s"),
            lambda s: s.check(),
        ],
        ids=["put", "get", "list", "delete", "check"],
    )
    def test_library(self, home: tuple[Path, Path], operation: Any) -> None:
        path, blocker = home
        store = LocalStore(path)
        with pytest.raises(StoreError) as raised:
            operation(store)
        assert str(raised.value) == (
            f"the embedded store at '{path}' cannot be used: '{blocker}' is not a directory"
        )

    @pytest.mark.parametrize(
        "args",
        [["put", "/s", "k=-"], ["get", "/s"], ["ls"], ["rm", "/s"]],
        ids=["put", "get", "ls", "rm"],
    )
    def test_cli(self, home: tuple[Path, Path], args: list[str]) -> None:
        path, blocker = home
        result = cli("--home", str(path), "secret", *args, stdin=b"v")
        assert_one_line_error(result, f"'{blocker}' is not a directory".encode())

    def test_key_file_under_a_file(self, tmp_path: Path) -> None:
        """The same for a key file that cannot be created."""
        (tmp_path / "file").write_text("")
        store = LocalStore(tmp_path / "store", key_file=tmp_path / "file" / "key")
        with pytest.raises(StoreError, match=f"'{tmp_path / 'file'}' is not a directory"):
            store.put("/s", {"k": "v"})

    def test_control_characters_are_escaped(self, tmp_path: Path) -> None:
        """A path printed in an error shows control characters escaped, never raw."""
        blocker = tmp_path / "evil\n\x1b[31mfile"
        blocker.write_text("")
        result = cli("--home", str(blocker / "x"), "secret", "ls")
        assert_one_line_error(result, b"evil\\n\\x1b[31mfile")
        assert b"\x1b" not in result.stderr

    @pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
    )
    def test_unreadable(self, tmp_path: Path) -> None:
        """A store directory this process may not enter: named, with the reason. (As root
        without the capabilities that bypass file permissions.)"""
        home = tmp_path / "store"
        LocalStore(home).put("/s", {"k": "v"})
        home.chmod(0)
        exe = shutil.which("mesos-secrets", path=str(Path(sys.executable).parent))
        assert exe
        for args in (["get", "/s"], ["ls"], ["put", "/t", "k=@/dev/null"]):
            result = subprocess.run(
                [
                    "setpriv",
                    "--bounding-set=-dac_override,-dac_read_search",
                    exe,
                    *("--home", str(home), "secret", *args),
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert_one_line_error(
                result, f"embedded store at '{home}' cannot be used: Permission denied".encode()
            )


def _put_many(home: str, writer: int, count: int) -> None:
    store = LocalStore(home)
    for i in range(count):
        store.put(f"/w{writer}/s{i}", {"v": f"{writer}-{i}"})
        store.put("/shared", {"v": f"{writer}-{i}"})
    store.close()


def _put_one(home: str, name: str, fields: dict[str, bytes]) -> int:
    store = LocalStore(home)
    try:
        return store.put(name, fields)
    finally:
        store.close()


def _get_one(home: str, name: str) -> dict[str, bytes]:
    store = LocalStore(home)
    try:
        return {k: v.reveal() for k, v in store.get(name).items()}
    finally:
        store.close()


def _delete_one(home: str, name: str) -> None:
    store = LocalStore(home)
    try:
        store.delete(name)
    finally:
        store.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """Two worker processes, spawned (not forked) so they share nothing with the tests."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as executor:
        yield executor


class TestAcrossProcesses:
    def test_concurrent_writers_lose_nothing(
        self, tmp_path: Path, pool: ProcessPoolExecutor
    ) -> None:
        """Two processes writing at once, from a fresh directory: every write is there."""
        home = str(tmp_path / "store")
        count = 25
        futures = [pool.submit(_put_many, home, w, count) for w in range(2)]
        for future in futures:
            future.result()
        store = LocalStore(home, max_versions=1000)
        names = {i.name for i in store.list()}
        assert names == {f"/w{w}/s{i}" for w in range(2) for i in range(count)} | {"/shared"}
        assert store.list("/shared")[0].version == 2 * count
        for w in range(2):
            for i in range(count):
                assert store.get(f"/w{w}/s{i}")["v"].reveal() == f"{w}-{i}".encode()

    @given(
        name=st.from_regex(r"/[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True),
        fields=st.dictionaries(
            st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.binary(), min_size=1, max_size=3
        ),
    )
    @settings(max_examples=15)
    def test_property_other_process_reads_back(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        pool: ProcessPoolExecutor,
        name: str,
        fields: dict[str, bytes],
    ) -> None:
        """For any secret put by another process, this process reads back the same."""
        home = str(tmp_path_factory.mktemp("xproc"))
        assert pool.submit(_put_one, home, name, fields).result() == 1
        store = LocalStore(home)
        assert {k: v.reveal() for k, v in store.get(name).items()} == fields
        store.close()

    def test_others_writes_are_not_tampering(
        self, tmp_path: Path, pool: ProcessPoolExecutor
    ) -> None:
        """A store kept open here sees what other processes put and remove, with no false
        alarm; they see what this one puts."""
        home = str(tmp_path / "store")
        store = LocalStore(home)
        store.put("/s", {"k": "1"})
        assert store.get("/s")["k"].reveal() == b"1"
        assert pool.submit(_put_one, home, "/s", {"k": b"2"}).result() == 2
        assert pool.submit(_put_one, home, "/t", {"k": b"t"}).result() == 1
        assert store.get("/s")["k"].reveal() == b"2"
        assert [(i.name, i.version) for i in store.list()] == [("/s", 2), ("/t", 1)]
        assert store.put("/s", {"k": "3"}) == 3
        assert pool.submit(_get_one, home, "/s").result() == {"k": b"3"}
        pool.submit(_delete_one, home, "/s").result()
        with pytest.raises(SecretNotFoundError):
            store.get("/s")
        assert [i.name for i in store.list()] == ["/t"]
        store.close()

    def test_fresh_store_opened_at_once(self, tmp_path: Path) -> None:
        """Processes released at the same instant on a fresh directory all get their put
        in. (SQLite refuses, without waiting, a second process that switches a new,
        empty database to WAL at the same time: the store must never be seen empty.)"""
        for round_ in range(20):
            home = tmp_path / f"store{round_}"
            go_read, go_write = os.pipe()
            children = []
            for writer in range(3):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - child
                    code = 1
                    try:
                        os.close(go_write)
                        os.read(go_read, 1)
                        LocalStore(home).put(f"/w{writer}", {"k": "v"})
                        code = 0
                    except BaseException as error:
                        os.write(2, f"writer {writer}: {error}\n".encode())
                    os._exit(code)
                children.append(pid)
            os.close(go_read)
            os.write(go_write, b"go!")
            os.close(go_write)
            codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
            assert codes == [0, 0, 0], f"round {round_}"
            store = LocalStore(home)
            assert [i.name for i in store.list()] == ["/w0", "/w1", "/w2"]
            store.close()

    def test_fork_reopens(self, store: LocalStore) -> None:
        """A store used before fork() works in the child (it opens its own connection)."""
        store.put("/s", {"k": "parent"})
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                ok = store.get("/s")["k"].reveal() == b"parent"
                store.put("/s", {"k": "child"})
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("/s")["k"].reveal() == b"child"


class TestResolver:
    def test_default_resolver_is_local(self, home: Path) -> None:
        """With nothing configured, get_resolver() is the embedded store in MESOS_SECRETS_HOME."""
        with get_resolver() as resolver:
            assert isinstance(resolver, LocalResolver)
            assert resolver.store.home == home

    def test_default_home(self, tmp_path: Path) -> None:
        """Without MESOS_SECRETS_HOME the store is under ~/.local/share."""
        with get_resolver() as resolver:
            assert isinstance(resolver, LocalResolver)
            assert resolver.store.home == tmp_path / "home" / ".local" / "share" / "mesos-secrets"

    def test_invalid_reference_name(self, home: Path) -> None:
        """A reference whose name the store cannot hold is a ResolverError naming it."""
        with (
            get_resolver() as resolver,
            pytest.raises(Exception, match="cannot resolve secret 'bad name'"),
        ):
            resolver.resolve(Secret.for_reference("bad name"))

    def test_options(self, tmp_path: Path) -> None:
        """Options arrive as text from a modules manifest and are converted."""
        with get_resolver("local", home=str(tmp_path), max_versions="3") as resolver:
            assert isinstance(resolver, LocalResolver)
            assert resolver.store.max_versions == 3
            assert resolver.store.home == tmp_path

    def test_separate_key_file(self, tmp_path: Path) -> None:
        """The key may live apart from the database."""
        with get_resolver("local", home=tmp_path / "db", key_file=tmp_path / "k" / "key") as r:
            assert isinstance(r, LocalResolver)
            r.store.put("/s", {"k": "v"})
            assert r.resolve(Secret.for_reference("/s")).reveal() == b"v"
        assert (tmp_path / "k" / "key").exists()
        assert not (tmp_path / "db" / "key").exists()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs of the test's own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "small"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no room left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def test_a_full_disk_is_named_not_called_corruption(small_fs: Path) -> None:
    """SQLite calls a journal it cannot write a "disk I/O error": the error says the
    file system is full (not that the store is corrupt), for writes and for reads, and
    the store works again once there is room."""
    store = LocalStore(small_fs / "home")
    store.put("/a", {"v": "1"})
    store.close()
    fill(small_fs / "filler")
    with pytest.raises(StoreError, match="the file system it is on is full") as raised:
        store.put("/b", {"v": os.urandom(100_000)})
    assert "corrupt" not in str(raised.value)
    with pytest.raises(StoreError, match="the file system it is on is full"):
        LocalStore(small_fs / "home").get("/a")
    store.close()
    (small_fs / "filler").unlink()
    assert LocalStore(small_fs / "home").get("/a")["v"].reveal() == b"1"
