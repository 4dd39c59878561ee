"""Health checks and checks, as Mesos' built-in executors run them (issue 12, item 5).

Parsing and validation with Mesos' messages; the checks themselves against real
sockets and servers; then end to end: the executor process, driven by the agent double,
runs tasks whose checks pass, fail, time out, reach the task over HTTP and TCP, and run
inside the task's container with its secrets.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.checks import (
    CheckInfo,
    CheckType,
    HealthCheck,
    Probe,
    _http,
    _tcp,
    parse_checks,
)
from mesos_secrets.errors import SecretValidationError
from mesos_secrets.mesos import TaskInfo
from mesos_secrets.testing import canary, leaks

from .agent import Agent
from .conftest import requires_root
from .registry import Registry, build_busybox
from .residue import processes_holding
from .test_executor import CHECK_APP, Setup, app_task, wait
from .test_images import docker_config
from .test_run import sha

ROOT = Path(__file__).resolve().parents[1]


def task_with(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "task_id": {"value": "t1"}, "command": {"value": "true"}, **fields}


# --- parsing and validation ---------------------------------------------------------


class TestValidation:
    def test_defaults_are_mesos(self) -> None:
        health, check = parse_checks(
            TaskInfo.from_json(
                task_with(
                    health_check={"type": "TCP", "tcp": {"port": 80}},
                    check={"type": "TCP", "tcp": {"port": 80}},
                )
            )
        )
        assert health is not None
        assert check is not None
        assert (
            health.delay_seconds,
            health.interval_seconds,
            health.timeout_seconds,
            health.consecutive_failures,
            health.grace_period_seconds,
        ) == (15.0, 10.0, 20.0, 3, 10.0)
        assert (check.delay_seconds, check.interval_seconds, check.timeout_seconds) == (
            15.0,
            10.0,
            20.0,
        )

    def test_fractional_seconds(self) -> None:
        health = HealthCheck.from_json(
            {"type": "COMMAND", "command": {"value": "true"}, "interval_seconds": 0.25}
        )
        assert health.interval_seconds == 0.25

    def test_none_is_none(self) -> None:
        assert parse_checks(TaskInfo.from_json(task_with())) == (None, None)

    @pytest.mark.parametrize(
        ("health_check", "message", "path"),
        [
            ({}, "HealthCheck must specify 'type'", "/health_check"),
            (
                {"type": "COMMAND"},
                "Expecting 'command' to be set for COMMAND health check",
                "/health_check",
            ),
            (
                {"type": "COMMAND", "command": {"shell": True}},
                "Command health check must contain 'shell command'",
                "/health_check",
            ),
            (
                {"type": "COMMAND", "command": {"shell": False}},
                "Command health check must contain 'executable path'",
                "/health_check",
            ),
            ({"type": "HTTP"}, "Expecting 'http' to be set for HTTP health check", "/health_check"),
            (
                {"type": "HTTP", "http": {"port": 80, "scheme": "ftp"}},
                "Unsupported HTTP health check scheme: 'ftp'",
                "/health_check",
            ),
            (
                {"type": "HTTP", "http": {"port": 80, "path": "health"}},
                "The path 'health' of HTTP health check must start with '/'",
                "/health_check",
            ),
            ({"type": "TCP"}, "Expecting 'tcp' to be set for TCP health check", "/health_check"),
            ({"type": "UNKNOWN"}, "'UNKNOWN' is not a valid health check type", "/health_check"),
            (
                {"type": "TCP", "tcp": {"port": 80}, "delay_seconds": -1},
                "Expecting 'delay_seconds' to be non-negative",
                "/health_check",
            ),
            (
                {"type": "TCP", "tcp": {"port": 80}, "grace_period_seconds": -0.5},
                "Expecting 'grace_period_seconds' to be non-negative",
                "/health_check",
            ),
            (
                {"type": "TCP", "tcp": {"port": 80}, "interval_seconds": -1},
                "Expecting 'interval_seconds' to be non-negative",
                "/health_check",
            ),
            (
                {"type": "TCP", "tcp": {"port": 80}, "timeout_seconds": -1},
                "Expecting 'timeout_seconds' to be non-negative",
                "/health_check",
            ),
            (
                {"type": "TCP", "tcp": {"port": 65616}},
                "Expecting 'port' to be a TCP port (1-65535)",
                "/health_check/tcp/port",
            ),
            ({"type": "TCP", "tcp": {}}, "missing required field 'port'", "/health_check/tcp"),
        ],
    )
    def test_invalid_health_checks(
        self, health_check: dict[str, Any], message: str, path: str
    ) -> None:
        with pytest.raises(SecretValidationError) as caught:
            TaskInfo.from_json(task_with(health_check=health_check))
        assert caught.value.message == f"Task uses invalid health check: {message}"
        assert caught.value.path == path

    @pytest.mark.parametrize(
        ("check", "message"),
        [
            ({}, "CheckInfo must specify 'type'"),
            ({"type": "COMMAND"}, "Expecting 'command' to be set for COMMAND check"),
            (
                {"type": "COMMAND", "command": {"command": {}}},
                "Command check must contain 'shell command'",
            ),
            ({"type": "HTTP"}, "Expecting 'http' to be set for HTTP check"),
            (
                {"type": "HTTP", "http": {"port": 80, "path": "x"}},
                "The path 'x' of HTTP check must start with '/'",
            ),
            ({"type": "TCP"}, "Expecting 'tcp' to be set for TCP check"),
            ({"type": "UNKNOWN"}, "'UNKNOWN' is not a valid check type"),
            (
                {"type": "TCP", "tcp": {"port": 1}, "timeout_seconds": -2},
                "Expecting 'timeout_seconds' to be non-negative",
            ),
        ],
    )
    def test_invalid_checks(self, check: dict[str, Any], message: str) -> None:
        with pytest.raises(SecretValidationError) as caught:
            TaskInfo.from_json(task_with(check=check))
        assert caught.value.message == f"Task uses invalid check: {message}"

    def test_a_secret_in_the_check_environment_is_refused(self) -> None:
        secret = {"type": "REFERENCE", "reference": {"name": "/db"}}
        command = {
            "value": "true",
            "environment": {"variables": [{"name": "X", "type": "SECRET", "secret": secret}]},
        }
        with pytest.raises(SecretValidationError, match="may not hold a SECRET variable"):
            TaskInfo.from_json(task_with(health_check={"type": "COMMAND", "command": command}))

    def test_round_trip(self) -> None:
        raw = task_with(
            health_check={
                "type": "HTTP",
                "http": {"port": 8080, "path": "/h", "statuses": [200]},
                "interval_seconds": 1.5,
            }
        )
        assert TaskInfo.from_json(raw).to_json()["health_check"] == raw["health_check"]

    def test_check_status_shapes(self) -> None:
        check = CheckInfo.from_json({"type": "HTTP", "http": {"port": 1}})
        assert check.empty_status() == {"type": "HTTP", "http": {}}
        assert Probe(CheckType.COMMAND).status(3) == {
            "type": "COMMAND",
            "command": {"exit_code": 3},
        }
        assert Probe(CheckType.TCP).status(False) == {"type": "TCP", "tcp": {"succeeded": False}}


# --- probes against real sockets ------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
        elif self.path == "/ok":
            self.send_response(204)
        else:
            self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestProbes:
    def test_http_status_codes(self, server: int) -> None:
        def probe(path: str) -> Probe:
            return Probe(CheckType.HTTP, port=server, path=path)

        assert _http(probe("/ok"), "127.0.0.1", 5) == 204
        assert _http(probe("/redirect"), "127.0.0.1", 5) == 204  # followed, as curl -L
        assert _http(probe("/down"), "127.0.0.1", 5) == 503

    def test_http_nobody_listening_is_no_result(self) -> None:
        assert _http(Probe(CheckType.HTTP, port=free_port()), "127.0.0.1", 5) is None

    def test_tcp(self, server: int) -> None:
        assert _tcp(Probe(CheckType.TCP, port=server), "127.0.0.1", 5) is True
        assert _tcp(Probe(CheckType.TCP, port=free_port()), "127.0.0.1", 5) is False


# --- end to end: the executor and the agent double --------------------------------------


@pytest.fixture
def setup(tmp_path: Path, bao: Any) -> Iterator[Setup]:
    s = Setup(tmp_path, bao)
    yield s
    s.close()


def running(setup: Setup, value: str) -> Agent:
    """An executor of this tree's code (its own PYTHONPATH), with ``exec/db`` = value."""
    from .test_executor import put

    put(setup.bao, "exec/db", {"password": value})
    bootstrap = setup.bootstrap()
    agent = setup.agent(bootstrap=bootstrap)
    setup.start(agent, bootstrap=bootstrap, environment={"PYTHONPATH": str(ROOT)})
    assert agent.subscribed.wait(30), setup.log()
    return agent


