"""mesos-secrets-executor against a test agent, with OpenBao and a wrapped bootstrap token."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.framework import BOOTSTRAP_ENV, executor_info, launch_json, mint_bootstrap
from mesos_secrets.marathon import parse_app
from mesos_secrets.testing import canary, leaks
from mesos_secrets.tokens import mint, mint_executor_token, verify

from . import plugins
from .agent import Agent
from .bao import Bao
from .conftest import mounts_under, requires_root
from .node_agent import NodeAgent, request
from .plugins import install_resolver
from .residue import processes_holding
from .test_run import sha

EXECUTOR = Path(sys.executable).parent / "mesos-secrets-executor"
ROOT = Path(__file__).resolve().parent.parent
KEY = b"k" * 32
FID, EID = "framework-1", "executor-1"


def test_golden_token() -> None:
    """libprocess' JWTTest.Stringify vector, reproduced exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about the 6-byte test key
        token = mint({"exp": 9999999999, "sub": "foo"}, "secret")
    assert token == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjk5OTk5OTk5OTksInN1YiI6ImZvbyJ9"
        ".7dwSK1mIRKqJTPQT8-AGnI-r8nnefw2hhai3kgBg7bs"
    )


def test_executor_token_claims() -> None:
    """An agent's token: string claims fid, eid, cid, nothing else."""
    token = mint_executor_token(KEY, FID, EID, "c1")
    assert verify(token, KEY) == {"cid": "c1", "eid": EID, "fid": FID}


class Setup:
    """An agent double, an executor process, and the secrets they use."""

    def __init__(self, tmp_path: Path, bao: Bao) -> None:
        self.tmp = tmp_path
        self.bao = bao
        self.runtime = tmp_path / "runtime"
        self.config = tmp_path / "executor.toml"
        self.config.write_text(f'runtime_dir = "{self.runtime}"\n')
        self.agents: list[Agent] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        root = bao.client()
        root.sys.create_or_update_policy(
            "executor-read", 'path "secret/data/exec/*" { capabilities = ["read"] }'
        )

    def running(self, value: str) -> Agent:
        """``exec/db`` holds ``value``; an executor is started and subscribed."""
        put(self.bao, "exec/db", {"password": value})
        bootstrap = self.bootstrap()
        agent = self.agent(bootstrap=bootstrap)
        self.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30), self.log()
        return agent

    def bootstrap(self) -> Any:
        return mint_bootstrap(
            self.bao.client(), policies=["executor-read"], ttl="10m", wrap_ttl="60s"
        )

    def agent(
        self, container_id: str = "container-1", bootstrap: Any = None, **kwargs: Any
    ) -> Agent:
        info = executor_info(
            EID, framework_id=FID, bootstrap=bootstrap, environment={"VAULT_ADDR": self.bao.address}
        )
        agent = Agent(
            key=KEY,
            framework_id=FID,
            executor_id=EID,
            container_id=container_id,
            executor_info=info.to_json(),
            **kwargs,
        )
        self.agents.append(agent)
        return agent

    def start(
        self,
        agent: Agent,
        *,
        token: str | None = "valid",
        bootstrap: Any = None,
        sandbox: str = "sandbox",
        environment: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        directory = self.tmp / sandbox
        directory.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ["PATH"],
            "MESOS_AGENT_ENDPOINT": agent.address,
            "MESOS_FRAMEWORK_ID": FID,
            "MESOS_EXECUTOR_ID": EID,
            "MESOS_DIRECTORY": str(directory),
            "MESOS_SANDBOX": str(directory),
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "10secs",
            "MESOS_SECRETS_CONFIG": str(self.config),
            "MESOS_SECRETS_RESOLVER": "vault",
            "VAULT_ADDR": self.bao.address,
        }
        if token == "valid":
            env["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"] = mint_executor_token(
                KEY, FID, EID, agent.container_id
            )
        elif token is not None:
            env["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"] = token
        if bootstrap is not None:
            # What the agent does with a VALUE secret in the ExecutorInfo's environment.
            env[BOOTSTRAP_ENV] = bootstrap.value.data.reveal().decode()
        env.update(environment or {})
        # The executor imports this checkout's code, whichever the venv was installed from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = (directory / "executor.log").open("ab")
        process = subprocess.Popen(
            [str(EXECUTOR)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    def through(self, node: NodeAgent) -> tuple[Agent, subprocess.Popen[bytes]]:
        """An executor whose resolver is the node agent ``node`` (no store of its own),
        subscribed."""
        agent = self.agent()
        process = self.start(
            agent,
            environment={
                "MESOS_SECRETS_RESOLVER": "agent",
                "MESOS_SECRETS_AGENT_SOCKET": str(node.socket),
                "VAULT_ADDR": "",
            },
        )
        assert agent.subscribed.wait(30), self.log()
        return agent, process

    def log(self, sandbox: str = "sandbox") -> str:
        return (self.tmp / sandbox / "executor.log").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for agent in self.agents:
            agent.stop()


@pytest.fixture
def setup(tmp_path: Path, bao: Bao) -> Iterator[Setup]:
    s = Setup(tmp_path, bao)
    yield s
    s.close()


def put(bao: Bao, path: str, fields: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=fields)


def app_task(spec: dict[str, Any], agent: Agent, task_id: str) -> dict[str, Any]:
    task = parse_app({"id": "/exec/app", **spec}).to_task_info(task_id=task_id)
    info = executor_info(EID, framework_id=FID)
    return launch_json(task, info, agent_id="agent-1")


CHECK_APP: dict[str, Any] = {
    "cmd": "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha("exec-db-password")}',
            f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha("exec-db-password")}',
            'test -z "${MESOS_EXECUTOR_AUTHENTICATION_TOKEN+set}"',
            f'test -z "${{{BOOTSTRAP_ENV}+set}}"',
            "echo task-ok",
        ]
    ),
    "env": {"DB": {"secret": "db"}},
    "secrets": {"db": {"source": "/exec/db@password"}},
    "container": {"type": "MESOS", "volumes": [{"containerPath": "secrets/db", "secret": "db"}]},
}


def wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@requires_root
class TestTasks:
    def test_env_and_file_from_openbao(self, setup: Setup) -> None:
        """Bootstrap unwrapped once, task runs with its secrets, updates in order, token on every call."""
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        process = setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30), setup.log()
        agent.launch(app_task(CHECK_APP, agent, "t1"))
        agent.wait_for("t1", "TASK_FINISHED")
        assert agent.states("t1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
        (sandbox,) = (setup.tmp / "sandbox" / "tasks").glob("t1.*")
        assert (sandbox / "stdout").read_text() == "task-ok\n"
        assert (setup.tmp / "sandbox" / "tasks").stat().st_mode & 0o777 == 0o711
        token = mint_executor_token(KEY, FID, EID, agent.container_id)
        assert agent.calls
        assert all(header == f"Bearer {token}" for _, header in agent.calls)
        assert {kind for kind, _ in agent.calls} >= {"SUBSCRIBE", "UPDATE"}
        agent.shutdown()
        assert process.wait(timeout=20) == 0
        assert not mounts_under(setup.tmp)

    def test_through_the_node_agent(self, setup: Setup) -> None:
        """The executor holds no store credentials: its secrets come from the node agent,
        which knows it by its Mesos executor token. The agent's audit trail has the
        framework, executor and container ids the token proves."""
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        key = setup.tmp / "executor-key"
        key.write_bytes(KEY)
        key.chmod(0o600)
        options = f'address = "{setup.bao.address}"\ntoken = "{setup.bao.root_token}"'
        node = NodeAgent(
            setup.tmp / "node-agent",
            resolver="vault",
            agent=f'executor_secret_key = "{key}"',
            extra=f"[resolvers.vault]\n{options}\n",
        )
        try:
            agent, process = setup.through(node)
            agent.launch(app_task(CHECK_APP, agent, "t1"))
            agent.wait_for("t1", "TASK_FINISHED")
            # The task is gone: so are its holdings at the node agent (its leases would
            # be revoked), while the executor goes on.
            wait(lambda: request(node.socket, "GET", "/v1/status")[1]["containers"] == [], 10)
            assert process.poll() is None
            agent.shutdown()
            assert process.wait(timeout=20) == 0
            records = [r for r in node.records() if r["event"] == "resolve"]
            assert {
                (r["framework_id"], r["executor_id"], r["container_id"], r["task_id"], r["token"])
                for r in records
            } == {(FID, EID, agent.container_id, "t1", True)}
            assert all(r["outcome"] == "ok" for r in records)
            assert node.stop() == 0
        finally:
            if node.process is not None and node.process.poll() is None:
                node.stop()
            node.cleanup()

    def test_tokens_not_in_proc_environ(self, setup: Setup) -> None:
        """The agent's JWT and the bootstrap token: gone from the executor's
        /proc/<pid>/environ (os.environ.pop alone leaves the kernel's copy as it was),
        and the executor is not dumpable and writes no core."""
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        process = setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30), setup.log()
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        jwt = mint_executor_token(KEY, FID, EID, agent.container_id)
        assert jwt.encode() not in environ
        assert bootstrap.value.data.reveal() not in environ
        assert b"MESOS_AGENT_ENDPOINT=" in environ  # the rest is as it was
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert limits.split("Max core file size")[1].split()[:2] == ["0", "0"]

    def test_launch_group(self, setup: Setup) -> None:
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30)
        agent.launch_group([app_task(CHECK_APP, agent, "g1"), app_task(CHECK_APP, agent, "g2")])
        agent.wait_for("g1", "TASK_FINISHED")
        agent.wait_for("g2", "TASK_FINISHED")

    def test_replayed_bootstrap(self, setup: Setup) -> None:
        """A bootstrap already unwrapped (a replay): the tasks fail, saying why."""
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        bootstrap = setup.bootstrap()
        setup.bao.client(
            bootstrap.value.data.reveal().decode()
        ).sys.unwrap()  # someone else used it
        agent = setup.agent(bootstrap=bootstrap)
        setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30)
        agent.launch(app_task(CHECK_APP, agent, "r1"))
        update = agent.wait_for("r1", "TASK_FAILED")
        assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "replay" in update["message"]
        assert "TASK_RUNNING" not in agent.states("r1")

    def test_missing_secret_fails_the_task(self, setup: Setup) -> None:
        value = canary()
        agent = setup.running(value)
        spec = dict(CHECK_APP, secrets={"db": {"source": "/exec/nothing@password"}})
        agent.launch(app_task(spec, agent, "m1"))
        update = agent.wait_for("m1", "TASK_FAILED")
        assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "secret '/exec/nothing' not found" in update["message"]
        agent.launch(app_task(dict(CHECK_APP, cmd="false"), agent, "m2"))
        update = agent.wait_for("m2", "TASK_FAILED")
        assert update["message"] == "Command exited with status 1"
        assert not any(leaks(value, str(u)) for u in agent.updates)
        assert not leaks(value, setup.log())

    def test_kill_mid_task(self, setup: Setup) -> None:
        """KILL stops the task: TASK_KILLED, and no mount is left."""
        put(setup.bao, "exec/db", {"password": "exec-db-password"})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30)
        agent.launch(app_task(dict(CHECK_APP, cmd="sleep 60"), agent, "k1"))
        agent.wait_for("k1", "TASK_RUNNING")
        agent.kill("k1")
        agent.wait_for("k1", "TASK_KILLED", timeout=30)
        assert not mounts_under(setup.tmp)
        wait(lambda: not list((setup.runtime / "containers").iterdir()))

    def test_sigkill_then_recover(self, setup: Setup) -> None:
        """The executor dies by SIGKILL mid-task: every process of the task dies with it
        (the shell and the one it started, both holding the secret), at once; a new
        executor then removes the state the first one left."""
        value = canary()
        put(setup.bao, "exec/db", {"password": value})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        process = setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30)
        agent.launch(app_task(dict(CHECK_APP, cmd="sleep 60 & sleep 60"), agent, "s1"))
        agent.wait_for("s1", "TASK_RUNNING")
        wait(lambda: len(processes_holding(value)) >= 2)  # sh and the sleeps it started
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        wait(lambda: not processes_holding(value), timeout=10)
        assert list((setup.runtime / "containers").iterdir())  # left behind

        bootstrap2 = setup.bootstrap()
        agent2 = setup.agent(container_id="container-2", bootstrap=bootstrap2)
        setup.start(agent2, bootstrap=bootstrap2, sandbox="sandbox2")
        assert agent2.subscribed.wait(30)
        wait(lambda: not list((setup.runtime / "containers").iterdir()))
        assert "cleaned up 1 container(s) left by an earlier executor" in setup.log("sandbox2")

    def test_finished_means_nothing_left(self, setup: Setup) -> None:
        """TASK_FINISHED is sent once the task's processes are all gone: a background
        process holding the secret does not outlive its task."""
        value = canary()
        agent = setup.running(value)
        agent.launch(app_task(dict(CHECK_APP, cmd="sleep 40 & exit 0"), agent, "b1"))
        agent.wait_for("b1", "TASK_FINISHED")
        assert processes_holding(value) == []


