"""The example scheduler builds the launch a Mesos agent expects (no Mesos needed)."""

from __future__ import annotations

import sys
from pathlib import Path

from mesos_secrets import ExecutorInfo, Secret, TaskInfo
from mesos_secrets.framework import BOOTSTRAP_ENV
from mesos_secrets.marathon import load_spec

sys.path.insert(0, str(Path(__file__).parent.parent / "examples" / "scheduler"))

from scheduler import build_launch

APP = load_spec((Path(__file__).parent.parent / "examples" / "app.json").read_bytes())


def offer(cpus: float, mem: float) -> dict[str, object]:
    return {
        "id": {"value": "o1"},
        "agent_id": {"value": "agent-7"},
        "hostname": "node7",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
    }


def test_launch_on_a_large_enough_offer() -> None:
    bootstrap = Secret.for_value(b"s.wrapped-token")
    task = build_launch(
        offer(4, 4096),
        APP,
        framework_id="fw",
        bootstrap=bootstrap,
        environment={"VAULT_ADDR": "https://v:8200"},
    )
    assert task is not None
    parsed = TaskInfo.from_json(task)
    assert parsed.agent_id == "agent-7"
    executor = parsed.executor
    assert isinstance(executor, ExecutorInfo)
    assert executor.command is not None
    assert executor.command.value == "mesos-secrets-executor"
    variables = {v.name: v for v in executor.command.environment.variables}  # type: ignore[union-attr]
    assert variables[BOOTSTRAP_ENV].secret == bootstrap
    assert variables["VAULT_ADDR"].value == "https://v:8200"
    assert all(s.is_reference for s in parsed.secrets())  # the task carries references only


def test_small_offer_is_declined() -> None:
    assert (
        build_launch(
            offer(0.5, 64), APP, framework_id="fw", bootstrap=Secret.for_value(b"x"), environment={}
        )
        is None
    )
