"""The executor when its agent restarts, refuses calls or is gone: as Mesos' executor
library (``src/executor/executor.cpp``) and executors (``src/launcher/executor.cpp``,
``default_executor.cpp``) behave, driven by the agent double's restarts.

Durations are small (a backoff of at most 0.5 s, outages of 1-3 s); timing assertions
check a bound with a generous margin, never speed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.driver import Reconnection, parse_duration
from mesos_secrets.errors import ConfigError
from mesos_secrets.testing import canary

from .agent import Agent
from .bao import Bao
from .conftest import requires_root
from .residue import processes_holding
from .test_executor import CHECK_APP, EID, Setup, app_task, put, wait

BACKOFF_MAX = 0.5
MARGIN = 1.0


@pytest.fixture
def setup(tmp_path: Path, bao: Bao) -> Iterator[Setup]:
    s = Setup(tmp_path, bao)
    yield s
    s.close()


def started(
    setup: Setup, value: str, *, environment: dict[str, str] | None = None, **agent: Any
) -> tuple[Agent, subprocess.Popen[bytes]]:
    """An agent double (with ``agent`` options) and a subscribed executor; ``exec/db``
    holds ``value``."""
    put(setup.bao, "exec/db", {"password": value})
    bootstrap = setup.bootstrap()
    double = setup.agent(bootstrap=bootstrap, **agent)
    process = setup.start(
        double,
        bootstrap=bootstrap,
        environment=double.executor_environment() | (environment or {}),
    )
    assert double.subscribed.wait(30), setup.log()
    return double, process


def checkpointing(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "checkpoint": True,
        "recovery_timeout": "30secs",
        "backoff_max": f"{int(BACKOFF_MAX * 1000)}ms",
    }
    return options | overrides


def sleeping(agent: Agent, task_id: str, seconds: float = 60) -> None:
    agent.launch(app_task(dict(CHECK_APP, cmd=f"sleep {seconds}"), agent, task_id))
    agent.wait_for(task_id, "TASK_RUNNING")


class TestDurations:
    """MESOS_RECOVERY_TIMEOUT and MESOS_SUBSCRIPTION_BACKOFF_MAX, as stout parses them."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("2secs", 2.0), ("500ms", 0.5), ("1.5mins", 90.0), ("15mins", 900.0), ("1hrs", 3600.0)],
    )
    def test_units(self, text: str, seconds: float) -> None:
        assert parse_duration(text, "X") == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "2", "2s", "2 secs", "secs", "-1secs", "1..2secs"])
    def test_not_durations(self, text: str) -> None:
        with pytest.raises(ConfigError, match="^X: .* is not a duration"):
            parse_duration(text, "X")

    @pytest.mark.parametrize("value", ["0", "true", "yes", ""])
    def test_checkpointing_only_for_1(self, value: str) -> None:
        """pymesos takes any non-empty value for on; the library only "1"."""
        assert not Reconnection.from_environment({"MESOS_CHECKPOINT": value}).checkpoint
        on = Reconnection.from_environment(
            {
                "MESOS_CHECKPOINT": "1",
                "MESOS_RECOVERY_TIMEOUT": "15mins",
                "MESOS_SUBSCRIPTION_BACKOFF_MAX": "2secs",
            }
        )
        assert (on.checkpoint, on.recovery_timeout, on.backoff_max) == (True, 900.0, 2.0)

    def test_checkpointing_without_its_variables(self, setup: Setup) -> None:
        """As the library, which exits when the agent left them out."""
        agent = setup.agent()
        process = setup.start(agent, environment={"MESOS_CHECKPOINT": "1"})
        assert process.wait(timeout=30) == 1
        assert "MESOS_RECOVERY_TIMEOUT is not set" in setup.log()

    def test_a_malformed_shutdown_grace_period(self, setup: Setup) -> None:
        """Read as the other durations: one line naming it (pymesos asserted)."""
        agent = setup.agent()
        environment = {"MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "soon"}
        process = setup.start(agent, environment=environment)
        assert process.wait(timeout=30) == 1
        assert setup.log().splitlines() == [
            "mesos-secrets-executor: MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD: 'soon' is not a "
            "duration (a number and one of 'ns', 'us', 'ms', 'secs', 'mins', 'hrs', 'days', "
            "'weeks')"
        ]


@requires_root
class TestAgentRestart:
    def test_reconnects_within_the_backoff_max(self, setup: Setup) -> None:
        """After an outage, the executor subscribes again within
        MESOS_SUBSCRIPTION_BACKOFF_MAX of the agent's return (pymesos: 2, 4, 8… s), and
        its task, still running, is killed as usual through the new stream."""
        agent, _ = started(setup, canary(), **checkpointing())
        sleeping(agent, "r1")
        agent.restart(down=2.6)
        back = agent.up_since
        resubscribed = agent.wait_for_subscription(back)
        assert resubscribed - back < BACKOFF_MAX + MARGIN, setup.log()
        wait(lambda: "re-registered with the agent" in setup.log(), timeout=10)
        assert "disconnected from the agent" in setup.log()
        agent.kill("r1")
        agent.wait_for("r1", "TASK_KILLED", timeout=30)

    def test_update_sent_while_the_agent_is_down(self, setup: Setup) -> None:
        """A task that ends while the agent is away: its TASK_FINISHED is kept and
        reaches the agent in the next SUBSCRIBE's unacknowledged_updates."""
        agent, _ = started(setup, canary(), **checkpointing())
        sleeping(agent, "d1", seconds=1)
        down = time.monotonic()
        agent.restart(down=3)
        agent.wait_for_subscription(down)
        subscribe = agent.subscriptions_since(down)[0]["subscribe"]
        states = [u["status"]["state"] for u in subscribe["unacknowledged_updates"]]
        assert states[-1:] == ["TASK_FINISHED"], setup.log()
        agent.wait_for("d1", "TASK_FINISHED", timeout=10)
        assert agent.states("d1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]

    def test_unacknowledged_updates_and_tasks(self, setup: Setup) -> None:
        """Updates the agent did not acknowledge, and the task none of whose updates it
        acknowledged, are in the re-SUBSCRIBE; once acknowledged, they are not."""
        agent, _ = started(setup, canary(), **checkpointing())
        agent.acknowledging = False
        sleeping(agent, "u1")
        sent = {u["uuid"] for u in agent.updates if u["task_id"]["value"] == "u1"}
        agent.acknowledging = True
        down = time.monotonic()
        agent.restart(down=1)
        agent.wait_for_subscription(down)
        subscribe = agent.subscriptions_since(down)[0]["subscribe"]
        assert {u["status"]["uuid"] for u in subscribe["unacknowledged_updates"]} == sent
        assert [t["task_id"]["value"] for t in subscribe["unacknowledged_tasks"]] == ["u1"]
        assert "TASK_LOST" not in agent.states("u1")

        # The agent acknowledged them on the new stream: the next SUBSCRIBE is empty.
        time.sleep(1)
        down = time.monotonic()
        agent.restart(down=1)
        agent.wait_for_subscription(down)
        subscribe = agent.subscriptions_since(down)[0]["subscribe"]
        assert subscribe == {"unacknowledged_tasks": [], "unacknowledged_updates": []}
        agent.kill("u1")
        agent.wait_for("u1", "TASK_KILLED", timeout=30)

    @pytest.mark.parametrize("code", [503, 404])
    def test_agent_not_ready_after_restart(self, setup: Setup, code: int) -> None:
        """503 (the agent still recovering) or 404 (its routes not set up yet): SUBSCRIBE
        is retried every second, neither in a busy loop nor given up on."""
        agent, _ = started(setup, canary(), **checkpointing())
        sleeping(agent, "n1")
        down = time.monotonic()
        agent.restart(down=1, unavailable=3, code=code)
        ready = agent.up_since + 3
        resubscribed = agent.wait_for_subscription(ready)
        assert resubscribed - ready < 1 + 2 * MARGIN
        assert 2 <= agent.refusals.count(code) <= 8, agent.refusals  # pymesos: hundreds
        assert len(agent.subscriptions_since(down)) == 1  # the ones refused are not recorded
        agent.kill("n1")
        agent.wait_for("n1", "TASK_KILLED", timeout=30)

    @pytest.mark.parametrize("value", ["0", "true"])
    def test_no_checkpointing_shuts_down(self, setup: Setup, value: str) -> None:
        """Checkpointing is on only for MESOS_CHECKPOINT=1: otherwise a disconnection
        ends the executor (status 1), its task killed and cleaned up, no retry."""
        secret = canary()
        agent, process = started(setup, secret, environment={"MESOS_CHECKPOINT": value})
        sleeping(agent, "c1")
        down = time.monotonic()
        agent.restart(down=1)
        assert process.wait(timeout=30) == 1, setup.log()
        assert "framework checkpointing is off" in setup.log()
        assert not processes_holding(secret)
        assert not list((setup.runtime / "containers").iterdir())
        time.sleep(BACKOFF_MAX + MARGIN)
        assert not agent.subscriptions_since(down)

    def test_recovery_timeout(self, setup: Setup) -> None:
        """The agent does not come back within MESOS_RECOVERY_TIMEOUT: the executor kills
        its task, cleans up and exits with status 1, saying why."""
        secret = canary()
        agent, process = started(setup, secret, **checkpointing(recovery_timeout="2secs"))
        sleeping(agent, "t1")
        gone = time.monotonic()
        agent.crash()
        assert process.wait(timeout=30) == 1, setup.log()
        assert time.monotonic() - gone < 2 + 10  # the timeout, then shutting the task down
        assert "not subscribed again within MESOS_RECOVERY_TIMEOUT (2secs)" in setup.log()
        assert not processes_holding(secret)
        assert not list((setup.runtime / "containers").iterdir())


@requires_root
class TestRefusedCalls:
    def test_401_on_update_keeps_the_updates(self, setup: Setup) -> None:
        """The agent refuses UPDATE: said once, clearly; the updates are kept and reach
        the agent with the next SUBSCRIBE."""
        agent, _ = started(setup, canary(), **checkpointing())
        agent.refuse("UPDATE", 401)
        agent.launch(app_task(dict(CHECK_APP, cmd="true"), agent, "a1"))
        wait(lambda: agent.refusals.count(401) >= 3)
        time.sleep(0.5)
        log = setup.log()
        lines = [line for line in log.splitlines() if "401 Unauthorized" in line]
        assert len(lines) == 1, log
        assert (
            "the agent refused the executor's UPDATE (401 Unauthorized; it sent its token)"
            in (lines[0])
        )
        assert "kept" in lines[0]
        assert "Traceback" not in log
        assert not agent.states("a1")

        agent.refuse("UPDATE", None)
        agent.restart(down=1)
        agent.wait_for("a1", "TASK_FINISHED", timeout=10)
        assert agent.states("a1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]

    def test_refused_subscribe_is_one_line(self, setup: Setup) -> None:
        """A 401 to SUBSCRIBE: one line saying so, not pymesos' thread abort first."""
        agent = setup.agent()
        process = setup.start(agent, token=None)
        assert process.wait(timeout=60) == 1
        log = setup.log()
        assert [line for line in log.splitlines() if "401" in line] == [
            "mesos-secrets-executor: the agent refused the executor (401 Unauthorized; "
            'it sent no token): Bearer realm="mesos-agent-executor"'
        ]
        assert "Thread abort" not in log
        assert "Error" not in log


@requires_root
def test_status_update_fields(setup: Setup) -> None:
    """Every update carries the executor's ID and a float timestamp (TaskStatus'
    ``timestamp`` is a double of seconds), as Mesos' executors set them."""
    agent, _ = started(setup, canary())
    before = time.time()
    agent.launch(app_task(dict(CHECK_APP, cmd="true"), agent, "f1"))
    agent.wait_for("f1", "TASK_FINISHED")
    for update in agent.updates:
        assert update["executor_id"] == {"value": EID}
        assert isinstance(update["timestamp"], float)
        assert before - 1 < update["timestamp"] < time.time() + 1