@requires_root
class TestFailuresBeforeTheTaskRuns:
    """Whatever fails before a task runs, the task ends in TASK_FAILED with Mesos' reason,
    never in TASK_STARTING forever, and nothing the failure quotes reaches the agent."""

    def test_nul_in_the_user_is_an_invalid_task(self, setup: Setup) -> None:
        agent = setup.running(canary())
        task = app_task(CHECK_APP, agent, "u1")
        task["command"]["user"] = "no\0body"
        agent.launch(task)
        update = agent.wait_for("u1", "TASK_FAILED", timeout=30)
        assert update["reason"] == "REASON_TASK_INVALID"
        assert update["message"] == (
            "/command/user: Task's `CommandInfo` is invalid: a user name must not contain NUL"
        )
        assert agent.states("u1") == ["TASK_STARTING", "TASK_FAILED"]

    def test_a_plugin_bug_fails_the_launch(self, setup: Setup) -> None:
        """A resolver plugin raises an unexpected exception quoting a value: TASK_FAILED,
        REASON_CONTAINER_LAUNCH_FAILED, the exception named by its type only; the
        executor goes on serving the next task."""
        value = canary()
        (setup.tmp / "leaky").write_text(value)
        install_resolver(setup.tmp / "site", "exploding", plugins.EXPLODING)
        agent = setup.agent()
        setup.start(
            agent,
            environment={
                "PYTHONPATH": str(setup.tmp / "site"),
                "MESOS_SECRETS_RESOLVER": "exploding",
            },
        )
        assert agent.subscribed.wait(30), setup.log()
        spec = dict(CHECK_APP, secrets={"db": {"source": f"{setup.tmp}/leaky"}})
        for task_id in ("p1", "p2"):
            agent.launch(app_task(spec, agent, task_id))
            update = agent.wait_for(task_id, "TASK_FAILED", timeout=30)
            assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
            assert update["message"] == "the executor failed to launch the task (RuntimeError)"
        assert not any(leaks(value, str(u)) for u in agent.updates)
        assert not leaks(value, setup.log())
        assert not list((setup.runtime / "containers").iterdir())

    def test_malformed_agent_events_are_not_logged(self, setup: Setup) -> None:
        """pymesos logs an event it cannot handle verbatim: a LAUNCH under the wrong key
        holds a VALUE secret (base64), which must not reach the executor's log."""
        value = canary()
        agent = setup.running(canary())
        task = parse_app(
            {"id": "/exec/app", "cmd": "true", "env": {"V": {"secret": "v"}}, "secrets": {}}
            | {"secrets": {"v": {"source": "unused"}}}
        ).to_task_info(task_id="e1")
        raw = launch_json(task, executor_info(EID, framework_id=FID), agent_id="agent-1")
        raw["command"]["environment"]["variables"][0]["secret"] = {
            "type": "VALUE",
            "value": {"data": base64.b64encode(value.encode()).decode()},
        }
        agent.send({"type": "LAUNCH", "launch_task": {"task": raw}})
        agent.send({"type": "NO_SUCH_EVENT", "no_such_event": {"task": raw}})
        agent.launch(app_task(dict(CHECK_APP, cmd="true"), agent, "after"))
        agent.wait_for("after", "TASK_FINISHED", timeout=30)
        log = setup.log()
        assert "details withheld" in log
        assert not leaks(value, log)
        assert base64.b64encode(value.encode()).decode() not in log


