"""Kills, shutdown and task groups, as Mesos' own executors handle them.

The references are the command executor (``src/launcher/executor.cpp``: kill policy,
TASK_KILLING, a second kill only shortening the grace period, shutdown within the
agent's grace period) and the default executor (``src/launcher/default_executor.cpp``:
a task group's failing task kills the rest of its group).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isolators.network import NETNS_DIR, namespace_prefix

from . import plugins
from .agent import Agent
from .bao import Bao
from .conftest import requires_root
from .test_executor import CHECK_APP, Setup, app_task, put, wait

pytestmark = requires_root

#: A task that ignores SIGTERM: only the escalation to SIGKILL ends it.
STUBBORN = dict(CHECK_APP, cmd="trap '' TERM; echo ready; while :; do sleep 0.1; done")
SLEEPING = dict(CHECK_APP, cmd="sleep 60")


@pytest.fixture
def setup(tmp_path: Path, bao: Bao) -> Iterator[Setup]:
    s = Setup(tmp_path, bao)
    yield s
    s.close()


def started(setup: Setup, **agent: Any) -> Agent:
    """An executor subscribed to an agent double, with ``exec/db`` in the store."""
    put(setup.bao, "exec/db", {"password": "exec-db-password"})
    bootstrap = setup.bootstrap()
    double = setup.agent(bootstrap=bootstrap, **agent)
    setup.start(double, bootstrap=bootstrap)
    assert double.subscribed.wait(30), setup.log()
    return double


def ready(setup: Setup, agent: Agent, task_id: str) -> None:
    """The task runs and ignores SIGTERM from now on (its shell set the trap)."""
    agent.wait_for(task_id, "TASK_RUNNING")
    tasks = setup.tmp / "sandbox" / "tasks"
    wait(lambda: any(f.read_text() == "ready\n" for f in tasks.glob(f"{task_id}.*/stdout")))


def kill_policy(task: dict[str, Any], seconds: float) -> dict[str, Any]:
    task["kill_policy"] = {"grace_period": {"nanoseconds": int(seconds * 1e9)}}
    return task


def seconds_until(agent: Agent, task_id: str, state: str, timeout: float = 30) -> float:
    """How long until ``state`` arrives: bounds are generous (a loaded machine), and
    only tell a grace period honoured from one ignored."""
    began = time.monotonic()
    agent.wait_for(task_id, state, timeout=timeout)
    return time.monotonic() - began


class TestKill:
    def test_the_kill_events_grace_period(self, setup: Setup) -> None:
        """A KILL with ``kill_policy.grace_period`` 0.5 s: a task ignoring SIGTERM is
        SIGKILLed then, not after a fixed 5 s."""
        agent = started(setup)
        agent.launch(kill_policy(app_task(STUBBORN, agent, "k1"), 20.0))
        ready(setup, agent, "k1")
        agent.kill("k1", grace_period=0.5)
        assert seconds_until(agent, "k1", "TASK_KILLED") < 6.0  # not the task's 20 s

    def test_the_tasks_policy_then_a_shorter_kill(self, setup: Setup) -> None:
        """The TaskInfo's kill policy (10 s) applies to a KILL without one; a second KILL
        with a shorter grace period (0 s) shortens it, as the command executor does."""
        agent = started(setup)
        agent.launch(kill_policy(app_task(STUBBORN, agent, "k2"), 20.0))
        ready(setup, agent, "k2")
        agent.kill("k2")
        time.sleep(5.5)  # past the old fixed grace period, and Mesos' default of 3 s
        assert "TASK_KILLED" not in agent.states("k2"), (agent.updates, setup.log())
        agent.kill("k2", grace_period=0)
        assert seconds_until(agent, "k2", "TASK_KILLED") < 6.0  # not the 14.5 s left

    def test_a_longer_second_kill_changes_nothing(self, setup: Setup) -> None:
        agent = started(setup)
        agent.launch(app_task(STUBBORN, agent, "k3"))
        ready(setup, agent, "k3")
        agent.kill("k3", grace_period=0.5)
        agent.kill("k3", grace_period=60)
        assert seconds_until(agent, "k3", "TASK_KILLED", timeout=70) < 6.0

    def test_task_killing_first_when_the_framework_can_take_it(self, setup: Setup) -> None:
        agent = started(setup, capabilities=("TASK_KILLING_STATE",))
        agent.launch(app_task(SLEEPING, agent, "k4"))
        agent.wait_for("k4", "TASK_RUNNING")
        agent.kill("k4")
        agent.wait_for("k4", "TASK_KILLED")
        assert agent.states("k4") == [
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_KILLING",
            "TASK_KILLED",
        ]

    def test_no_task_killing_otherwise(self, setup: Setup) -> None:
        agent = started(setup)
        agent.launch(app_task(SLEEPING, agent, "k5"))
        agent.wait_for("k5", "TASK_RUNNING")
        agent.kill("k5")
        agent.wait_for("k5", "TASK_KILLED")
        assert "TASK_KILLING" not in agent.states("k5")

    def test_killed_while_its_secrets_resolve(self, setup: Setup) -> None:
        """A KILL while the task's secrets are still being resolved (a slow store): it
        never starts, TASK_KILLED once the resolution returns, its command never ran."""
        plugins.install_resolver(setup.tmp / "site", "slow", plugins.SLOW.replace("{seconds}", "2"))
        agent = setup.agent()
        setup.start(
            agent,
            environment={
                "PYTHONPATH": str(setup.tmp / "site"),
                "MESOS_SECRETS_RESOLVER": "slow",
            },
        )
        assert agent.subscribed.wait(30), setup.log()
        agent.launch(app_task(dict(CHECK_APP, cmd="echo ran"), agent, "k6"))
        agent.wait_for("k6", "TASK_STARTING")
        agent.kill("k6")
        update = agent.wait_for("k6", "TASK_KILLED", timeout=20)
        assert update["message"] == "Task killed before it was launched"
        assert agent.states("k6") == ["TASK_STARTING", "TASK_KILLED"]
        for stdout in (setup.tmp / "sandbox" / "tasks").glob("k6.*/stdout"):
            assert stdout.read_text() == ""
        wait(lambda: not list((setup.runtime / "containers").iterdir()))


class TestTaskGroups:
    def test_a_failing_task_kills_its_group(self, setup: Setup) -> None:
        """One task of a LAUNCH_GROUP exits 1: the other is killed (TASK_KILLED), as the
        default executor does, not left running."""
        agent = started(setup)
        agent.launch_group(
            [
                kill_policy(app_task(STUBBORN, agent, "g-long"), 0.5),
                app_task(dict(CHECK_APP, cmd="sleep 1; exit 1"), agent, "g-fails"),
            ]
        )
        agent.wait_for("g-fails", "TASK_FAILED")
        agent.wait_for("g-long", "TASK_KILLED", timeout=10)
        wait(lambda: not list((setup.runtime / "containers").iterdir()))

    def test_a_task_that_cannot_launch_kills_its_group(self, setup: Setup) -> None:
        agent = started(setup)
        missing = dict(CHECK_APP, secrets={"db": {"source": "/exec/nothing@password"}})
        agent.launch_group(
            [app_task(SLEEPING, agent, "h-long"), app_task(missing, agent, "h-missing")]
        )
        update = agent.wait_for("h-missing", "TASK_FAILED")
        assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        agent.wait_for("h-long", "TASK_KILLED", timeout=10)

    def test_killing_one_task_kills_its_group(self, setup: Setup) -> None:
        agent = started(setup)
        agent.launch_group([app_task(SLEEPING, agent, "i-1"), app_task(SLEEPING, agent, "i-2")])
        agent.wait_for("i-1", "TASK_RUNNING")
        agent.wait_for("i-2", "TASK_RUNNING")
        agent.kill("i-1")
        agent.wait_for("i-1", "TASK_KILLED")
        agent.wait_for("i-2", "TASK_KILLED")

    def test_a_finished_task_leaves_its_group_running(self, setup: Setup) -> None:
        agent = started(setup)
        agent.launch_group(
            [app_task(dict(CHECK_APP, cmd="true"), agent, "j-1"), app_task(SLEEPING, agent, "j-2")]
        )
        agent.wait_for("j-1", "TASK_FINISHED")
        time.sleep(1)
        assert agent.states("j-2") == ["TASK_STARTING", "TASK_RUNNING"]
        agent.kill("j-2")
        agent.wait_for("j-2", "TASK_KILLED")

    def test_a_groups_tasks_share_one_network(self, setup: Setup) -> None:
        """With the network isolator (mode none), the tasks of a LAUNCH_GROUP share one
        network namespace, as the default executor's nested containers share its
        container's; a task of a LAUNCH gets one of its own; none is left."""
        with setup.config.open("a") as config:
            config.write(
                'isolation = "network,environment_secret,volume_secret"\n'
                '[isolators.network]\nmode = "none"\n'
            )
        agent = started(setup)
        netns = dict(CHECK_APP, cmd=f"{CHECK_APP['cmd']}; readlink /proc/self/ns/net; sleep 60")
        agent.launch_group([app_task(netns, agent, "n-1"), app_task(netns, agent, "n-2")])
        agent.launch(app_task(netns, agent, "n-3"))
        tasks = setup.tmp / "sandbox" / "tasks"

        def seen(task_id: str) -> str:
            for stdout in tasks.glob(f"{task_id}.*/stdout"):
                lines = stdout.read_text().splitlines()
                if len(lines) == 2:
                    return lines[1]
            return ""

        wait(lambda: all(seen(t) for t in ("n-1", "n-2", "n-3")), timeout=60)
        host = os.readlink("/proc/self/ns/net")
        assert seen("n-1") == seen("n-2") != seen("n-3")
        assert host not in {seen("n-1"), seen("n-3")}
        assert len(network_namespaces(setup.runtime)) == 2
        for task_id in ("n-1", "n-3"):
            agent.kill(task_id)
        for task_id in ("n-1", "n-2", "n-3"):
            agent.wait_for(task_id, "TASK_KILLED")
        wait(lambda: not list((setup.runtime / "containers").iterdir()))
        assert network_namespaces(setup.runtime) == []


