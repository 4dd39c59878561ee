"""Hostile input: one catalogue of specs and files an attacker or a careless user writes.

Each row is refused by ``validate``, ``task-info`` and ``run`` alike, with one line that
names what is wrong and where (a JSON path, a file), exit status 1, and no traceback;
``validate`` never calls valid what ``run`` cannot launch. A Hypothesis property then
throws arbitrary bytes and JSON at the readers: the answer is a model or a
:class:`MesosSecretsError`, never another exception.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import cli
from mesos_secrets._codec import MAX_DEPTH, loads
from mesos_secrets.acls import ACLs
from mesos_secrets.config import load_config
from mesos_secrets.errors import ConfigError, MesosSecretsError, SecretValidationError
from mesos_secrets.groups import MAX_APPS, MAX_GROUPS, AppList, Group
from mesos_secrets.marathon import App, load_spec
from mesos_secrets.mesos import TaskGroupInfo, TaskInfo
from mesos_secrets.pods import Pod

from .strategies import hostile_json, json_trees, spec_documents

CLI = [str(Path(sys.executable).parent / "mesos-secrets")]


def app(**fields: Any) -> bytes:
    return json.dumps({"id": "/a", "cmd": "true", **fields}).encode()


def pod(container: dict[str, Any] | None = None, **fields: Any) -> bytes:
    one = {"name": "c", "resources": {"cpus": 0.1, "mem": 32}}
    one |= container if container is not None else {"exec": {"command": {"shell": "true"}}}
    return json.dumps({"id": "/p", "containers": [one], **fields}).encode()


def nested(depth: int) -> bytes:
    return b'{"id": "/a", "cmd": "true", "labels": ' + b"[" * depth + b"]" * depth + b"}"


#: (spec bytes, the line the error report must hold)
SPECS: dict[str, tuple[bytes, str]] = {
    "nested 100 000 deep": (b"[" * 100_000 + b"]" * 100_000, f"/: nested deeper than {MAX_DEPTH}"),
    "labels nested 150 deep": (nested(150), f"/labels: nested deeper than {MAX_DEPTH} levels"),
    "a 5000-digit number": (
        b'{"id": "/a", "cmd": "true", "cpus": ' + b"9" * 5000 + b"}",
        "/: a number has more than 4300 digits",
    ),
    "NaN": (b'{"id": "/a", "cmd": "true", "cpus": NaN}', "/: NaN is not a JSON number"),
    "Infinity": (b'{"id": "/a", "cmd": "true", "mem": Infinity}', "Infinity is not a JSON"),
    "-Infinity": (b'{"id": "/a", "cmd": "true", "mem": -Infinity}', "-Infinity is not a JSON"),
    "1e999": (b'{"id": "/a", "cmd": "true", "mem": 1e999}', "/: a number is too large for a"),
    "a duplicate key drops a secret": (
        b'{"id": "/a", "cmd": "true", "env": {"X": {"secret": "s"}, "X": "plain"},'
        b' "secrets": {"s": {"source": "/db"}}}',
        "/env/X: a key appears more than once in this object",
    ),
    "not UTF-8": (b'{"id": "/a", "cmd": "\xff"}', "/: JSON is not UTF-8 text"),
    "NUL in cmd": (app(cmd="echo \0"), "/cmd: value must not contain NUL"),
    "NUL in args": (
        json.dumps({"id": "/a", "args": ["echo", "a\0"]}).encode(),
        "/args(1): an argument must not contain NUL",
    ),
    "NUL in args[0]": (
        json.dumps({"id": "/a", "args": ["\0"]}).encode(),
        "/args(0): value must not contain NUL",
    ),
    "NUL in an env value": (app(env={"A": "x\0"}), "/env/A: value must not contain NUL"),
    "NUL in user": (app(user="no\0body"), "/user: a user name must not contain NUL"),
    "NUL in a host path": (
        app(
            container={
                "type": "MESOS",
                "volumes": [{"containerPath": "data", "hostPath": "/tmp\0", "mode": "RO"}],
            }
        ),
        "/container/volumes(0)/hostPath: a host path must not contain NUL",
    ),
    "NUL in an image": (
        app(container={"type": "MESOS", "docker": {"image": "busybox\0"}}),
        "/container/docker/image: an image name must not contain NUL",
    ),
    "an image name Docker cannot read": (
        app(container={"type": "MESOS", "docker": {"image": "UPPER:"}}),
        "/container/docker/image: Failed to parse docker image 'UPPER:': the repository name",
    ),
    "a pod's image name Docker cannot read": (
        pod({"image": {"kind": "DOCKER", "id": "a b"}, "exec": {"command": {"shell": "true"}}}),
        "/containers(0)/image/id: Failed to parse docker image 'a b'",
    ),
    "NUL in a pull secret's source": (
        app(
            container={
                "type": "MESOS",
                "docker": {"image": "busybox", "pullConfig": {"secret": "p"}},
            },
            secrets={"p": {"source": "/pull\0"}},
        ),
        "/secrets/p/source: Secret reference 'name' must not contain NUL",
    ),
    "NUL in an env secret's source": (
        app(env={"A": {"secret": "s"}}, secrets={"s": {"source": "/db\0"}}),
        "/secrets/s/source: Secret reference 'name' must not contain NUL",
    ),
    "NUL in a pod's image": (
        pod(
            {"image": {"kind": "DOCKER", "id": "busybox\0"}, "exec": {"command": {"shell": "true"}}}
        ),
        "/containers(0)/image/id: an image name must not contain NUL",
    ),
    "a lone surrogate in cmd": (
        b'{"id": "/a", "cmd": "echo \\udc80"}',
        "/cmd: a string holds an unpaired UTF-16 surrogate",
    ),
    "a lone surrogate in an env name": (
        b'{"id": "/a", "cmd": "true", "env": {"\\ud800": "x"}}',
        "/env/\\ud800: a key holds an unpaired UTF-16 surrogate",
    ),
    "a control sequence in a path is escaped": (
        app(env={"A\x1b[2J": "x\0"}),
        "/env/A\\x1b[2J: value must not contain NUL",
    ),
    "an id with a trailing newline": (
        json.dumps({"id": "/a\n", "cmd": "true"}).encode(),
        "/id: must fully match regular expression",
    ),
    "NUL in a pod's argv": (
        pod({"exec": {"command": {"argv": ["echo", "a\0"]}}}),
        "/containers(0)/exec/command/argv(1): an argument must not contain NUL",
    ),
    "NUL in a pod's shell": (
        pod({"exec": {"command": {"shell": "\0"}}}),
        "/containers(0)/exec/command/shell: value must not contain NUL",
    ),
    "NUL in a pod's user": (pod(user="a\0"), "/user: a user name must not contain NUL"),
    "NUL in a pod container's user": (
        pod({"user": "a\0", "exec": {"command": {"shell": "true"}}}),
        "/containers(0)/user: a user name must not contain NUL",
    ),
    "a pod env name with a trailing newline": (
        pod(environment={"A\n": "x"}),
        "/environment/A\\n: error.pattern",
    ),
    "a pod container name with a trailing newline": (
        pod({"name": "c\n", "exec": {"command": {"shell": "true"}}}),
        "/containers(0)/name: error.pattern",
    ),
    "groups nested 60 deep": (
        b'{"id": "/g"' + b', "groups": [{"id": "g"' * 60 + b"}]" * 60 + b"}",
        f"/groups: nested deeper than {MAX_DEPTH} levels",
    ),
    "an array of 200 000 apps": (
        b"[" + b",".join([b'{"id": "/a", "cmd": "true"}'] * 200_000) + b"]",
        f"/({MAX_APPS}): more than {MAX_APPS} apps in one spec",
    ),
    "20 000 empty groups": (
        json.dumps({"id": "/g", "groups": [{"id": f"g{i}"} for i in range(20_000)]}).encode(),
        f"/groups({MAX_GROUPS - 1}): more than {MAX_GROUPS} groups in one spec",
    ),
    "a group of apps without ids": (
        json.dumps({"id": "/g", "apps": [{"cmd": "true", "env": {"PW": "x"}}]}).encode(),
        """/apps(0)/id: 'id' is undefined on object: {"cmd":…,"env":…}""",
    ),
    "an external volume's options not an object": (
        app(
            container={
                "type": "MESOS",
                "volumes": [
                    {"containerPath": "v", "mode": "RW", "external": {"name": "v", "options": []}}
                ],
            }
        ),
        "/container/volumes(0)/external/options: error.expected.jsobject",
    ),
    "a legacy discovery port's name not a string": (
        app(ipAddress={"discovery": {"ports": [{"number": 80, "name": {"a": "b"}}]}}),
        "/ipAddress/discovery/ports(0)/name: error.expected.jsstring",
    ),
    "legacy discovery ports not an array of objects": (
        app(ipAddress={"discovery": {"ports": ["http"]}}),
        "/ipAddress/discovery/ports(0): error.expected.jsobject",
    ),
    "a kill grace period Mesos cannot hold": (
        app(taskKillGracePeriodSeconds=1e308),
        "/taskKillGracePeriodSeconds: must be at most 9223372036 seconds",
    ),
    "a pod's kill grace period Mesos cannot hold": (
        pod(
            {
                "exec": {"command": {"shell": "true"}},
                "lifecycle": {"killGracePeriodSeconds": 9223372037},
            }
        ),
        "/containers(0)/lifecycle/killGracePeriodSeconds: must be at most 9223372036 seconds",
    ),
    "a partial update": (
        b'{"id": "/a", "instances": 2}',
        "/: no 'cmd', 'args' or 'container': a partial update of '/a'",
    ),
}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = cli.main(args)
    captured = capsys.readouterr()
    return status, captured.err


@pytest.mark.parametrize("command", ["validate", "task-info", "run"])
@pytest.mark.parametrize("name", list(SPECS))
def test_hostile_spec(
    name: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, expected = SPECS[name]
    spec = tmp_path / "spec.json"
    spec.write_bytes(content)
    status, err = run_cli([command, str(spec)], capsys)
    assert status == 1
    assert expected in err, err
    assert "Traceback" not in err
    # One report: a header and one violation, each a single line.
    assert len(err.splitlines()) == 2, err


def test_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    """The installed entry point, in a process of its own, for the deepest input."""
    spec = tmp_path / "spec.json"
    spec.write_bytes(SPECS["nested 100 000 deep"][0])
    done = subprocess.run([*CLI, "run", str(spec)], check=False, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert b"nested deeper than" in done.stderr


#: (file name, content, environment variable or option naming it, the error's text)
FILES: dict[str, tuple[str, bytes, str]] = {
    "a configuration nested 100 000 deep": (
        "config.toml",
        b"a = " + b"[" * 100_000 + b"]" * 100_000,
        "is nested too deeply",
    ),
    "a configuration with a 5000-digit number": (
        "config.toml",
        b"a = " + b"9" * 5000,
        "holds a number too long to read",
    ),
    "a modules manifest nested 100 000 deep": (
        "modules.json",
        b'{"libraries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "nested deeper than",
    ),
}


@pytest.mark.parametrize("name", list(FILES))
def test_hostile_configuration(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file_name, content, expected = FILES[name]
    config = tmp_path / file_name
    config.write_bytes(content)
    for args in (["check"], ["run", str(tmp_path / "spec.json")]):
        (tmp_path / "spec.json").write_bytes(app())
        status, err = run_cli(["--config", str(config), *args], capsys)
        assert status == 1
        assert expected in err
        assert str(config) in err
        assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('timeout = "x"', "[images] 'timeout' must be a positive number of seconds"),
        ("timeout = nan", "[images] 'timeout' must be a positive number of seconds"),
        ("timeout = -1", "[images] 'timeout' must be a positive number of seconds"),
        ("timeout = true", "[images] 'timeout' must be a positive number of seconds"),
        ('insecure_credentials = "no"', "[images] 'insecure_credentials' must be true or false"),
        ("ca_bundle = 1", "[images] 'ca_bundle' must be the path of a file of certificates"),
        # An integer no double holds: float() of it raised OverflowError.
        ("timeout = " + "9" * 400, "[images] 'timeout' must be a positive number of seconds"),
    ],
)
def test_hostile_images_settings(
    setting: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[images]\n{setting}\n")
    (tmp_path / "spec.json").write_bytes(app())
    status, err = run_cli(["--config", str(config), "run", str(tmp_path / "spec.json")], capsys)
    assert status == 1
    assert message in err
    assert len(err.splitlines()) == 1, err


def test_a_fetcher_timeout_past_a_double(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An integer no double holds: float() of it raised OverflowError."""
    config = tmp_path / "config.toml"
    config.write_text("[fetcher]\ntimeout = " + "9" * 400 + "\n")
    (tmp_path / "spec.json").write_bytes(app())
    status, err = run_cli(["--config", str(config), "run", str(tmp_path / "spec.json")], capsys)
    assert status == 1
    assert "[fetcher] 'timeout' must be a positive number of seconds" in err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("setting", ["cache_ttl", "max_stale"])