@requires_root
def test_acls_use_the_framework_principal(setup: Setup) -> None:
    """The agent's framework principal meets the ACLs before anything is resolved."""
    put(setup.bao, "exec/db", {"password": "exec-db-password"})
    acls = setup.tmp / "acls.json"
    acls.write_text(
        '{"access_secrets": [{"principals": {"values": ["test-principal"]}, "secrets": {"values": ["/public/**"]}}]}'
    )
    setup.config.write_text(setup.config.read_text() + f'acls = "{acls}"\n')
    bootstrap = setup.bootstrap()
    agent = setup.agent(bootstrap=bootstrap)
    setup.start(agent, bootstrap=bootstrap)
    assert agent.subscribed.wait(30)
    agent.launch(app_task(CHECK_APP, agent, "a1"))
    update = agent.wait_for("a1", "TASK_FAILED")
    assert update["message"] == "Secret /exec/db is not accessible to principal 'test-principal'"
    assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"


class TestAuthentication:
    def agent_and_start(
        self, setup: Setup, token: str | None
    ) -> tuple[Agent, subprocess.Popen[bytes]]:
        agent = setup.agent()
        return agent, setup.start(agent, token=token)

    def test_no_token(self, setup: Setup) -> None:
        _, process = self.agent_and_start(setup, None)
        assert process.wait(timeout=60) == 1
        assert "the agent refused the executor (401 Unauthorized; it sent no token)" in setup.log()
        assert "Traceback" not in setup.log().split("mesos-secrets-executor: the agent refused")[-1]

    def test_bad_signature(self, setup: Setup) -> None:
        token = mint_executor_token(b"x" * 32, FID, EID, "container-1")
        _, process = self.agent_and_start(setup, token)
        assert process.wait(timeout=60) == 1
        assert "401 Unauthorized" in setup.log()
        assert "Token signature does not match" in setup.log()
        assert token not in setup.log()

    def test_wrong_container(self, setup: Setup) -> None:
        token = mint_executor_token(KEY, FID, EID, "another-container")
        _, process = self.agent_and_start(setup, token)
        assert process.wait(timeout=60) == 1
        assert "403 Forbidden" in setup.log()
        assert "'cid' claim with the correct active ContainerID" in setup.log()

    def test_not_under_mesos(self) -> None:
        result = subprocess.run(
            [str(EXECUTOR)],
            capture_output=True,
            env={"PATH": os.environ["PATH"]},
            check=False,
            timeout=60,
        )
        assert result.returncode == 1
        assert b"not started by a Mesos agent" in result.stderr