def checked_task(agent: Agent, task_id: str, cmd: str, **checks: dict[str, Any]) -> dict[str, Any]:
    task = app_task(dict(CHECK_APP, cmd=cmd), agent, task_id)
    task.update(checks)
    return task


def updates(agent: Agent, task_id: str) -> list[dict[str, Any]]:
    with agent._changed:
        return [u for u in agent.updates if u["task_id"]["value"] == task_id]


def health_updates(agent: Agent, task_id: str) -> list[bool]:
    return [
        u["healthy"]
        for u in updates(agent, task_id)
        if u.get("reason") == "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
    ]


def command(value: str, **options: Any) -> dict[str, Any]:
    """A COMMAND HealthCheck, checking often."""
    fast = {"delay_seconds": 0, "interval_seconds": 0.1, "timeout_seconds": 10}
    return {"type": "COMMAND", "command": {"value": value}, **fast, **options}


def check_command(value: str, **options: Any) -> dict[str, Any]:
    """A COMMAND CheckInfo (its CommandInfo one level deeper), checking often."""
    check = command(value, **options)
    check["command"] = {"command": check["command"]}
    return check


def checks_running(value: str) -> list[int]:
    """The check commands (``sleep 1001``) whose environment holds ``value``."""
    found = []
    for pid in processes_holding(value):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001001\x00":
                found.append(pid)
    return found


