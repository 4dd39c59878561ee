"""Launches through the framework executor: ``mesos-secrets-executor`` against the tests'
agent double (:mod:`tests.agent`, which follows the v1 executor API), authenticated with
an executor token and a one-time bootstrap token for OpenBao, as Mesos would start it.

Each launch starts a fresh executor, sends it a LAUNCH (an app) or a LAUNCH_GROUP (a pod
of two tasks), waits for the tasks' terminal states, then SHUTDOWN and the executor's
exit. A task ends ``succeeded`` on TASK_FINISHED (its own checks of its secrets passed),
``failed_clearly`` on TASK_FAILED / TASK_ERROR / TASK_KILLED with a one-line message,
``hung`` when no terminal state comes by the deadline. The status updates and the
executor's log are the launch's output, swept for the canaries like ``run``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mesos_secrets.framework import BOOTSTRAP_ENV, executor_info, launch_json, mint_bootstrap
from mesos_secrets.marathon import parse_app
from mesos_secrets.testing import canary
from mesos_secrets.tokens import mint_executor_token
from tests.agent import Agent

from .launches import (
    CRASHES,
    DEADLINE_S,
    ROOT,
    Lab,
    Launched,
    Live,
    Outcome,
    _kill_task,
    _spec,
    outliving,
)

__all__ = ["FAULTS", "executor_launch"]

EXECUTOR = Path(sys.executable).parent / "mesos-secrets-executor"
KEY = b"reliability-executor-secret-key!"
FID = "reliability-framework"
TERMINAL = {
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_ERROR",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_DROPPED",
}
POLICY = "reliability-read"

#: Faults that strike while the launch runs.
DURING = ("task-killed", "executor-killed")

#: fault -> what it may end in
FAULTS: dict[str, tuple[str, ...]] = {
    "none": ("succeeded",),
    "missing-secret": ("failed_clearly",),
    "task-killed": ("failed_clearly",),
    "executor-killed": ("succeeded", "failed_clearly"),
}


def _policy(lab: Lab) -> None:
    client = lab.bao.client()
    try:
        client.sys.create_or_update_policy(
            POLICY, 'path "secret/data/reliability/*" { capabilities = ["read"] }'
        )
    finally:
        client.adapter.close()


def _tasks(
    kind: str,
    name: str,
    values: tuple[str, str],
    marker: str,
    linger: float,
    number: int,
) -> list[dict[str, Any]]:
    spec = _spec("app", name, values[0], values[1], marker, linger)
    spec["id"] = "/reliability/exec"
    info = executor_info(f"reliability-executor-{number}", framework_id=FID)
    count = 1 if kind == "app" else 2
    return [
        launch_json(parse_app(spec).to_task_info(task_id=f"e{number}-{i}"), info, agent_id="a1")
        for i in range(count)
    ]


def executor_launch(lab: Lab, kind: str, fault: str, rng: random.Random) -> Launched:
    """One launch through a fresh executor, with ``fault`` injected."""
    if not getattr(lab, "executor_policy", False):
        _policy(lab)
        lab.executor_policy = True  # type: ignore[attr-defined]
    lab.count += 1
    number = lab.count
    values = (canary(), canary())
    marker = f"reliability-task-{number}-{rng.getrandbits(32):08x}"
    name = f"/reliability/e{number}"
    if fault != "missing-secret":
        lab.put("vault", name, {"password": values[0].encode(), "file": values[1].encode()})
    eid = f"reliability-executor-{number}"
    client = lab.bao.client()
    try:
        bootstrap = mint_bootstrap(client, policies=[POLICY], ttl="10m", wrap_ttl="60s")
    finally:
        client.adapter.close()
    info = executor_info(
        eid, framework_id=FID, bootstrap=bootstrap, environment={"VAULT_ADDR": lab.bao.address}
    )
    agent = Agent(
        key=KEY,
        framework_id=FID,
        executor_id=eid,
        container_id=f"c{number}",
        executor_info=info.to_json(),
    )
    sandbox = lab.directory / "work" / f"e{number}"
    sandbox.mkdir(parents=True)
    config = sandbox.parent / "executor.toml"
    if not config.exists():
        config.write_text(f'runtime_dir = "{lab.runtime}"\n[audit]\nfile = "{lab.audit}"\n')
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "MESOS_AGENT_ENDPOINT": agent.address,
        "MESOS_FRAMEWORK_ID": FID,
        "MESOS_EXECUTOR_ID": eid,
        "MESOS_DIRECTORY": str(sandbox),
        "MESOS_SANDBOX": str(sandbox),
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
        "MESOS_SECRETS_CONFIG": str(config),
        "MESOS_SECRETS_RESOLVER": "vault",
        "VAULT_ADDR": lab.bao.address,
        "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": mint_executor_token(
            KEY, FID, eid, agent.container_id
        ),
        BOOTSTRAP_ENV: bootstrap.value.data.reveal().decode(),  # type: ignore[union-attr]
    }
    log = sandbox / "executor.log"
    started = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(EXECUTOR)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    linger = {"task-killed": 30.0, "executor-killed": 30.0}.get(fault, 0.0)
    try:
        outcome = _drive(agent, process, kind, fault, name, values, marker, linger, number, rng)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        agent.stop()
    outcome.seconds = round(time.monotonic() - started, 3)
    written = log.read_bytes()
    if any(crash in written for crash in CRASHES):
        outcome.result, outcome.detail = "failed_unclearly", "a traceback or a crash in its log"
    elif outcome.result != "hung" and fault != "executor-killed" and process.returncode != 0:
        outcome.result = "failed_unclearly"
        outcome.detail = f"the executor exited {process.returncode} after SHUTDOWN"
    outcome.expected = outcome.result in FAULTS[fault]
    output = json.dumps(agent.updates).encode() + b"\n" + written
    return Launched(outcome, values, sandbox, output)


def _drive(
    agent: Agent,
    process: subprocess.Popen[bytes],
    kind: str,
    fault: str,
    name: str,
    values: tuple[str, str],
    marker: str,
    linger: float,
    number: int,
    rng: random.Random,
) -> Outcome:
    live = Live(process, marker, rng, values)

    def outcome(result: str, detail: str) -> Outcome:
        return Outcome(
            kind=kind,
            store="executor",
            fault=fault,
            result=result,
            seconds=0.0,
            exit_status=process.poll(),
            detail=detail,
            expected=False,
            leaks=live.leaks,
            injected=live.injected if fault in DURING else "before the launch",
        )

    if not agent.subscribed.wait(30):
        return outcome("failed_unclearly", "the executor did not subscribe in 30 s")
    tasks = _tasks(kind, name, values, marker, linger, number)
    ids = [task["task_id"]["value"] for task in tasks]
    if kind == "app":
        agent.launch(tasks[0])
    else:
        agent.launch_group(tasks)
    injected = None
    if fault == "task-killed":
        injected = live.injected = _kill_task(live)
    elif fault == "executor-killed":
        time.sleep(rng.uniform(0.0, 0.6))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            injected = live.injected = "killed the executor"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        finals = {i: [s for s in agent.states(i) if s in TERMINAL] for i in ids}
        if all(finals.values()) or (injected == "killed the executor"):
            break
        if process.poll() is not None and not all(finals.values()):
            return outcome(
                "failed_unclearly",
                f"the executor exited {process.returncode} before every task ended",
            )
        if time.monotonic() > deadline:
            return outcome(
                "hung", f"no terminal state in {DEADLINE_S:g} s: {[agent.states(i) for i in ids]}"
            )
        time.sleep(0.01)
    if injected == "killed the executor":
        outlived = outliving(marker)
        if outlived:
            return outcome("failed_unclearly", f"the task (pids {outlived}) outlived its executor")
        return outcome("failed_clearly", "the executor killed (injected)")
    agent.shutdown()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return outcome("hung", "the executor did not exit within 30 s of SHUTDOWN")
    states = [finals[i][0] for i in ids]
    if all(state == "TASK_FINISHED" for state in states):
        return outcome("succeeded", "")
    messages = [
        str(u.get("message", ""))
        for u in agent.updates
        if u["task_id"]["value"] in ids and u["state"] in TERMINAL - {"TASK_FINISHED"}
    ]
    if injected == "killed the task" and "TASK_FAILED" in states:
        return outcome("failed_clearly", "the task killed (injected)")
    if messages and all(m and "\n" not in m and "Traceback" not in m for m in messages):
        return outcome("failed_clearly", f"{states[0]}: {messages[0][:300]}")
    return outcome("failed_unclearly", f"{states}: {messages[:1]}")
