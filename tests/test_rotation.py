"""Rotation that reaches the running task, against a real OpenBao through the node agent:
``mesos-secrets run`` of apps whose labels ask for it. A new version put in the store
reaches the task's file within its interval, atomically, with one signal; an outage
keeps the last good value (or fails the task that asked for that); restarts roll out a
task at a time and stop at the first that does not become healthy again."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.testing import canary

from .bao import Bao
from .conftest import requires_root
from .node_agent import MESOS_SECRETS, ROOT, NodeAgent, bao_agent, request
from .node_agent import eventually as _wait
from .test_executor import KEY, Setup, app_task, put, setup  # noqa: F401

pytestmark = requires_root


@pytest.fixture
def node(tmp_path: Path, bao: Bao) -> Iterator[NodeAgent]:
    """The node agent, reading the OpenBao (its own cache long: only polls read again)."""
    agent = bao_agent(tmp_path, bao, KEY, "cache_ttl = 300\nmax_stale = 300\n")
    yield agent
    if agent.process is not None and agent.process.poll() is None:
        assert agent.stop() == 0
    agent.cleanup()


class Run:
    """One ``mesos-secrets run`` of an app, in a work directory the test can read."""

    def __init__(self, tmp: Path, node: NodeAgent, name: str, app: dict[str, Any]) -> None:
        self.sandbox = tmp / f"work-{name}"
        self.sandbox.mkdir()
        spec = tmp / f"{name}.json"
        spec.write_text(json.dumps(app))
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MESOS_SECRETS_"))
        }
        env.update(
            PYTHONPATH=str(ROOT),
            MESOS_SECRETS_RESOLVER="agent",
            MESOS_SECRETS_AGENT_SOCKET=str(node.socket),
        )
        self.process = subprocess.Popen(
            [
                str(MESOS_SECRETS),
                "-v",
                "run",
                str(spec),
                "--work-dir",
                str(self.sandbox),
                "--runtime-dir",
                str(tmp / "runtime"),
                "--grace-period",
                "2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stderr = ""

    def file(self, name: str) -> str:
        try:
            return (self.sandbox / name).read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            _, self.stderr = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            _, self.stderr = self.process.communicate()
        return self.stderr


@pytest.fixture
def runs(tmp_path: Path, node: NodeAgent) -> Iterator[Callable[[str, dict[str, Any]], Run]]:
    started: list[Run] = []

    def start(name: str, app: dict[str, Any]) -> Run:
        run = Run(tmp_path, node, name, app)
        started.append(run)
        return run

    yield start
    for run in started:
        print(f"--- {run.sandbox.name}:\n{run.stop()}")  # shown when a test fails


#: A task that copies its secret file to ``seen`` (whole, by rename) and counts SIGHUPs.
WATCHER = (
    "trap 'echo hup >> hups' HUP; : > hups; "
    "while :; do cat secret/pw > seen.tmp && mv seen.tmp seen; sleep 0.05; done"
)


def _app(name: str, secret: str, labels: dict[str, str], cmd: str = WATCHER) -> dict[str, Any]:
    return {
        "id": f"/rotation/{name}",
        "cmd": cmd,
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secret/pw", "secret": "pw"}],
        },
        "secrets": {"pw": {"source": f"{secret}@password"}},
        "labels": labels,
    }


def _status(node: NodeAgent) -> dict[str, Any]:
    return request(node.socket, "GET", "/v1/status")[1]  # type: ignore[no-any-return]


def test_a_new_version_reaches_the_running_task_within_its_interval_with_one_signal(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    first, second = canary(), canary()
    put(bao, "rotation/hup", {"password": first})
    run = runs(
        "hup",
        _app(
            "hup",
            "/rotation/hup",
            {"mesos-secrets/refresh-interval": "1", "mesos-secrets/on-change": "signal:SIGHUP"},
        ),
    )
    _wait(lambda: run.file("seen") == first, what="the first value")

    put(bao, "rotation/hup", {"password": second})
    put_at = time.monotonic()
    _wait(lambda: run.file("seen") == second, timeout=10, what="the new value")
    took = time.monotonic() - put_at
    assert took < 1 + 1.5  # the interval (jitter keeps it under), and a little
    _wait(lambda: run.file("hups") == "hup\n", timeout=5, what="the signal")
    time.sleep(2.5)  # more polls, no more change: no more signals
    assert run.file("hups") == "hup\n"
    assert run.file("seen") == second
    (holder,) = _status(node)["containers"]
    assert holder["refresh"] == 1.0
    assert "outdated" not in holder["secrets"][0]

    stderr = run.stop()
    trail = node.audit.read_text() + node.log.read_text() + stderr
    assert first not in trail
    assert second not in trail
    assert "sending it signal:SIGHUP" in stderr


def test_a_reader_never_sees_half_a_file_or_two_versions(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    """Each version is one letter 16 KiB long: a torn or mixed read has two letters."""
    reader = (
        'python3 -c "\n'
        "import time\n"
        "reads = bad = 0\n"
        "while True:\n"
        "    data = open('secret/pw').read()\n"
        "    reads += 1\n"
        "    if len(data) != 16384 or len(set(data)) != 1:\n"
        "        bad += 1\n"
        "    if reads % 200 == 0:\n"
        "        open('count.tmp', 'w').write(f'{reads} {bad} {data[0]}')\n"
        "        __import__('os').replace('count.tmp', 'count')\n"
        '"'
    )
    letters = "ABCDEFGH"
    put(bao, "rotation/torn", {"password": letters[0] * 16384})
    run = runs(
        "torn",
        _app("torn", "/rotation/torn", {"mesos-secrets/refresh-interval": "1"}, cmd=reader),
    )
    _wait(lambda: run.file("count"), what="the reader")
    for letter in letters[1:]:
        put(bao, "rotation/torn", {"password": letter * 16384})
        _wait(lambda x=letter: run.file("count").endswith(x), timeout=10, what=letter)
    reads, bad, _ = run.file("count").split()
    assert int(reads) > 1000
    assert bad == "0"


def test_an_outage_keeps_the_last_good_value_and_says_since_when(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    value = canary()
    put(bao, "rotation/outage", {"password": value})
    keeps = runs(
        "keeps", _app("keeps", "/rotation/outage", {"mesos-secrets/refresh-interval": "1"})
    )
    fails = runs(
        "fails",
        _app(
            "fails",
            "/rotation/outage",
            {
                "mesos-secrets/refresh-interval": "1",
                "mesos-secrets/fail-on-refresh-error": "/rotation/outage",
            },
        ),
    )
    _wait(lambda: keeps.file("seen") == value and fails.file("seen") == value)
    bao.seal()
    try:
        fails.process.wait(timeout=20)  # stopped: it may not run on an old value
        stderr = fails.stop()
        assert fails.process.returncode == 128 + signal.SIGTERM
        assert "secret '/rotation/outage' could not be refreshed and the task may not" in stderr
        time.sleep(1.5)
        assert keeps.process.poll() is None  # the other keeps running, on the last good
        assert keeps.file("seen") == value
        (holder,) = _status(node)["containers"]
        (held,) = holder["secrets"]
        assert held["refresh_failing_since"]
        assert "refresh_error" in held
        assert held["age"] > 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESOS_SECRETS_")}
        env.update(PYTHONPATH=str(ROOT), MESOS_SECRETS_AGENT_SOCKET=str(node.socket))
        shown = subprocess.run(
            [str(MESOS_SECRETS), "agent", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "/rotation/outage@password version " in shown
        assert ", cannot be refreshed since " in shown
    finally:
        bao.unseal()
    second = canary()
    put(bao, "rotation/outage", {"password": second})
    _wait(lambda: keeps.file("seen") == second, timeout=10, what="the value after the outage")
    (held,) = _status(node)["containers"][0]["secrets"]
    assert "refresh_failing_since" not in held
    stderr = keeps.stop()
    assert "keeps the last good value of '/rotation/outage'" in stderr


def test_an_agent_refresh_is_a_push_without_an_interval(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    first, second = canary(), canary()
    put(bao, "rotation/push", {"password": first})
    run = runs("push", _app("push", "/rotation/push", {}))
    _wait(lambda: run.file("seen") == first)
    put(bao, "rotation/push", {"password": second})
    time.sleep(2)
    assert run.file("seen") == first  # no interval: nothing reads it again
    body = json.dumps({"name": "/rotation/push"}).encode()
    status, answer = request(node.socket, "POST", "/v1/refresh", body)
    assert status == 200
    assert answer["told"] == 1
    _wait(lambda: run.file("seen") == second, timeout=5)
    assert run.file("hups") == ""  # noop: no signal


def test_an_optional_secret_missing_at_launch_arrives_later(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    bao.client().secrets.kv.v2.delete_metadata_and_all_versions(path="rotation/later")
    run = runs(
        "later",
        _app(
            "later",
            "/rotation/later",
            {"mesos-secrets/refresh-interval": "1", "mesos-secrets/optional": "/rotation/later"},
        ),
    )
    _wait((run.sandbox / "hups").exists, what="the task to start without it")
    assert not (run.sandbox / "seen").exists()
    (held,) = _status(node)["containers"][0]["secrets"]
    assert held["missing"] is True
    value = canary()
    put(bao, "rotation/later", {"password": value})
    _wait(lambda: run.file("seen") == value, timeout=10, what="the secret once it exists")
    assert run.process.poll() is None


def test_a_missing_secret_that_is_not_optional_fails_the_launch(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    bao.client().secrets.kv.v2.delete_metadata_and_all_versions(path="rotation/never")
    run = runs("never", _app("never", "/rotation/never", {"mesos-secrets/optional": "/other"}))
    assert run.process.wait(timeout=30) != 0
    assert "volume 'secret/pw' (secret '/rotation/never@password')" in run.stop()
    assert _status(node)["containers"] == []  # nothing held for a task that never ran


#: A task that records each start, and is healthy once ``ready`` exists, 1 s after it
#: starts, if its secret says "good".
RESTARTED = (
    "date +%s.%N >> starts; rm -f ready; sleep 1; "
    'case "$SECRET" in good*) touch ready;; esac; '
    "while :; do sleep 0.2; done"
)


def _restarting(name: str, batch: int = 1) -> dict[str, Any]:
    return {
        "id": "/rotation/web",  # one app: its three tasks roll out together
        "cmd": RESTARTED,
        "env": {"SECRET": {"secret": "pw"}},
        "secrets": {"pw": {"source": "/rotation/web@password"}},
        "labels": {
            "mesos-secrets/refresh-interval": "1",
            "mesos-secrets/on-change": "restart",
            "mesos-secrets/restart-batch": str(batch),
            "mesos-secrets/restart-timeout": "8",
        },
        "healthChecks": [
            {
                "protocol": "COMMAND",
                "command": {"value": "test -f ready"},
                "gracePeriodSeconds": 3,
                "delaySeconds": 0,
                "intervalSeconds": 1,
                "timeoutSeconds": 1,
                "maxConsecutiveFailures": 1,
            }
        ],
    }


def _starts(run: Run) -> list[float]:
    return [float(line) for line in run.file("starts").split()]


def _three_tasks(bao: Bao, runs: Callable[[str, dict[str, Any]], Run]) -> list[Run]:
    """Three tasks of one app, started with a good first version."""
    put(bao, "rotation/web", {"password": "good-1"})
    tasks = [runs(f"web{i}", _restarting(f"web{i}")) for i in range(3)]
    _wait(lambda: all(len(_starts(t)) == 1 for t in tasks), what="three tasks")
    return tasks


def test_restarts_roll_out_one_task_at_a_time(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    tasks = _three_tasks(bao, runs)
    put(bao, "rotation/web", {"password": "good-2"})
    _wait(lambda: all(len(_starts(t)) == 2 for t in tasks), timeout=40, what="three restarts")
    restarts = sorted(_starts(t)[1] for t in tasks)
    for earlier, later in itertools.pairwise(restarts):
        assert later - earlier >= 1.0  # the next began once the last was healthy
    (rollout,) = _wait(
        lambda: (r := _status(node)["rollouts"]) and len(r[0]["healthy"]) == 3 and r,
        timeout=10,
        what="the last to be healthy",
    )
    assert rollout["app"] == "/rotation/web"
    assert sorted(rollout["healthy"]) == sorted(h["task_id"] for h in _status(node)["containers"])
    assert "stopped" not in rollout
    assert all(t.process.poll() is None for t in tasks)


def test_a_restart_that_is_not_healthy_stops_the_rollout(
    bao: Bao, node: NodeAgent, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    tasks = _three_tasks(bao, runs)
    put(bao, "rotation/web", {"password": "broken-2"})  # not healthy with this one
    rollout = _wait(
        lambda: (r := _status(node)["rollouts"]) and "stopped" in r[0] and r[0],
        timeout=40,
        what="the rollout to stop",
    )
    assert "did not become healthy after its restart" in rollout["stopped"]
    time.sleep(3)
    restarted = [t for t in tasks if len(_starts(t)) > 1]
    assert len(restarted) == 1  # the first batch, and no other
    kept = [t for t in tasks if t not in restarted]
    assert all(t.process.poll() is None for t in kept)  # still on the old version
    stderr = "".join(t.stop() for t in kept)
    assert "stays on the old version of '/rotation/web': the rollout stopped (task " in stderr
    records = [r for r in node.records() if r["event"] == "rollout"]
    assert records
    assert records[0]["outcome"] == "stopped"


# --- the executor ------------------------------------------------------------------------


def _sandbox_file(executor: Setup, name: str) -> str:
    for path in (executor.tmp / "sandbox" / "tasks").glob(f"*/{name}"):
        return path.read_text()
    return ""


def test_the_executor_rewrites_files_signals_and_fails_as_the_labels_say(
    setup: Setup,  # noqa: F811 (the fixture, imported)
    bao: Bao,
    node: NodeAgent,
) -> None:
    first, second = canary(), canary()
    put(bao, "rotation/exec", {"password": first})
    agent, process = setup.through(node)
    labels = {
        "mesos-secrets/refresh-interval": "1",
        "mesos-secrets/on-change": "signal:SIGHUP",
        "mesos-secrets/fail-on-refresh-error": "*",
    }
    spec = _app("exec", "/rotation/exec", labels)
    del spec["id"]
    agent.launch(app_task(spec, agent, "t1"))
    agent.wait_for("t1", "TASK_RUNNING")
    _wait(lambda: _sandbox_file(setup, "seen") == first, what="the first value")

    put(bao, "rotation/exec", {"password": second})
    _wait(lambda: _sandbox_file(setup, "seen") == second, timeout=10, what="the new value")
    _wait(lambda: _sandbox_file(setup, "hups") == "hup\n", timeout=5, what="the signal")

    bao.seal()
    try:
        update = agent.wait_for("t1", "TASK_FAILED", timeout=20)
    finally:
        bao.unseal()
    assert update["message"].startswith(
        "Task killed by SIGTERM: secret '/rotation/exec' could not be refreshed and the task "
        "may not run on an old value (mesos-secrets/fail-on-refresh-error): "
    )
    agent.shutdown()
    assert process.wait(timeout=20) == 0, setup.log()
    trail = setup.log() + node.log.read_text() + json.dumps(agent.updates)
    assert first not in trail
    assert second not in trail


def test_the_executor_restarts_a_task_for_a_new_version(
    setup: Setup,  # noqa: F811 (the fixture, imported)
    bao: Bao,
    node: NodeAgent,
) -> None:
    put(bao, "rotation/web", {"password": "good-1"})
    agent, process = setup.through(node)
    spec = _restarting("exec")
    del spec["id"]
    agent.launch(app_task(spec, agent, "t1"))
    agent.wait_for("t1", "TASK_RUNNING")
    _wait(lambda: _sandbox_file(setup, "starts").count("\n") == 1, what="the task")

    put(bao, "rotation/web", {"password": "good-2"})
    _wait(lambda: _sandbox_file(setup, "starts").count("\n") == 2, timeout=10, what="restart")
    _wait(
        lambda: any(
            u["state"] == "TASK_RUNNING" and u.get("message", "").startswith("restarted: ")
            for u in agent.updates
        ),
        timeout=5,
        what="the update saying so",
    )
    (restarting,) = [
        u for u in agent.updates if u.get("message", "").startswith("restarting: a new version")
    ]
    assert restarting["state"] == "TASK_RUNNING"
    assert restarting["healthy"] is False  # not healthy while it restarts
    (rollout,) = _wait(
        lambda: (r := _status(node)["rollouts"]) and r[0]["healthy"] == ["t1"] and r,
        timeout=10,
        what="the task to be healthy again",
    )
    assert "stopped" not in rollout
    assert agent.states("t1")[-1] == "TASK_RUNNING"  # a restart is not an end
    agent.kill("t1")
    agent.wait_for("t1", "TASK_KILLED")
    agent.shutdown()
    assert process.wait(timeout=20) == 0, setup.log()


def test_a_kv_ttl_is_a_refresh_interval_of_its_own(
    tmp_path: Path, bao: Bao, runs: Callable[[str, dict[str, Any]], Run]
) -> None:
    """A KV version 1 secret with a ``ttl`` is read again before it runs out (two thirds
    into it), though no task asked for an interval."""
    client = bao.client()
    if "rotation-kv1/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("kv", path="rotation-kv1", options={"version": "1"})
    first, second = canary(), canary()
    kv1 = client.secrets.kv.v1
    kv1.create_or_update_secret("app", {"password": first, "ttl": "3s"}, mount_point="rotation-kv1")
    agent = NodeAgent(
        tmp_path / "kv1-agent",
        resolver="vault",
        agent="cache_ttl = 300\n",
        extra=(
            f'[resolvers.vault]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n'
            'mount = "rotation-kv1"\nkv_version = 1\n'
        ),
    )
    try:
        run = Run(tmp_path, agent, "kv1", _app("kv1", "/app", {}))
        try:
            _wait(lambda: run.file("seen") == first, what="the first value")
            kv1.create_or_update_secret(
                "app", {"password": second, "ttl": "3s"}, mount_point="rotation-kv1"
            )
            _wait(lambda: run.file("seen") == second, timeout=8, what="the value after its ttl")
            refreshes = [r for r in agent.records() if r["event"] == "refresh"]
            assert refreshes
            assert {r["by"] for r in refreshes} == {"lease"}
        finally:
            print(run.stop())
    finally:
        assert agent.stop() == 0
        agent.cleanup()


def test_only_a_tasks_own_front_end_takes_part_in_its_rollout(node: NodeAgent) -> None:
    """A caller that holds nothing for a task can neither take its turn nor stop its
    app's rollout."""
    for phase in ({"phase": "begin", "wait": 0}, {"phase": "end", "healthy": False}):
        body = {"app": "/web", "change": "v2", "task": "someone-elses.1", **phase}
        status, answer = request(node.socket, "POST", "/v1/rollout", json.dumps(body).encode())
        assert status == 403
        assert "holds no secrets of this caller's" in answer["error"]["message"]
    assert _status(node)["rollouts"] == []