@requires_root
class TestHealthChecks:
    def test_passing_command_check_in_the_container(self, setup: Setup) -> None:
        """The check runs in the task's container, as its task: PID 1 is our init, the
        private /tmp is the task's, the secret is in its environment and its file, and
        the check's own variables are there too. The value reaches no log, no update."""
        value = canary()
        agent = running(setup, value)
        inside = " && ".join(
            [
                'test "$(cat /proc/1/comm)" = mesos-init',
                "test -e /tmp/task-was-here",
                f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha(value)}',
                f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha(value)}',
                'test "$OWN" = own-value',
                "echo $DB; echo $DB >&2",  # output that is never logged
            ]
        )
        check = command(inside)
        check["command"]["environment"] = {"variables": [{"name": "OWN", "value": "own-value"}]}
        agent.launch(
            checked_task(agent, "h1", "touch /tmp/task-was-here; sleep 60", health_check=check)
        )
        update = agent.wait_for("h1", "TASK_RUNNING")
        assert "healthy" not in update
        wait(lambda: health_updates(agent, "h1") == [True], timeout=30)
        time.sleep(0.5)  # more passing checks: no more updates
        assert health_updates(agent, "h1") == [True]
        (healthy,) = [u for u in updates(agent, "h1") if "healthy" in u]
        assert healthy["state"] == "TASK_RUNNING"
        agent.kill("h1")
        killed = agent.wait_for("h1", "TASK_KILLED", timeout=30)
        assert "healthy" not in killed
        assert not any(leaks(value, str(u)) for u in agent.updates)
        assert not leaks(value, setup.log())
        wait(lambda: not processes_holding(value), timeout=10)

    def test_failing_check_kills_the_task(self, setup: Setup) -> None:
        """Healthy, then failing: an update for each failure, then TASK_KILLED with
        healthy false after consecutive_failures."""
        agent = running(setup, canary())
        check = command("test ! -e stop", consecutive_failures=3, grace_period_seconds=0)
        agent.launch(checked_task(agent, "h2", "sleep 1; touch stop; sleep 60", health_check=check))
        killed = agent.wait_for("h2", "TASK_KILLED", timeout=40)
        assert health_updates(agent, "h2") == [True, False, False, False]
        assert killed["healthy"] is False
        states = [u["state"] for u in updates(agent, "h2")]
        assert states[-1] == "TASK_KILLED"
        assert states.count("TASK_KILLED") == 1

    def test_grace_period(self, setup: Setup) -> None:
        """Failures within the grace period, before the first success, do not count:
        a task that is ready after 1.5 s is not killed by a check allowing 1 failure."""
        agent = running(setup, canary())
        check = command("test -e ready", consecutive_failures=1, grace_period_seconds=20)
        agent.launch(
            checked_task(agent, "g1", "sleep 1.5; touch ready; sleep 60", health_check=check)
        )
        wait(lambda: health_updates(agent, "g1") == [True], timeout=30)
        assert "TASK_KILLED" not in agent.states("g1")
        agent.kill("g1")
        agent.wait_for("g1", "TASK_KILLED", timeout=30)

        # The same without a grace period: the first failure kills it.
        check = command("test -e ready", consecutive_failures=1, grace_period_seconds=0)
        agent.launch(
            checked_task(agent, "g2", "sleep 1.5; touch ready; sleep 60", health_check=check)
        )
        killed = agent.wait_for("g2", "TASK_KILLED", timeout=30)
        assert health_updates(agent, "g2") == [False]
        assert killed["healthy"] is False

    def test_timeout_counts_as_failure_and_nothing_is_left(self, setup: Setup) -> None:
        """A check command that outlives its timeout is killed (what it started too),
        and counts as a failure."""
        value = canary()
        agent = running(setup, value)
        check = command(
            "sleep 1000 & sleep 1000",
            timeout_seconds=0.3,
            consecutive_failures=2,
            grace_period_seconds=0,
        )
        agent.launch(checked_task(agent, "t1", "sleep 60", health_check=check))
        killed = agent.wait_for("t1", "TASK_KILLED", timeout=30)
        assert killed["healthy"] is False
        assert health_updates(agent, "t1") == [False, False]
        wait(lambda: not processes_holding(value), timeout=10)

    def test_check_commands_die_with_the_task(self, setup: Setup) -> None:
        """A check command that never ends (no timeout) goes when its task is killed."""
        value = canary()
        agent = running(setup, value)
        check = command("sleep 1001; true", timeout_seconds=0)
        agent.launch(checked_task(agent, "d1", "sleep 60", health_check=check))
        agent.wait_for("d1", "TASK_RUNNING")
        # The check's sleep holds the secret (the task's environment).
        wait(lambda: bool(checks_running(value)), timeout=20)
        agent.kill("d1")
        agent.wait_for("d1", "TASK_KILLED", timeout=30)
        wait(lambda: not processes_holding(value), timeout=10)
        assert health_updates(agent, "d1") == []

    def test_http_and_tcp(self, setup: Setup) -> None:
        """HTTP and TCP health checks reach a server the task runs on 127.0.0.1."""
        agent = running(setup, canary())
        port = free_port()
        serve = f"exec /usr/bin/python3 -m http.server {port} --bind 127.0.0.1"
        fast = {"delay_seconds": 0, "interval_seconds": 0.2, "timeout_seconds": 5}
        agent.launch(
            checked_task(
                agent,
                "w1",
                serve,
                health_check={"type": "HTTP", "http": {"port": port, "path": "/"}, **fast},
            )
        )
        agent.launch(
            checked_task(
                agent, "w2", "sleep 60", health_check={"type": "TCP", "tcp": {"port": port}, **fast}
            )
        )
        wait(lambda: health_updates(agent, "w1") == [True], timeout=30)
        wait(lambda: health_updates(agent, "w2") == [True], timeout=30)
        agent.kill("w1")
        agent.wait_for("w1", "TASK_KILLED", timeout=30)
        # The server is gone: the TCP health check fails, and the task is killed.
        killed = agent.wait_for("w2", "TASK_KILLED", timeout=30)
        assert killed["healthy"] is False
        assert health_updates(agent, "w2")[:2] == [True, False]