def test_agent_seconds_past_a_double(setting: str, tmp_path: Path) -> None:
    """An integer no double holds: math.isfinite() of it raised OverflowError."""
    from mesos_secrets.agent.settings import AgentSettings

    config = tmp_path / "config.toml"
    config.write_text(f"[agent]\n{setting} = " + "9" * 400 + "\n")
    with pytest.raises(ConfigError, match=f"'{setting}' must be a number of seconds"):
        AgentSettings.from_table(load_config(config).agent, tmp_path)


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_runtime_dir_not_a_directory(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("")
    runtime = file if where == "a file" else file / "runtime"
    config = tmp_path / "config.toml"
    config.write_text(f'runtime_dir = "{runtime}"\n')
    (tmp_path / "spec.json").write_bytes(app())
    status, err = run_cli(["--config", str(config), "run", str(tmp_path / "spec.json")], capsys)
    assert status == 1
    assert f"runtime directory '{runtime}'" in err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("command", ["get", "run"])
def test_home_under_a_file(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("")
    spec = tmp_path / "spec.json"
    spec.write_bytes(app(env={"A": {"secret": "s"}}, secrets={"s": {"source": "/db@password"}}))
    args = ["secret", "get", "/db"] if command == "get" else ["run", str(spec)]
    status, err = run_cli(["--home", str(file / "store"), *args], capsys)
    assert status == 1
    assert str(file) in err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1", "x"])
def test_hostile_grace_period(
    seconds: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "spec.json").write_bytes(app())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--grace-period", seconds, str(tmp_path / "spec.json")])
    assert exit_.value.code == 2
    assert "argument --grace-period: expected a" in capsys.readouterr().err


def test_hostile_acl_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acls = tmp_path / "acls.json"
    acls.write_bytes(b'{"rules": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    spec = tmp_path / "spec.json"
    spec.write_bytes(app())
    status, err = run_cli(["validate", "--acls", str(acls), str(spec)], capsys)
    assert status == 1
    assert f"the ACL file '{acls}'" in err
    assert "nested deeper than" in err
    assert len(err.splitlines()) == 1, err


# --- properties ------------------------------------------------------------------------

#: What ``json.dumps`` writes and JSON allows: finite numbers.
finite_json = json_trees(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    st.text(),
)


@given(spec_documents)
def test_any_bytes_are_a_spec_or_a_typed_error(data: bytes) -> None:
    """``load_spec`` on anything: a valid App, Pod, Group or array, or a
    MesosSecretsError; a valid one converts to Mesos JSON that ``json`` writes without NaN or Infinity."""
    try:
        spec = load_spec(data)
    except MesosSecretsError:
        return
    assert isinstance(spec, App | Pod | Group | AppList)
    if isinstance(spec, Group | AppList):
        messages: tuple[TaskInfo | TaskGroupInfo, ...] = spec.to_task_infos()
    else:
        messages = (spec.to_task_info() if isinstance(spec, App) else spec.to_task_group(),)
    for message in messages:
        text = json.dumps(message.to_json(), allow_nan=False)
        type(message).from_json(text)  # and what we write, we read back


@given(spec_documents)
def test_any_bytes_are_a_task_or_a_typed_error(data: bytes) -> None:
    """The executor's and the library's reader of Mesos JSON: the same promise."""
    for kind in (TaskInfo, TaskGroupInfo):
        with contextlib.suppress(MesosSecretsError):
            kind.from_json(data)


@given(st.one_of(spec_documents, hostile_json.map(lambda v: json.dumps({"rules": v}).encode())))
def test_any_acls_are_acls_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(MesosSecretsError):
        ACLs.from_json(loads(data))


@given(finite_json)
def test_loads_reads_what_json_writes(value: Any) -> None:
    """Strict is not stricter than JSON itself: what ``json.dumps`` writes (finite,
    shallow, no duplicate keys possible) reads back equal."""
    assert loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, None),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper than"),
        ("1" * 4300, None),
        ("-" + "1" * 4301, "more than 4300 digits"),
        ("1.7976931348623157e308", None),
        ("1.8e308", "too large for a double"),
        ('{"a": 1, "a": 1}', "appears more than once"),
        ('"\\ud83d\\ude00"', None),  # a pair is one character, not a lone surrogate
        ("\ufeff{}", None),  # a byte order mark, as Marathon reads it
    ],
)
def test_loads_limits(text: str, error: str | None) -> None:
    if error is None:
        value = loads(text)
        assert not isinstance(value, float) or math.isfinite(value)
        return
    with pytest.raises(SecretValidationError, match=error):
        loads(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '{"name": "t", "task_id": {"value": "t"}, "labels": ' + "[" * 700 + "]" * 700 + "}",
            f"/labels: Invalid JSON: nested deeper than {MAX_DEPTH} levels",
        ),
        (
            '{"name": "\\ud800", "task_id": {"value": "t"}}',
            "/name: Invalid JSON: a string holds an unpaired UTF-16 surrogate",
        ),
    ],
)
def test_a_decoded_task_is_read_within_the_same_limits(text: str, error: str) -> None:
    """The executor reads a LAUNCH's task from what its driver decoded (``json.loads``,
    as deep as the stack allows): copying a field the task keeps as it is raised
    RecursionError. It is refused as the same text is."""
    for document in (text, json.loads(text)):
        with pytest.raises(SecretValidationError) as caught:
            TaskInfo.from_json(document)
        assert str(caught.value) == error


