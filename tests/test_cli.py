"""The `mesos-secrets` command, run as users run it: a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesos_secrets.testing import canary, leaks

from .plugins import EXPLODING, install_resolver

BIN = Path(sys.executable).parent


def cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("mesos-secrets", path=str(BIN))
    assert exe, "mesos-secrets is not installed in the test environment"
    return subprocess.run(
        [exe, *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def ok(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    result = cli(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.mark.usefixtures("home")
class TestSecretCommands:
    def test_put_stdin_and_get(self) -> None:
        """KEY=- reads the exact bytes of stdin; get prints them back exactly."""
        ok("secret", "put", "/app/db", "password=-", stdin=b"s3cret\n\x00x")
        assert ok("secret", "get", "/app/db").stdout == b"s3cret\n\x00x"

    def test_put_file(self, tmp_path: Path) -> None:
        """KEY=@FILE reads a file."""
        (tmp_path / "cert").write_bytes(b"-----BEGIN-----")
        ok("secret", "put", "/tls", f"crt=@{tmp_path / 'cert'}")
        assert ok("secret", "get", "/tls").stdout == b"-----BEGIN-----"

    def test_put_literal_warns(self) -> None:
        """KEY=VALUE works, with a warning that names the key, not the value."""
        result = ok("secret", "put", "/a", "token=literal-value")
        assert b"command line" in result.stderr
        assert b"literal-value" not in result.stderr
        assert ok("secret", "get", "/a").stdout == b"literal-value"

    def test_get_with_key(self) -> None:
        """--key and NAME@KEY pick a field; without a key several fields is an error."""
        ok("secret", "put", "/db", "user=-", "password=@/dev/null", stdin=b"app")
        assert ok("secret", "get", "/db", "--key", "user").stdout == b"app"
        assert ok("secret", "get", "/db@user").stdout == b"app"
        result = cli("secret", "get", "/db")
        assert result.returncode == 1
        assert b"has 2 keys (password, user)" in result.stderr

    def test_versions(self) -> None:
        """put makes versions; get --version reads an old one."""
        ok("secret", "put", "/v", "k=-", stdin=b"one")
        result = ok("secret", "put", "/v", "k=-", stdin=b"two")
        assert b"version 2" in result.stderr
        assert ok("secret", "get", "/v", "--version", "1").stdout == b"one"

    def test_ls(self) -> None:
        """ls shows names and keys, never values; --json is machine-readable."""
        value = canary()
        ok("secret", "put", "/app/db", "password=-", stdin=value.encode())
        ok("secret", "put", "/other", "k=-", stdin=value.encode())
        text = ok("secret", "ls").stdout.decode()
        assert "/app/db" in text
        assert "password" in text
        assert not leaks(value, text)
        listed = json.loads(ok("secret", "ls", "--json", "/app").stdout)
        assert [(s["name"], s["version"], s["keys"]) for s in listed] == [
            ("/app/db", 1, ["password"])
        ]

    def test_ls_empty(self) -> None:
        assert b"no secrets" in ok("secret", "ls").stderr

    def test_rm(self) -> None:
        """rm removes; removing again is an error."""
        ok("secret", "put", "/gone", "k=-", stdin=b"x")
        ok("secret", "rm", "/gone")
        result = cli("secret", "rm", "/gone")
        assert result.returncode == 1
        assert b"'/gone' not found" in result.stderr

    def test_home_option(self, tmp_path: Path) -> None:
        """--home points at another store."""
        other = tmp_path / "other"
        ok("--home", str(other), "secret", "put", "/x", "k=-", stdin=b"v")
        assert (other / "secrets.db").exists()
        assert cli("secret", "get", "/x").returncode == 1


@pytest.mark.usefixtures("home")
class TestErrors:
    @pytest.mark.parametrize(
        ("args", "status", "message"),
        [
            (["secret", "put", "/x", "novalue"], 2, b"expected KEY=VALUE"),
            (
                ["secret", "put", "/x", "a=-", "b=-"],
                2,
                b"only one field can be read from standard input",
            ),
            (["secret", "put", "/x", "a=1", "a=2"], 2, b"key 'a' is given twice"),
            (["secret", "put", "/x", "k=@/does/not/exist"], 1, b"No such file or directory"),
            (["secret", "put", "bad name", "k=v"], 1, b"secret name 'bad name'"),
            (["secret", "put", "/x", "bad key=v"], 1, b"secret key 'bad key'"),
            (["secret", "get", "/missing"], 1, b"'/missing' not found"),
            (["secret"], 2, b"required: ACTION"),
            (["bogus"], 2, b"invalid choice"),
        ],
    )
    def test_clear_errors(self, args: list[str], status: int, message: bytes) -> None:
        """Bad input: a one-line error, the right exit status, no traceback."""
        result = cli(*args)
        assert result.returncode == status
        assert message in result.stderr
        assert b"Traceback" not in result.stderr

    def test_corrupted_store(self, home: Path) -> None:
        """A damaged store is reported, not a traceback."""
        ok("secret", "put", "/x", "k=-", stdin=b"v")
        for name in ("secrets.db-wal", "secrets.db-shm"):
            (home / name).unlink(missing_ok=True)
        (home / "secrets.db").write_bytes(b"garbage" * 1000)
        result = cli("secret", "get", "/x")
        assert result.returncode == 1
        assert b"corrupted or not a mesos-secrets store" in result.stderr
        assert b"Traceback" not in result.stderr

    def test_open_key_file(self, home: Path) -> None:
        ok("secret", "put", "/x", "k=-", stdin=b"v")
        (home / "key").chmod(0o644)
        result = cli("secret", "ls")
        assert result.returncode == 1
        assert b"chmod 600" in result.stderr

    def test_values_never_in_errors(self, home: Path) -> None:
        """A failed get of a multi-field secret shows key names only."""
        value = canary()
        ok("secret", "put", "/x", "a=-", "b=@/dev/null", stdin=value.encode())
        result = cli("-vv", "secret", "get", "/x")
        assert result.returncode == 1
        assert not leaks(value, result.stderr, result.stdout)


@pytest.mark.usefixtures("home")
class TestOtherCommands:
    def test_check(self) -> None:
        """check reports the configured resolver ready."""
        assert b"resolver 'local' is ready" in ok("check").stderr

    def test_check_bad_config(self, tmp_path: Path) -> None:
        """A bad configuration makes check fail with the file named."""
        config = tmp_path / "c.toml"
        config.write_text('resolver = "nope"\n')
        result = cli("--config", str(config), "check")
        assert result.returncode == 1
        assert b"unknown resolver 'nope'" in result.stderr

    def test_resolvers(self) -> None:
        assert ok("resolvers").stdout.split() == [b"agent", b"local", b"value", b"vault"]

    def test_version(self) -> None:
        assert ok("--version").stdout.startswith(b"mesos-secrets ")


def test_a_plugin_bug_is_one_line(tmp_path: Path) -> None:
    """A resolver plugin raises an unexpected exception quoting a value: `run` says which
    type, on one line, exit 1; the message and traceback only with -v."""

    value = canary()
    leaky = tmp_path / "leaky"
    leaky.write_text(value)
    install_resolver(tmp_path / "site", "exploding", EXPLODING)
    spec = tmp_path / "app.json"
    spec.write_text(
        json.dumps(
            {
                "id": "/a",
                "cmd": "true",
                "env": {"A": {"secret": "s"}},
                "secrets": {"s": {"source": str(leaky)}},
            }
        )
    )
    env = {"PYTHONPATH": str(tmp_path / "site"), "MESOS_SECRETS_RESOLVER": "exploding"}
    result = cli("run", str(spec), env=env)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "mesos-secrets: internal error: RuntimeError "
        "(its message is withheld as it may quote a secret; -v shows it)"
    ]
    assert not leaks(value, result.stdout, result.stderr)
    verbose = cli("-v", "run", str(spec), env=env)
    assert b"Traceback" in verbose.stderr


class TestTaskInfo:
    def test_app(self, tmp_path: Path) -> None:
        """An app's TaskInfo: Marathon's environment and a host port for each port."""
        spec = tmp_path / "app.json"
        spec.write_text(
            json.dumps(
                {
                    "id": "/shop/web",
                    "cmd": "serve --port $PORT0",
                    "portDefinitions": [{"port": 0, "name": "http"}],
                    "labels": {"team": "shop"},
                }
            )
        )
        task = json.loads(ok("task-info", str(spec)).stdout)
        env = {v["name"]: v["value"] for v in task["command"]["environment"]["variables"]}
        (port,) = [r for r in task["resources"] if r["name"] == "ports"]
        assigned = port["ranges"]["range"][0]["begin"]
        assert env["PORT0"] == env["PORT_HTTP"] == env["PORT"] == str(assigned)
        assert env["MARATHON_APP_ID"] == "/shop/web"
        assert env["MARATHON_APP_LABEL_TEAM"] == "shop"
        assert task["name"] == task["discovery"]["name"] == "web.shop"

    def test_pod(self, tmp_path: Path) -> None:
        """A pod's LAUNCH_GROUP: the default executor and a task per container."""
        spec = tmp_path / "pod.json"
        spec.write_text(
            json.dumps(
                {
                    "id": "/p",
                    "labels": {"a": "b"},
                    "containers": [
                        {
                            "name": "c",
                            "resources": {"cpus": 0.1, "mem": 16},
                            "exec": {"command": {"shell": "true"}},
                        }
                    ],
                }
            )
        )
        shape = json.loads(ok("task-info", str(spec)).stdout)
        assert shape["executor"]["type"] == "DEFAULT"
        assert shape["executor"]["labels"] == {"labels": [{"key": "a", "value": "b"}]}
        assert [t["name"] for t in shape["task_group"]["tasks"]] == ["c"]