@requires_root
class TestChecks:
    def test_command_check_reports_changes(self, setup: Setup) -> None:
        """A check reports its exit code each time it changes, and never kills."""
        agent = running(setup, canary())
        agent.launch(
            checked_task(
                agent, "c1", "sleep 1; touch ready; sleep 60", check=check_command("test -e ready")
            )
        )
        wait(lambda: len(check_updates(agent, "c1")) >= 2, timeout=30)
        time.sleep(0.5)
        statuses = [u["check_status"] for u in check_updates(agent, "c1")]
        assert statuses == [
            {"type": "COMMAND", "command": {"exit_code": 1}},
            {"type": "COMMAND", "command": {"exit_code": 0}},
        ]
        assert all(u["state"] == "TASK_RUNNING" for u in check_updates(agent, "c1"))
        assert all("healthy" not in u for u in check_updates(agent, "c1"))
        agent.kill("c1")
        agent.wait_for("c1", "TASK_KILLED", timeout=30)

    def test_no_check_after_a_kill(self, setup: Setup) -> None:
        """As Mesos' executors, checking stops once the task is being killed: a task
        that ignores SIGTERM and changes afterwards gets no check update for it."""
        agent = running(setup, canary())
        cmd = "trap '' TERM; sleep 1.5; touch ready; sleep 60"
        agent.launch(checked_task(agent, "k1", cmd, check=check_command("test -e ready")))
        wait(lambda: len(check_updates(agent, "k1")) == 1, timeout=30)
        agent.kill("k1")
        agent.wait_for("k1", "TASK_KILLED", timeout=30)
        statuses = [u["check_status"] for u in check_updates(agent, "k1")]
        assert statuses == [{"type": "COMMAND", "command": {"exit_code": 1}}]

    def test_http_and_tcp_checks_with_a_health_check(self, setup: Setup) -> None:
        """HTTP: the status code (a 404 too); TCP: whether it connected. A check update
        carries the last health status as well."""
        agent = running(setup, canary())
        port, closed = free_port(), free_port()
        serve = f"exec /usr/bin/python3 -m http.server {port} --bind 127.0.0.1"
        fast = {"delay_seconds": 0, "interval_seconds": 0.2, "timeout_seconds": 5}
        agent.launch(
            checked_task(
                agent,
                "c2",
                serve,
                check={"type": "HTTP", "http": {"port": port, "path": "/missing"}, **fast},
                health_check={
                    "type": "TCP",
                    "tcp": {"port": port},
                    **fast,
                    "delay_seconds": 0.5,
                    "grace_period_seconds": 30,
                },
            )
        )
        agent.launch(
            checked_task(
                agent, "c3", "sleep 60", check={"type": "TCP", "tcp": {"port": closed}, **fast}
            )
        )
        wait(lambda: health_updates(agent, "c2") == [True], timeout=30)
        wait(
            lambda: (
                {"type": "HTTP", "http": {"status_code": 404}}
                in [u["check_status"] for u in check_updates(agent, "c2")]
            ),
            timeout=30,
        )
        (health,) = [u for u in updates(agent, "c2") if "healthy" in u]
        assert health["check_status"]["type"] == "HTTP"  # the last check status, carried
        wait(lambda: len(check_updates(agent, "c3")) == 1, timeout=30)
        assert check_updates(agent, "c3")[0]["check_status"] == {
            "type": "TCP",
            "tcp": {"succeeded": False},
        }
        for task_id in ("c2", "c3"):
            agent.kill(task_id)
            agent.wait_for(task_id, "TASK_KILLED", timeout=30)