@pytest.mark.parametrize(
    "nanoseconds",
    [10**400, "9" * 400, "9" * 5000, "x", 1.5, None],
    ids=["10**400", "400 nines", "5000 nines", "x", "1.5", "null"],
)
def test_a_launch_with_a_grace_period_past_a_double(nanoseconds: object) -> None:
    """The executor reads a task's kill policy before the rest of its LAUNCH: 10**400
    nanoseconds raised OverflowError in the driver's callback, and the driver gave up
    handling the agent's events. A grace period it cannot read is none, as a malformed
    one is."""
    from mesos_secrets.executor import _grace_period

    assert _grace_period({"grace_period": {"nanoseconds": nanoseconds}}) is None
    assert _grace_period({"grace_period": {"nanoseconds": "1500000000"}}) == 1.5


def test_config_loads_through_the_same_reader(tmp_path: Path) -> None:
    modules = tmp_path / "modules.json"
    modules.write_text('{"libraries": [], "libraries": []}')
    with pytest.raises(SecretValidationError, match="appears more than once"):
        load_config(modules)


# --- the node agent's socket ------------------------------------------------------------


def raw_exchange(path: Path, request: bytes) -> bytes:
    """``request`` as a client writes it, on a connection of its own; all it got back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9", b"1\xb3"])
def test_a_content_length_in_other_digits(length: bytes, tmp_path: Path) -> None:
    """``²`` is a digit to ``str.isdigit`` but not to ``int``: the agent refused it
    with nothing but a closed connection (and "serving a request failed: ValueError"
    in its log). It is refused as any Content-Length it cannot read is."""
    from mesos_secrets.agent.server import Agent, Running, bind_socket
    from mesos_secrets.agent.settings import AgentSettings
    from resolvers.local import LocalResolver

    path = tmp_path / "agent.sock"
    settings = AgentSettings.from_table({"socket": str(path)}, tmp_path)
    running = Running(Agent(LocalResolver(tmp_path / "store"), settings), bind_socket(path))
    try:
        answer = raw_exchange(
            path, b"POST /v1/resolve HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n{}"
        )
    finally:
        running.stop()
    assert answer.startswith(b"HTTP/1.1 411 Length Required\r\n"), answer
    assert b'{"error":{"kind":"length","message":"a request body needs a Content-Length"}}' in (
        answer
    )
