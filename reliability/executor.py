"""Launches through the framework executor: ``mesos-secrets-executor`` against the tests'
agent double (:mod:`tests.agent`, which follows the v1 executor API), authenticated with
an executor token and a one-time bootstrap token for OpenBao, as Mesos would start it.

Each launch starts a fresh executor, sends it a LAUNCH (an app, or an app in a private
image whose pull secret the executor reads) or a LAUNCH_GROUP (a pod of two tasks), waits
for the tasks' terminal states, then SHUTDOWN and the executor's exit. An executor killed
mid-launch is followed by a fresh one on the node (:func:`restart`), which recovers what
the killed one left; the token the killed one held is revoked by its framework (here,
the suite), as no one else knows it.

A task ends ``succeeded`` on TASK_FINISHED (its own checks of its secrets passed),
``failed_clearly`` on TASK_FAILED / TASK_ERROR / TASK_KILLED with a one-line message,
``hung`` when no terminal state comes by the deadline. The status updates and the
executor's log are the launch's output, swept for the canaries like ``run``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from mesos_secrets.framework import BOOTSTRAP_ENV, executor_info, launch_json, mint_bootstrap
from mesos_secrets.marathon import parse_app
from mesos_secrets.testing import canary
from mesos_secrets.tokens import mint_executor_token
from tests.agent import Agent

from . import sweep
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

__all__ = ["FAULTS", "IMAGE_FAULTS", "executor_launch", "prepare_lab", "restart"]

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
#: The faults an app in a private image is launched under through the executor.
IMAGE_FAULTS = tuple(FAULTS)


def prepare_lab(lab: Lab, *, image: bool = False) -> None:
    """What every executor launch needs first: the policy of its tokens, its
    configuration (``image``: the one with the image store, the registry started)."""
    if not getattr(lab, "executor_policy", False):
        client = lab.bao.client()
        try:
            client.sys.create_or_update_policy(
                POLICY, 'path "secret/data/reliability/*" { capabilities = ["read"] }'
            )
        finally:
            client.adapter.close()
        lab.executor_policy = True  # type: ignore[attr-defined]
    _config(lab, image=image)


def _config(lab: Lab, *, image: bool) -> Path:
    """The executors' configuration: the lab's runtime directory, audit trail and
    resolver deadline; ``image``: its image store and registry CA too."""
    config = lab.directory / ("executor-images.toml" if image else "executor.toml")
    if not config.exists():
        text = f'runtime_dir = "{lab.runtime}"\n' + lab._base_config()
        if image:
            registry = lab.registry()
            text += (
                f'[images]\nstore = "{lab.directory / "images"}"\n'
                f'ca_bundle = "{registry.ca.ca.cert}"\n'
            )
        config.write_text(text)
    return config


def _tasks(
    kind: str,
    name: str,
    values: tuple[str, str],
    marker: str,
    linger: float,
    number: int,
    image: str,
) -> list[dict[str, Any]]:
    spec = _spec("image" if image else "app", name, values[0], values[1], marker, linger, image)
    spec["id"] = "/reliability/exec"
    info = executor_info(f"reliability-executor-{number}", framework_id=FID)
    count = 2 if kind == "pod" else 1
    return [
        launch_json(parse_app(spec).to_task_info(task_id=f"e{number}-{i}"), info, agent_id="a1")
        for i in range(count)
    ]


@attrs.define
class _Executor:
    """An executor started for a launch, with the agent double it talks to."""

    number: int
    agent: Agent
    process: subprocess.Popen[bytes]
    sandbox: Path
    log: Path
    #: The tokens minted for it (only looked up when it is to be killed).
    tokens: frozenset[str]


def _start(lab: Lab, number: int, *, image: bool, track_tokens: bool = False) -> _Executor:
    """A fresh executor, with a one-time bootstrap token of its own, as Mesos starts one."""
    eid = f"reliability-executor-{number}"
    before = sweep.tokens(lab) if track_tokens else frozenset()
    client = lab.bao.client()
    try:
        bootstrap = mint_bootstrap(client, policies=[POLICY], ttl="10m", wrap_ttl="60s")
    finally:
        client.adapter.close()
    minted = sweep.tokens(lab) - before if track_tokens else frozenset()
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
    config = _config(lab, image=image)
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
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(EXECUTOR)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return _Executor(number, agent, process, sandbox, log, minted)


def _stop(started: _Executor) -> None:
    if started.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.process.pid, signal.SIGKILL)
        started.process.wait()
    started.agent.stop()


def executor_launch(
    lab: Lab, kind: str, fault: str, rng: random.Random, *, fresh_pull: bool = True
) -> Launched:
    """One launch through a fresh executor, with ``fault`` injected. ``kind``: an app,
    a pod, or an app in a private image (pulled again when ``fresh_pull``)."""
    image = kind == "image"
    prepare_lab(lab, image=image)
    started_at = time.monotonic()
    number = lab.next_number()
    values = (canary(), canary())
    marker = f"reliability-task-{number}-{rng.getrandbits(32):08x}"
    name = f"/reliability/e{number}"
    fields = {"password": values[0].encode(), "file": values[1].encode()}
    reference = ""
    if image:
        fields["pull"] = lab.pull_secret()
        reference = f"{lab.registry().host}/private/busybox:latest"
        if fresh_pull:
            shutil.rmtree(lab.directory / "images", ignore_errors=True)
    if fault != "missing-secret":
        lab.put("vault", name, fields)
    started = _start(lab, number, image=image, track_tokens=fault == "executor-killed")
    linger = {"task-killed": 30.0, "executor-killed": 30.0}.get(fault, 0.0)
    tasks = _tasks(kind, name, values, marker, linger, number, reference)
    canaries = values + ((lab.registry_password,) if image else ())
    live = Live.of(lab, kind, marker, rng, canaries)
    live.process = started.process
    try:
        outcome = _drive(started.agent, live, kind, fault, tasks)
    finally:
        _stop(started)
    if live.injected is not None and live.injected.startswith("killed the executor"):
        _revoke(lab, started.tokens)  # as its framework would, on hearing it is gone
    outcome.seconds = round(time.monotonic() - started_at, 3)
    process, log = started.process, started.log
    written = log.read_bytes()
    if any(crash in written for crash in CRASHES):
        outcome.result, outcome.detail = "failed_unclearly", "a traceback or a crash in its log"
    elif outcome.result != "hung" and fault != "executor-killed" and process.returncode != 0:
        outcome.result = "failed_unclearly"
        outcome.detail = f"the executor exited {process.returncode} after SHUTDOWN"
    outcome.expected = outcome.result in FAULTS[fault]
    output = json.dumps(started.agent.updates).encode() + b"\n" + written
    return Launched(outcome, canaries, started.sandbox, output)


def _revoke(lab: Lab, accessors: frozenset[str]) -> None:
    client = lab.bao.client()
    try:
        for accessor in accessors:
            with contextlib.suppress(Exception):  # gone already (a wrapping token unwrapped)
                client.auth.token.revoke_accessor(accessor)
    finally:
        client.adapter.close()


def restart(lab: Lab, *, image: bool) -> Outcome:
    """A fresh executor on the node after one was killed: it recovers the runtime
    directory (and the image store) as it starts, then is shut down. Its outcome:
    ``succeeded`` when it subscribed and exited 0 with nothing crashing in its log."""
    prepare_lab(lab, image=image)
    started_at = time.monotonic()
    started = _start(lab, lab.next_number(), image=image)
    result, detail = "succeeded", ""
    try:
        if not started.agent.subscribed.wait(30):
            result, detail = "failed_unclearly", "the restarted executor did not subscribe"
        else:
            started.agent.shutdown()
            try:
                started.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                result, detail = "hung", "the restarted executor did not exit after SHUTDOWN"
    finally:
        _stop(started)
    written = started.log.read_bytes()
    if result == "succeeded" and (
        started.process.returncode != 0 or any(crash in written for crash in CRASHES)
    ):
        result = "failed_unclearly"
        detail = (
            f"the restarted executor exited {started.process.returncode}: "
            + (written.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        )
    return Outcome(
        kind="image" if image else "app",
        store="executor",
        fault="restart",
        result=result,
        seconds=round(time.monotonic() - started_at, 3),
        exit_status=0 if result == "succeeded" else 1,
        detail=detail,
        expected=result == "succeeded",
    )


def _drive(agent: Agent, live: Live, kind: str, fault: str, tasks: list[dict[str, Any]]) -> Outcome:
    process = live.process

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
    ids = [task["task_id"]["value"] for task in tasks]
    if kind == "pod":
        agent.launch_group(tasks)
    else:
        agent.launch(tasks[0])
    injected = None
    if fault == "task-killed":
        injected = live.injected = _kill_task(live)
    elif fault == "executor-killed":

        def kill() -> None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

        injected = live.injected = live.strike(0.6, kill, "killed the executor")
    killed = (injected or "").startswith("killed the executor")
    deadline = time.monotonic() + DEADLINE_S
    while True:
        finals = {i: [s for s in agent.states(i) if s in TERMINAL] for i in ids}
        if all(finals.values()) or killed:
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
    if killed:
        outlived = outliving(live.marker)
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