def check_updates(agent: Agent, task_id: str) -> list[dict[str, Any]]:
    return [
        u for u in updates(agent, task_id) if u.get("reason") == "REASON_TASK_CHECK_STATUS_UPDATED"
    ]


@requires_root
def test_invalid_health_check_fails_the_task(setup: Setup) -> None:
    """As Mesos' master refuses it: the task does not run."""
    agent = running(setup, canary())
    agent.launch(checked_task(agent, "i1", "true", health_check={"type": "HTTP"}))
    update = agent.wait_for("i1", "TASK_FAILED", timeout=30)
    assert update["reason"] == "REASON_TASK_INVALID"
    assert update["message"] == (
        "/health_check: Task uses invalid health check: "
        "Expecting 'http' to be set for HTTP health check"
    )
    assert "TASK_RUNNING" not in agent.states("i1")


@pytest.fixture(scope="module")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry holding busybox as private/busybox, for alice (PASSWORD)."""
    from .test_images import PASSWORD

    layout = tmp_path_factory.mktemp("image") / "layout"
    build_busybox(layout)
    server = Registry(tmp_path_factory.mktemp("registry"), {"alice": PASSWORD})
    server.push(layout, "latest", "private/busybox:latest", user="alice", password=PASSWORD)
    yield server
    server.stop()


@requires_root
def test_command_check_in_an_image(setup: Setup, image_registry: Registry) -> None:
    """In a task run by runc in an image, a COMMAND check runs in the image's root
    filesystem, in the task's namespaces (its PID 1 is the task's shell), in its
    sandbox, with its secrets."""
    from .test_executor import put

    registry = image_registry
    value = canary()
    setup.config.write_text(
        setup.config.read_text()
        + f'[images]\nstore = "{setup.tmp / "images"}"\nca_bundle = "{registry.ca.ca.cert}"\n'
    )
    put(setup.bao, "exec/pull", {"config": docker_config(registry).decode()})
    agent = running(setup, value)
    spec = {
        "cmd": "sleep 60",
        "env": {"DB": {"secret": "db"}},
        "secrets": {
            "db": {"source": "/exec/db@password"},
            "pull": {"source": "/exec/pull@config"},
        },
        "container": {
            "type": "MESOS",
            "docker": {
                "image": f"{registry.host}/private/busybox:latest",
                "pullConfig": {"secret": "pull"},
            },
        },
    }
    task = app_task(spec, agent, "i1")
    inside = " && ".join(
        [
            "test -f /etc/hello",  # only in the image
            'test "$(pwd)" = /mnt/mesos/sandbox',
            "grep -q 'sleep' /proc/1/cmdline",  # PID 1 is the task (runc's PID namespace)
            f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha(value)}',
        ]
    )
    task["health_check"] = command(inside)
    agent.launch(task)
    wait(lambda: health_updates(agent, "i1") == [True], timeout=90)
    agent.kill("i1")
    agent.wait_for("i1", "TASK_KILLED", timeout=30)
    assert not leaks(value, setup.log())
    wait(lambda: not processes_holding(value), timeout=10)