@requires_root
@pytest.mark.slow
def test_executors_and_runs_share_a_runtime_directory(
    setup: Setup, tmp_path: Path, home: Path
) -> None:
    """Two executors launching tasks and 20 runs at once, on one runtime directory, each
    recovering as it starts: no crash, no container of one touched by another."""
    from concurrent.futures import ThreadPoolExecutor

    from resolvers.local import LocalStore

    from .test_containment import runner_in, secret_app

    put(setup.bao, "exec/db", {"password": "exec-db-password"})
    agents = []
    for n in range(2):
        bootstrap = setup.bootstrap()
        agent = setup.agent(container_id=f"container-{n}", bootstrap=bootstrap)
        setup.start(agent, bootstrap=bootstrap, sandbox=f"sandbox{n}")
        agents.append(agent)
    for agent in agents:
        assert agent.subscribed.wait(30), setup.log()
    LocalStore(home).put("/r/db", {"v": "run-secret"})

    def one_run(i: int) -> subprocess.CompletedProcess[bytes]:
        runner = runner_in(tmp_path, home, f"run{i}", setup.runtime)
        return runner.run(secret_app("/r/db", 'test "$DB" = run-secret && sleep 0.5'))

    slow_check = dict(CHECK_APP, cmd=CHECK_APP["cmd"] + " && sleep 0.5")
    with ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(one_run, i) for i in range(20)]
        for n, agent in enumerate(agents):
            for i in range(5):
                agent.launch(app_task(slow_check, agent, f"e{n}-{i}"))
        results = [future.result() for future in runs]
    for result in results:
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert b"orphan" not in result.stderr
    for n, agent in enumerate(agents):
        for i in range(5):
            agent.wait_for(f"e{n}-{i}", "TASK_FINISHED")
    assert "cleaned up" not in setup.log("sandbox0") + setup.log("sandbox1")
    wait(lambda: not list((setup.runtime / "containers").iterdir()))