def network_namespaces(runtime: Path) -> list[str]:
    prefix = namespace_prefix(runtime)
    return [name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)]


class TestShutdown:
    def test_a_stubborn_task_is_killed_within_the_grace_period(self, setup: Setup) -> None:
        """SHUTDOWN with a 3 s grace period: the task ignoring SIGTERM gets its
        TASK_KILLED, the executor exits by itself, and no runtime state is left."""
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        process = setup.start(
            agent,
            bootstrap=bootstrap,
            environment={"MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "3secs"},
        )
        assert agent.subscribed.wait(30)
        agent.launch(app_task(STUBBORN, agent, "s1"))
        ready(setup, agent, "s1")
        agent.shutdown()
        agent.wait_for("s1", "TASK_KILLED", timeout=3.0)
        assert process.wait(timeout=10) == 0, setup.log()
        assert not list((setup.runtime / "containers").iterdir())

    def test_a_task_still_resolving_never_starts(self, setup: Setup) -> None:
        """SHUTDOWN while a task's secrets are being resolved (a slow store): the task
        gets TASK_KILLED, never TASK_RUNNING, and its command never runs."""
        plugins.install_resolver(setup.tmp / "site", "slow", plugins.SLOW.replace("{seconds}", "4"))
        agent = setup.agent()
        process = setup.start(
            agent,
            environment={
                "PYTHONPATH": str(setup.tmp / "site"),
                "MESOS_SECRETS_RESOLVER": "slow",
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "2secs",
            },
        )
        assert agent.subscribed.wait(30), setup.log()
        agent.launch(app_task(dict(CHECK_APP, cmd="echo ran"), agent, "s2"))
        agent.wait_for("s2", "TASK_STARTING")
        agent.shutdown()
        agent.wait_for("s2", "TASK_KILLED", timeout=2.0)
        assert process.wait(timeout=10) == 0, setup.log()
        time.sleep(4)  # past the slow resolution: had the launch gone on, it ran by now
        assert "TASK_RUNNING" not in agent.states("s2")
        for stdout in (setup.tmp / "sandbox" / "tasks").glob("s2.*/stdout"):
            assert stdout.read_text() == ""
