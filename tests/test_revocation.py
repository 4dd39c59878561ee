"""Break-glass revocation and change notices through the node agent, against a real
OpenBao: ``mesos-secrets revoke`` stops every task holding what it names and no other,
refuses them (and their executor tokens) from then on, and says so everywhere;
``mesos-secrets agent refresh`` tells the holders of a secret that changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.testing import canary
from mesos_secrets.tokens import mint_executor_token

from .bao import Bao
from .conftest import requires_root
from .node_agent import MESOS_SECRETS, ROOT, NodeAgent, bao_agent, request, resolve
from .node_agent import eventually as _wait
from .test_executor import EID, FID, KEY, Setup, app_task, put, setup  # noqa: F401

pytestmark = requires_root


@pytest.fixture
def node(tmp_path: Path, bao: Bao) -> Iterator[NodeAgent]:
    """The node agent, reading the OpenBao, checking executors' tokens with ``KEY``."""
    agent = bao_agent(tmp_path, bao, KEY, "cache_ttl = 60\n")
    yield agent
    if agent.process is not None and agent.process.poll() is None:
        assert agent.stop() == 0
    agent.cleanup()


def _cli(node: NodeAgent, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MESOS_SECRETS_"))}
    env.update(PYTHONPATH=str(ROOT), MESOS_SECRETS_AGENT_SOCKET=str(node.socket))
    return subprocess.run(
        [str(MESOS_SECRETS), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Runs:
    """``mesos-secrets run`` of apps that hold one secret each through the node agent."""

    def __init__(self, tmp_path: Path, node: NodeAgent) -> None:
        self.tmp = tmp_path
        self.node = node
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, secret: str) -> subprocess.Popen[str]:
        spec = self.tmp / f"{name}.json"
        spec.write_text(
            json.dumps(
                {
                    "id": f"/revocation/{name}",
                    "cmd": "sleep 60",
                    "env": {"SECRET": {"secret": "s"}},
                    "secrets": {"s": {"source": f"{secret}@password"}},
                }
            )
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MESOS_SECRETS_"))
        }
        env.update(
            PYTHONPATH=str(ROOT),
            MESOS_SECRETS_RESOLVER="agent",
            MESOS_SECRETS_AGENT_SOCKET=str(self.node.socket),
        )
        process = subprocess.Popen(
            [
                str(MESOS_SECRETS),
                "-v",
                "run",
                str(spec),
                "--runtime-dir",
                str(self.tmp / "runtime"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def holding(self) -> list[dict[str, Any]]:
        return request(self.node.socket, "GET", "/v1/status")[1]["containers"]  # type: ignore[no-any-return]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.communicate(timeout=20)  # its pipes closed too
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()


@pytest.fixture
def runs(tmp_path: Path, node: NodeAgent) -> Iterator[Runs]:
    launched = Runs(tmp_path, node)
    yield launched
    launched.close()


def _secrets(bao: Bao, *names: str) -> dict[str, str]:
    values = {name: canary() for name in names}
    for name, value in values.items():
        put(bao, name.strip("/"), {"password": value})
    return values


def test_revoking_a_secret_stops_every_task_holding_it_and_no_other(
    bao: Bao, node: NodeAgent, runs: Runs
) -> None:
    values = _secrets(bao, "/revocation/a", "/revocation/b")
    first = runs.start("first", "/revocation/a")
    second = runs.start("second", "/revocation/a")
    other = runs.start("other", "/revocation/b")
    held = _wait(lambda: len(h := runs.holding()) == 3 and h)
    other_task = next(h["task_id"] for h in held if "other" in h["task_id"])

    done = _cli(node, "revoke", "--secret", "/revocation/a", "--reason", "leaked in a log")

    assert done.returncode == 0, done.stderr
    assert "2 task(s) told to stop; 2 stopped in" in done.stdout
    for process in (first, second):  # killed at once, and run says why
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 128 + signal.SIGKILL
        assert (
            "was killed by SIGKILL: its secrets were revoked on this node (revoked by root: "
            "secret '/revocation/a' (leaked in a log))"
        ) in stderr
    assert other.poll() is None  # another secret's task runs on
    assert [h["task_id"] for h in runs.holding()] == [other_task]
    (record,) = [r for r in node.records() if r["event"] == "revoke"]
    assert record["scope"] == "secret"
    assert record["names"] == ["/revocation/a"]
    assert record["holders"] == 2
    assert record["reason"] == "leaked in a log"
    trail = node.audit.read_text() + node.log.read_text() + done.stdout + done.stderr
    assert not any(value in trail for value in values.values())


@pytest.mark.parametrize(
    ("flags", "stopped"),
    [
        (["--secret", "/revocation/"], {"first", "other"}),
        (["--task", "TASK"], {"first"}),
        (["--all"], {"first", "other"}),
    ],
)
def test_revoking_a_prefix_a_task_or_everything(
    bao: Bao, node: NodeAgent, runs: Runs, flags: list[str], stopped: set[str]
) -> None:
    _secrets(bao, "/revocation/a", "/revocation/b", "/elsewhere/c")
    processes = {
        "first": runs.start("first", "/revocation/a"),
        "other": runs.start("other", "/revocation/b"),
        "elsewhere": runs.start("elsewhere", "/elsewhere/c"),
    }
    held = _wait(lambda: len(h := runs.holding()) == 3 and h)
    first_task = next(h["task_id"] for h in held if "first" in h["task_id"])
    if "TASK" in flags:
        flags = [first_task if flag == "TASK" else flag for flag in flags]
        stopped = {"first"}
    elif "--all" in flags:
        stopped = set(processes)

    done = _cli(node, "revoke", *flags, "--json")

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["not_stopped"] == []
    assert answer["holders"] == len(stopped)
    for name, process in processes.items():
        if name in stopped:
            process.communicate(timeout=10)
            assert process.returncode == 128 + signal.SIGKILL
        else:
            assert process.poll() is None


def test_a_revoked_task_is_refused_when_it_asks_again(bao: Bao, node: NodeAgent) -> None:
    _secrets(bao, "/revocation/a")
    context = {"task_id": "asks-again"}
    ask = {"name": "/revocation/a", "key": "password"}
    body = json.dumps({"references": [ask], "context": context, "client": "c1"}).encode()
    assert request(node.socket, "POST", "/v1/resolve", body)[0] == 200

    done = _cli(node, "revoke", "--task", "asks-again", "--wait", "0")

    assert done.returncode == 1  # this process never stops: it is reported
    assert "1 task(s) had not stopped 0 s after the revocation: asks-again" in done.stderr
    status, answer = request(node.socket, "POST", "/v1/resolve", body)
    assert status == 403
    assert (
        "the secrets of this task were revoked (revoked by root: task 'asks-again')"
        in (answer["error"]["message"])
    )
    # Another task of the same process is not revoked.
    other = json.dumps({"references": [ask], "context": {"task_id": "b"}, "client": "c1"})
    assert request(node.socket, "POST", "/v1/resolve", other.encode())[0] == 200


def test_a_revoked_executors_token_is_refused_from_then_on(bao: Bao, node: NodeAgent) -> None:
    _secrets(bao, "/revocation/a")
    token = mint_executor_token(KEY, FID, EID, "revoked-container")
    ask = {"name": "/revocation/a", "key": "password"}
    header = {"Authorization": f"Bearer {token}"}
    assert resolve(node.socket, ask, **header)[0] == 200

    assert _cli(node, "revoke", "--framework", FID, "--wait", "0").returncode == 1

    status, answer = resolve(node.socket, ask, **header)
    assert status == 401
    assert (
        "the executor token of container 'revoked-container' was revoked"
        in (answer["error"]["message"])
    )
    # Another container's token still works.
    fresh = mint_executor_token(KEY, FID, EID, "another-container")
    assert resolve(node.socket, ask, Authorization=f"Bearer {fresh}")[0] == 200


def test_an_executor_may_neither_revoke_nor_refresh(node: NodeAgent) -> None:
    """Not even as root: an executor's token speaks for one container."""
    token = mint_executor_token(KEY, FID, EID, "some-container")
    for path, body in (("/v1/revoke", {"scope": "all"}), ("/v1/refresh", {"name": "/x"})):
        status, answer = request(
            node.socket,
            "POST",
            path,
            json.dumps(body).encode(),
            {"Authorization": f"Bearer {token}"},
        )
        assert status == 403
        assert answer["error"]["kind"] == "forbidden"
    assert [r for r in node.records() if r["event"] in ("revoke", "refresh")] == []


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "everything"},
        {"scope": "all", "value": "/x"},
        {"scope": "secret"},
        {"scope": "task", "value": ""},
        {"scope": "secret", "value": "/x", "reason": "\x1b[2J"},
        {"scope": "secret", "value": "/x", "extra": 1},
    ],
)
def test_a_malformed_revocation_is_refused_and_revokes_nothing(
    node: NodeAgent, body: dict[str, Any]
) -> None:
    status, answer = request(node.socket, "POST", "/v1/revoke", json.dumps(body).encode())
    assert status == 400
    assert answer["error"]["kind"] == "bad_request"
    assert [r for r in node.records() if r["event"] == "revoke"] == []


def test_refresh_tells_the_holders_of_a_secret_that_changed(bao: Bao, node: NodeAgent) -> None:
    _secrets(bao, "/revocation/rotated", "/revocation/kept")
    for task, name in (("t1", "/revocation/rotated"), ("t2", "/revocation/kept")):
        ask = {"references": [{"name": name, "key": "password"}], "context": {"task_id": task}}
        body = json.dumps({**ask, "client": "c1"}).encode()
        assert request(node.socket, "POST", "/v1/resolve", body)[0] == 200
    watch = json.dumps({"client": "c1"}).encode()
    start = request(node.socket, "POST", "/v1/watch", watch)[1]
    seen: list[Any] = []
    waiter = threading.Thread(
        target=lambda: seen.append(
            request(
                node.socket,
                "POST",
                "/v1/watch",
                json.dumps({"client": "c1", "after": start["seq"], "wait": 8}).encode(),
            )[1]
        )
    )
    waiter.start()  # waiting for news
    put(bao, "revocation/rotated", {"password": canary()})

    done = _cli(node, "agent", "refresh", "/revocation/rotated")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("secret '/revocation/rotated' changed (version 2): 1 task(s)")
    waiter.join(timeout=10)
    (answer,) = seen
    (event,) = answer["events"]
    assert event["kind"] == "changed"
    assert event["names"] == ["/revocation/rotated"]
    assert event["context"]["task_id"] == "t1"
    assert answer["epoch"] == start["epoch"]
    again = _cli(node, "agent", "refresh", "/revocation/kept")
    assert again.stdout == "secret '/revocation/kept' is unchanged (version 1)\n"


def test_a_watch_sees_only_its_own_holdings_and_ends_at_its_wait(bao: Bao, node: NodeAgent) -> None:
    _secrets(bao, "/revocation/a")
    ask = {"references": [{"name": "/revocation/a", "key": "password"}]}
    mine = {**ask, "context": {"task_id": "mine"}, "client": "mine"}
    assert request(node.socket, "POST", "/v1/resolve", json.dumps(mine).encode())[0] == 200
    other = json.dumps({"client": "other"}).encode()
    seq = request(node.socket, "POST", "/v1/watch", other)[1]["seq"]
    assert _cli(node, "revoke", "--task", "mine", "--wait", "0").returncode == 1
    started = time.monotonic()
    body = json.dumps({"client": "other", "after": seq, "wait": 1}).encode()
    status, answer = request(node.socket, "POST", "/v1/watch", body)
    assert status == 200
    assert answer["events"] == []
    assert 0.9 < time.monotonic() - started < 5
    body = json.dumps({"client": "mine", "after": seq, "wait": 1}).encode()
    (event,) = request(node.socket, "POST", "/v1/watch", body)[1]["events"]
    assert event["kind"] == "revoked"
    assert event["context"]["task_id"] == "mine"


def test_the_executor_kills_a_revoked_task_and_says_why(
    setup: Setup,  # noqa: F811 (the fixture, imported)
    bao: Bao,
    node: NodeAgent,
) -> None:
    _secrets(bao, "/revocation/a")
    agent, process = setup.through(node)
    spec = {
        "cmd": "sleep 60",
        "env": {"SECRET": {"secret": "s"}},
        "secrets": {"s": {"source": "/revocation/a@password"}},
    }
    agent.launch(app_task(spec, agent, "t1"))
    agent.wait_for("t1", "TASK_RUNNING")

    done = _cli(node, "revoke", "--secret", "/revocation/a")

    assert done.returncode == 0, done.stderr
    update = agent.wait_for("t1", "TASK_KILLED", timeout=10)
    assert update.get("message") == (
        "Task killed by SIGKILL: its secrets were revoked on this node (revoked by root: "
        "secret '/revocation/a')"
    )
    agent.shutdown()
    assert process.wait(timeout=20) == 0, setup.log()


def test_a_restarted_agent_is_told_what_running_tasks_hold(
    bao: Bao, node: NodeAgent, runs: Runs
) -> None:
    """Holdings die with the agent that knew them: the watchers tell the next one, so a
    revocation still reaches a task started before the restart."""
    _secrets(bao, "/revocation/a")
    process = runs.start("first", "/revocation/a")
    _wait(lambda: len(runs.holding()) == 1)
    assert node.stop() == 0
    node.start()
    try:
        _wait(lambda: len(runs.holding()) == 1)
    except AssertionError:
        process.kill()
        raise AssertionError(process.communicate()[1]) from None

    assert _cli(node, "revoke", "--secret", "/revocation/a").returncode == 0

    process.communicate(timeout=10)
    assert process.returncode == 128 + signal.SIGKILL


def test_the_cli_says_clearly_when_no_agent_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESOS_SECRETS_")}
    env.update(PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            str(MESOS_SECRETS),
            "revoke",
            "--all",
            "--socket",
            str(tmp_path / "none.sock"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mesos-secrets: error: cannot reach the node agent at '{tmp_path / 'none.sock'}': "
        "no agent is running there (start one: mesos-secrets agent)"
    ]