def test_a_version_that_came_while_the_agent_was_down_reaches_the_task(
    tmp_path: Path, bao: Bao
) -> None:
    """The next agent knows nothing of what the tasks were given, and its first read
    (the value kept across the restart expired) is the new version: the front ends
    compare their files with the store's when they tell it what they hold."""
    first, second = canary(), canary()
    put(bao, "rotation/down", {"password": first})
    (tmp_path / "short").mkdir()
    agent = bao_agent(tmp_path / "short", bao, KEY, "cache_ttl = 1\n")
    try:
        run = Run(
            tmp_path,
            agent,
            "down",
            _app("down", "/rotation/down", {"mesos-secrets/on-change": "signal"}),
        )
        try:
            _wait(lambda: run.file("seen") == first, what="the first value")
            assert agent.stop() == 0
            put(bao, "rotation/down", {"password": second})
            time.sleep(1.5)  # what the agent kept has expired
            agent.start()
            _wait(lambda: run.file("seen") == second, timeout=20, what="the value after it")
            _wait(lambda: run.file("hups") == "hup\n", timeout=5, what="the signal")
            time.sleep(1)
            assert run.file("hups") == "hup\n"
        finally:
            print(run.stop())
    finally:
        assert agent.stop() == 0
        agent.cleanup()
