"""The node agent (``mesos-secrets agent``) and its client, the ``agent`` resolver.

The agent runs as the real command, in a process of its own, against the embedded store
or a real OpenBao whose audit device counts the store's reads; clients are the real
resolver, ``mesos-secrets run``, and raw requests an attacker would write.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import Secret
from mesos_secrets.acls import ACLs
from mesos_secrets.agent.cache import Answer, NodeCache
from mesos_secrets.agent.server import Agent, Caller
from mesos_secrets.agent.settings import AgentSettings
from mesos_secrets.errors import (
    ConfigError,
    ResolverError,
    ResolverUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
)
from mesos_secrets.resolver import ResolveContext, SecretResolver, resolve_all, select_field
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes
from mesos_secrets.tokens import mint_executor_token
from resolvers.agent import AgentResolver
from resolvers.local import LocalStore

from .bao import Bao, free_port
from .conftest import requires_root
from .node_agent import MESOS_SECRETS, ROOT, NodeAgent, request, resolve

CANARY = "canary-7c1f3e-agent-value"
KEY = b"executor-secret-key-for-tests-0123456789"


@pytest.fixture
def store(home: Path) -> LocalStore:
    local = LocalStore(home)
    local.put("/app/db", {"password": CANARY.encode(), "user": b"app"})
    local.put("/other/key", {"value": b"other"})
    return local


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory other users can reach (pytest's are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="mesos-secrets-agent-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory of root's outside /tmp."""
    path = Path(tempfile.mkdtemp(prefix="mesos-secrets-agent-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., NodeAgent]]:
    started: list[NodeAgent] = []

    def start(**options: Any) -> NodeAgent:
        agent = NodeAgent(tmp_path / f"agent{len(started)}", **options)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.process is not None and agent.process.poll() is None:
            assert agent.stop() == 0, agent.log.read_text()[-2000:]
        assert not agent.socket.exists(), "the agent left its socket"
        assert CANARY not in agent.log.read_text()
        agent.cleanup()


# --- the basics -------------------------------------------------------------------------


def test_resolves_through_the_agent(store: LocalStore, agents: Callable[..., NodeAgent]) -> None:
    agent = agents()
    with agent.client() as client:
        values = resolve_all(
            client,
            [
                Secret.for_reference("/app/db", "password"),
                Secret.for_value(b"inline"),
                Secret.for_reference("/app/db", "user"),
                Secret.for_reference("/missing", "x"),
            ],
            ResolveContext(task_id="web.1", principal="ops"),  # not believed: no token
        )
    assert [v.reveal() for v in values[:3]] == [CANARY.encode(), b"inline", b"app"]  # type: ignore[union-attr]
    assert isinstance(values[3], ResolverError)
    assert "/missing" in str(values[3])
    records = [r for r in agent.records() if r["event"] == "resolve"]
    assert [(r["reference"], r["outcome"], r["task_id"]) for r in records] == [
        ("/app/db", "ok", "web.1"),
        ("/app/db", "ok", "web.1"),
        ("/missing", "not_found", "web.1"),
    ]
    assert all(r["principal"] == "root" and r["uid"] == os.geteuid() for r in records)
    assert CANARY not in agent.audit.read_text()


def test_the_node_cache_answers_later_callers(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents(agent="cache_ttl = 60")
    for _ in range(3):
        with agent.client() as client:
            assert (
                client.resolve(Secret.for_reference("/app/db", "password")).reveal()
                == CANARY.encode()
            )
    hits = [r["cache_hit"] for r in agent.records() if r["event"] == "resolve"]
    assert hits == [False, True, True]


def run_through(
    socket: Path, spec: Path, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """``mesos-secrets run SPEC`` with the ``agent`` resolver on ``socket``."""
    return subprocess.run(
        [str(MESOS_SECRETS), "run", "--runtime-dir", str(tmp_path / "rt"), str(spec)],
        env=dict(
            os.environ,
            MESOS_SECRETS_RESOLVER="agent",
            MESOS_SECRETS_AGENT_SOCKET=str(socket),
            PYTHONPATH=str(ROOT),
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@requires_root
def test_run_uses_the_agent(
    outside_tmp: Path, store: LocalStore, agents: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    # Not under /tmp, which every task has a private one of anyway.
    agent = agents(directory=outside_tmp / "run")
    spec = tmp_path / "app.json"
    spec.write_text(
        json.dumps(
            {
                "id": "/web",
                # The socket is hidden from the task: with its executor's uid it could
                # ask for whatever that user may read.
                "cmd": f'test "$PW" = {CANARY} && ! test -S {agent.socket} && echo delivered',
                "env": {"PW": {"secret": "db"}},
                "secrets": {"db": {"source": "/app/db@password"}},
            }
        )
    )
    done = run_through(agent.socket, spec, tmp_path, MESOS_SECRETS_HOME=str(tmp_path / "none"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "delivered\n"
    assert not (tmp_path / "none").exists()  # the store is the agent's alone
    assert request(agent.socket, "GET", "/v1/status")[1]["containers"] == []  # released


def test_no_agent_is_a_clear_error(tmp_path: Path) -> None:
    where = tmp_path / "nothing.sock"
    with (
        AgentResolver(socket=str(where)) as client,
        pytest.raises(ResolverUnavailableError) as caught,
    ):
        client.resolve(Secret.for_reference("/app/db", "password"))
    assert str(caught.value) == (
        f"cannot reach the node agent at '{where}': no agent is running there "
        "(start one: mesos-secrets agent)"
    )


def test_no_agent_from_the_command_line(tmp_path: Path) -> None:
    spec = tmp_path / "app.json"
    spec.write_text(
        json.dumps(
            {
                "id": "/w",
                "cmd": "true",
                "env": {"A": {"secret": "s"}},
                "secrets": {"s": {"source": "/x"}},
            }
        )
    )
    where = tmp_path / "agent.sock"
    done = run_through(where, spec, tmp_path)
    assert done.returncode == 1
    assert f"cannot reach the node agent at '{where}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_agent_will_not_be_its_own_client(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot use the 'agent' resolver itself"):
        NodeAgent(tmp_path / "a", resolver="agent")


# --- who asks -----------------------------------------------------------------------------


def test_an_executor_token_proves_its_ids(
    store: LocalStore, agents: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    agent = agents(agent=f'executor_secret_key = "{key}"\nexecutor_principals = ["fw-p"]')
    token = mint_executor_token(KEY, "fw-1", "exec-1", "cont-1")
    with agent.client(executor_token=token) as client:
        # The body claims other ids: the token's win.
        context = ResolveContext(
            framework_id="fw-evil", container_id="cont-evil", task_id="t1", principal="fw-p"
        )
        assert client.resolve(Secret.for_reference("/app/db", "user"), context).reveal() == b"app"
    (record,) = [r for r in agent.records() if r["event"] == "resolve"]
    assert (record["framework_id"], record["executor_id"], record["container_id"]) == (
        "fw-1",
        "exec-1",
        "cont-1",
    )
    assert record["task_id"] == "t1"
    assert record["principal"] == "fw-p"  # an executor states its framework's
    with agent.client(executor_token=token) as client:  # one not listed: its uid's
        client.resolve(Secret.for_reference("/app/db", "user"), ResolveContext(principal="ops"))
    assert [r for r in agent.records() if r["event"] == "resolve"][-1]["principal"] == "root"
    assert record["token"] is True

    forged = mint_executor_token(
        b"not-the-agent-key-but-as-long-as-one-0123", "fw-1", "exec-1", "cont-1"
    )
    with (
        agent.client(executor_token=forged) as client,
        pytest.raises(SecretAccessDeniedError, match="Token signature does not match"),
    ):
        client.resolve(Secret.for_reference("/app/db", "user"))
    status, answer = resolve(agent.socket, {"name": "/app/db"}, Authorization="Basic x")
    assert status == 401
    assert answer["error"]["kind"] == "unauthenticated"
    denied = [r for r in agent.records() if r["event"] == "authenticate"]
    assert [r["outcome"] for r in denied] == ["denied"]


@requires_root
def test_require_token(
    reachable: Path, store: LocalStore, agents: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    """With require_token, a caller without an executor token is refused unless it is
    root, the agent's user, or a uid [agent.principals] names."""
    key = tmp_path / "key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    agent = agents(
        agent=f'require_token = true\nexecutor_secret_key = "{key}"\nsocket_group = "nogroup"',
        directory=reachable / "run",
    )
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup").gr_gid
    token = mint_executor_token(KEY, "fw", "ex", "c")
    without, with_token = as_user(
        nobody.pw_uid,
        nogroup,
        lambda: [
            resolve(agent.socket, {"name": "/app/db", "key": "user"}),
            resolve(
                agent.socket, {"name": "/app/db", "key": "user"}, Authorization=f"Bearer {token}"
            ),
        ],
    )
    assert without[0] == 401
    assert "has no executor token" in without[1]["error"]["message"]
    assert with_token[0] == 200
    with agent.client() as client:  # root
        assert client.resolve(Secret.for_reference("/app/db", "user")).reveal() == b"app"


def test_a_token_without_a_key_is_refused(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents()
    token = mint_executor_token(KEY, "fw", "ex", "c")
    with (
        agent.client(executor_token=token) as client,
        pytest.raises(SecretAccessDeniedError, match="checks no executor tokens"),
    ):
        client.resolve(Secret.for_reference("/app/db", "user"))


@requires_root
def test_a_denied_caller_is_refused_a_cached_value(
    reachable: Path, store: LocalStore, agents: Callable[..., NodeAgent], tmp_path: Path
) -> None:
    """root may read /app/*, nobody may not: nobody is refused although root's read put
    the value in the node's cache a moment before, and the refusal is in the audit."""
    acls = tmp_path / "acls.json"
    acls.write_text(
        json.dumps(
            {
                "access_secrets": [
                    {"principals": {"values": ["ops"]}, "secrets": {"values": ["/app/*"]}},
                    {"principals": {"type": "ANY"}, "secrets": {"values": ["/other/*"]}},
                ]
            }
        )
    )
    nogroup = grp.getgrnam("nogroup").gr_gid
    agent = agents(
        agent='cache_ttl = 60\nsocket_group = "nogroup"\n[agent.principals]\n"0" = "ops"',
        extra=f'acls = "{acls}"',
        directory=reachable / "run",
    )
    assert agent.socket.stat().st_mode & 0o777 == 0o660
    assert agent.socket.stat().st_gid == nogroup
    with agent.client() as client:
        assert (
            client.resolve(Secret.for_reference("/app/db", "password")).reveal() == CANARY.encode()
        )
    nobody = pwd.getpwnam("nobody")
    app, other, status = as_user(
        nobody.pw_uid,
        nogroup,
        lambda: [
            resolve(agent.socket, {"name": "/app/db", "key": "password"}),
            resolve(agent.socket, {"name": "/other/key", "key": "value"}),
            request(agent.socket, "GET", "/v1/status"),
        ],
    )
    assert app == [
        200,
        {
            "results": [
                {
                    "error": {
                        "kind": "denied",
                        "message": "Secret /app/db is not accessible to principal 'nobody'",
                    }
                }
            ]
        },
    ]
    assert other[1]["results"][0]["value"] == "b3RoZXI="  # "other"
    assert status == [
        403,
        {"error": {"kind": "forbidden", "message": status[1]["error"]["message"]}},
    ]
    outcomes = [
        (r["reference"], r["principal"], r["outcome"])
        for r in agent.records()
        if r["event"] == "resolve"
    ]
    assert outcomes == [
        ("/app/db", "ops", "ok"),
        ("/app/db", "nobody", "denied"),
        ("/other/key", "nobody", "ok"),
    ]


def as_user(uid: int, gid: int, work: Callable[[], Any]) -> Any:
    """``work()`` in a child process running as ``uid``:``gid`` (the agent knows callers
    by the credentials of the process that connects); its JSON result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.write(write, json.dumps(work()).encode())
            status = 0
        except BaseException as error:
            os.write(2, f"as uid {uid}: {type(error).__name__}: {error}\n".encode())
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as out:
        data = out.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child failed"
    return json.loads(data)


# --- holdings and the inventory ---------------------------------------------------------


def test_status_lists_holders_until_they_release(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents()
    client = agent.client()
    client.resolve(Secret.for_reference("/app/db", "password"), ResolveContext(task_id="web.1"))
    status = client.status()
    (holder,) = status["containers"]
    assert (holder["task_id"], holder["principal"], holder["pid"]) == ("web.1", "root", os.getpid())
    assert [(s["name"], s["key"], s["version"]) for s in holder["secrets"]] == [
        ("/app/db", "password", "1")
    ]
    assert CANARY not in json.dumps(status)
    shown = subprocess.run(
        [str(MESOS_SECRETS), "agent", "status", "--socket", str(agent.socket)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "task_id=web.1" in shown
    assert "/app/db@password" in shown
    client.close()
    assert request(agent.socket, "GET", "/v1/status")[1]["containers"] == []


def test_a_holder_that_dies_is_released(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents()
    program = (
        "import os\n"
        "from mesos_secrets import Secret\n"
        "from resolvers.agent import AgentResolver\n"
        f"client = AgentResolver(socket={str(agent.socket)!r})\n"
        "client.resolve(Secret.for_reference('/app/db', 'user'))\n"
        "os._exit(0)  # no close(): as a process killed\n"
    )
    subprocess.run(
        [sys.executable, "-c", program], env={"PYTHONPATH": str(ROOT)}, check=True, timeout=30
    )
    deadline = time.monotonic() + 10
    while request(agent.socket, "GET", "/v1/status")[1]["containers"]:
        assert time.monotonic() < deadline, "the dead holder was never released"
        time.sleep(0.2)


# --- the socket -----------------------------------------------------------------------------


def test_refuses_a_path_that_is_not_its_socket(store: LocalStore, tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    run.mkdir(parents=True)
    (run / "agent.sock").write_text("not a socket")
    with pytest.raises(RuntimeError, match="something else is there"):
        NodeAgent(tmp_path / "a")
    assert (run / "agent.sock").read_text() == "not a socket"


def test_refuses_a_directory_others_can_write(store: LocalStore, tmp_path: Path) -> None:
    run = tmp_path / "b" / "run"
    run.mkdir(parents=True)
    run.chmod(0o777)
    with pytest.raises(RuntimeError, match="others can write to its directory"):
        NodeAgent(tmp_path / "b")


def test_refuses_a_socket_another_agent_serves(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    first = agents()
    second = subprocess.run(
        [str(MESOS_SECRETS), "agent"],
        env=dict(os.environ, PYTHONPATH=str(ROOT), MESOS_SECRETS_CONFIG=str(first.config)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr == f"mesos-secrets: error: another agent serves on '{first.socket}'\n"
    assert first.ready()


def test_restarts_over_the_socket_a_killed_agent_left(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents()
    client = agent.client()
    assert client.resolve(Secret.for_reference("/app/db", "user")).reveal() == b"app"
    agent.stop(signal.SIGKILL)
    assert agent.socket.exists()  # left behind
    with pytest.raises(ResolverUnavailableError, match=f"at '{agent.socket}'"):
        client.resolve(Secret.for_reference("/app/db", "user"))
    agent.start()
    assert client.resolve(Secret.for_reference("/app/db", "user")).reveal() == b"app"
    client.close()


# --- what an attacker sends -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "kind"),
    [
        ("POST", "/v1/resolve", b"{not json", 400, "bad_request"),
        ("POST", "/v1/resolve", b"[]", 400, "bad_request"),
        ("POST", "/v1/resolve", b'{"references": "x"}', 400, "bad_request"),
        (
            "POST",
            "/v1/resolve",
            b'{"references": [{"name": "/a", "value": "x"}]}',
            400,
            "bad_request",
        ),
        ("POST", "/v1/resolve", b'{"references": [{"name": ""}]}', 400, "bad_request"),
        (
            "POST",
            "/v1/resolve",
            b'{"references": [], "context": {"uid": "0"}}',
            400,
            "bad_request",
        ),
        ("POST", "/v1/resolve", b"[" * 100000 + b"]" * 100000, 400, "bad_request"),
        ("GET", "/v1/resolve", None, 405, "method"),
        ("GET", "/../../etc/passwd", None, 404, "not_found"),
    ],
)
def test_hostile_requests_get_one_clear_refusal(
    store: LocalStore,
    agents: Callable[..., NodeAgent],
    method: str,
    url: str,
    body: bytes | None,
    status: int,
    kind: str,
) -> None:
    agent = agents()
    got, answer = request(agent.socket, method, url, body)
    assert (got, answer["error"]["kind"]) == (status, kind)
    assert "\n" not in answer["error"]["message"]
    assert agent.ready()  # and it goes on serving


def test_an_oversized_body_is_not_read(store: LocalStore, agents: Callable[..., NodeAgent]) -> None:
    agent = agents()
    got, answer = request(
        agent.socket, "POST", "/v1/resolve", None, {"Content-Length": str(1 << 30)}
    )
    assert (got, answer["error"]["kind"]) == (413, "too_large")
    assert agent.ready()


def test_a_body_without_its_length_ends_the_connection(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    """Where a body without a Content-Length ends is unknown: after the 411 the agent
    reads nothing more, so a request hidden in that body is never answered."""
    agent = agents()
    smuggled = b"GET /v1/health HTTP/1.1\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(agent.socket))
        sock.sendall(b"POST /v1/resolve HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled)
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 411 ")
    assert answers.count(b"HTTP/1.1 ") == 1


def test_a_request_refused_before_its_body_is_read_ends_the_connection(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    """A POST refused before its body is read (no such path; the agent stopping): the
    body must not be read as the next request, so the agent reads nothing more."""
    agent = agents()
    smuggled = b"GET /v1/health HTTP/1.1\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(agent.socket))
        head = f"POST /v1/nothing HTTP/1.1\r\nContent-Length: {len(smuggled)}\r\n\r\n"
        sock.sendall(head.encode() + smuggled)
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 404 ")
    assert answers.count(b"HTTP/1.1 ") == 1


def test_a_client_that_never_finishes_does_not_block_others(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    agent = agents()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(agent.socket))
    stuck.sendall(b"POST /v1/resolve HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    try:
        with agent.client() as client:
            assert client.resolve(Secret.for_reference("/app/db", "user")).reveal() == b"app"
    finally:
        stuck.close()


# --- metrics ------------------------------------------------------------------------------


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def metrics(port: int) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1)
            for line in metrics_text(port).splitlines()
            if line and not line.startswith("#")
        )
    }


def test_metrics(store: LocalStore, agents: Callable[..., NodeAgent]) -> None:
    port = free_port()
    agent = agents(agent=f'metrics_address = "127.0.0.1:{port}"\ncache_ttl = 60')
    with agent.client() as client:
        for _ in range(2):
            client.resolve(Secret.for_reference("/app/db", "user"))
        with pytest.raises(ResolverError):
            client.resolve(Secret.for_reference("/nope", "x"))
    text = metrics_text(port)
    samples = metrics(port)
    assert (
        float(samples['mesos_secrets_agent_resolutions_total{outcome="ok",resolver="local"}']) == 2
    )
    assert (
        float(
            samples['mesos_secrets_agent_resolutions_total{outcome="not_found",resolver="local"}']
        )
        == 1
    )
    assert float(samples["mesos_secrets_agent_cache_hits_total"]) == 1
    assert float(samples["mesos_secrets_agent_store_requests_total"]) == 2
    assert float(samples["mesos_secrets_agent_lease_renewals_total"]) == 0
    assert "/app/db" not in text


# --- against OpenBao ----------------------------------------------------------------------


def _reads(bao: Bao, prefix: str) -> list[str]:
    assert bao.audit_log is not None
    return [
        entry["request"]["path"]
        for entry in map(json.loads, bao.audit_log.read_text().splitlines())
        if entry.get("type") == "request" and entry["request"]["path"].startswith(prefix)
    ]


def _vault_agent(
    agents: Callable[..., NodeAgent], bao: Bao, agent: str = "", **vault: Any
) -> NodeAgent:
    options = {"address": bao.address, "token": bao.root_token, **vault}
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    return agents(resolver="vault", agent=agent, extra=f"[resolvers.vault]\n{table}\n")


def test_many_clients_one_read_per_path(own_bao: Bao, agents: Callable[..., NodeAgent]) -> None:
    """40 clients at once, each asking for the same 10 secrets: the store sees one read
    of each path (its own audit device counts), every client gets every value."""
    client = own_bao.client()
    for i in range(10):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"shared/s{i}", secret={"v": f"{CANARY}{i}"}
        )
    agent = _vault_agent(agents, own_bao, agent="cache_ttl = 60")
    before = len(_reads(own_bao, "secret/data/shared"))
    secrets = [Secret.for_reference(f"/shared/s{i}", "v") for i in range(10)]
    barrier = threading.Barrier(40)
    results: list[list[bytes]] = []

    def one() -> None:
        with agent.client() as c:
            barrier.wait()
            results.append([r.reveal() for r in resolve_all(c, secrets)])  # type: ignore[union-attr]

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 40
    assert all(r == [f"{CANARY}{i}".encode() for i in range(10)] for r in results)
    assert len(_reads(own_bao, "secret/data/shared")) - before == 10
    assert CANARY not in agent.audit.read_text()


def test_store_outage_served_stale_within_the_bound(
    own_bao: Bao, agents: Callable[..., NodeAgent]
) -> None:
    own_bao.client().secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pw": "v1"})
    agent = _vault_agent(
        agents, own_bao, agent="cache_ttl = 0.5\nmax_stale = 4", cache_ttl=0, deadline=1
    )
    ref = Secret.for_reference("/app/db", "pw")
    with agent.client() as client:
        assert client.resolve(ref).reveal() == b"v1"
        (held,) = client.status()["containers"][0]["secrets"]
        assert held["version"] == "1"  # KV v2's own
        own_bao.stop()
        time.sleep(1)
        assert client.resolve(ref).reveal() == b"v1"  # stale, within 4 s past its TTL
        stale = [r for r in agent.records() if r.get("stale_seconds")]
        assert stale
        assert 0 < stale[-1]["stale_seconds"] <= 4
        time.sleep(4)
        with pytest.raises(ResolverUnavailableError, match="cannot connect"):
            client.resolve(ref)


def test_fail_closed_by_default(own_bao: Bao, agents: Callable[..., NodeAgent]) -> None:
    own_bao.client().secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pw": "v1"})
    agent = _vault_agent(agents, own_bao, agent="cache_ttl = 0.2", cache_ttl=0, deadline=1)
    ref = Secret.for_reference("/app/db", "pw")
    with agent.client() as client:
        assert client.resolve(ref).reveal() == b"v1"
        own_bao.stop()
        time.sleep(0.5)
        with pytest.raises(ResolverUnavailableError):
            client.resolve(ref)


def test_settings_are_checked(tmp_path: Path) -> None:
    from mesos_secrets.agent.settings import AgentSettings

    for table, message in [
        ({"cache_ttl": -1}, "'cache_ttl' must not be negative"),
        ({"max_stale": "x"}, "'max_stale' must be a number"),
        ({"metrics_address": "nowhere"}, "'metrics_address' must be HOST:PORT"),
        ({"principals": {"root": "ops"}}, "key 'root' is not a uid"),
        ({"sockets": "/x"}, "unknown [agent] setting 'sockets'"),
    ]:
        with pytest.raises(ConfigError) as caught:
            AgentSettings.from_table(table, tmp_path)
        assert message in str(caught.value)
    settings = AgentSettings.from_table({"cache_ttl": 1}, tmp_path, cache_ttl=7.0, socket=None)
    assert (settings.cache_ttl, settings.socket) == (7.0, tmp_path / "agent.sock")


@requires_root
def test_a_lease_lives_while_any_holder_does(
    own_bao: Bao, agents: Callable[..., NodeAgent]
) -> None:
    """A dynamic secret (OpenBao's database engine on a real PostgreSQL), held by two
    tasks: one read and one lease for both, renewed past its TTL while either holds it,
    revoked when the last lets go."""
    from .postgres import Postgres, database_engine

    database = Postgres()
    try:
        leases = database_engine(own_bao.client(), database)
        port = free_port()
        agent = _vault_agent(
            agents,
            own_bao,
            agent=f'cache_ttl = 60\nmetrics_address = "127.0.0.1:{port}"',
            logical_mounts="database",
        )
        refs = [Secret.for_reference("/database/creds/app", k) for k in ("username", "password")]
        with agent.client() as first, agent.client() as second:
            a = resolve_all(first, refs, ResolveContext(task_id="a"))
            b = resolve_all(second, refs, ResolveContext(task_id="b"))
            assert [v.reveal() for v in a] == [v.reveal() for v in b]  # type: ignore[union-attr]
            (lease,) = leases()
            first.close()
            time.sleep(3.5)  # past the 3 s TTL: only renewal keeps it
            assert leases() == [lease]
            info = own_bao.client().sys.read_lease(f"database/creds/app/{lease}")["data"]
            assert info["last_renewal"]
            assert metrics(port)["mesos_secrets_agent_lease_renewals_total"] >= 1
            second.close()
            assert leases() == []
        # The next task gets credentials of its own, not the revoked ones.
        with agent.client() as third:
            c = resolve_all(third, refs, ResolveContext(task_id="c"))
        assert c[0].reveal() != a[0].reveal()  # type: ignore[union-attr]
    finally:
        database.stop()


# --- the cache across restarts ------------------------------------------------------------


@requires_root
def test_a_restarted_agent_serves_what_it_kept_through_an_outage(
    own_bao: Bao, agents: Callable[..., NodeAgent]
) -> None:
    """Killed, then restarted while the store is down: the new agent answers from the
    cache the old one kept (in memory only, sealed), as stale, within max_stale."""
    own_bao.client().secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pw": CANARY})
    agent = _vault_agent(
        agents, own_bao, agent="cache_ttl = 0.5\nmax_stale = 60", cache_ttl=0, deadline=1
    )
    ref = Secret.for_reference("/app/db", "pw")
    with agent.client() as client:
        assert client.resolve(ref).reveal() == CANARY.encode()
    kept = agent.directory / "agent-cache" / "cache"
    deadline = time.monotonic() + 10
    while not kept.exists():
        assert time.monotonic() < deadline, "the cache was never kept"
        time.sleep(0.1)
    from mesos_secrets import linux

    assert linux.filesystem_type(kept.parent) == linux.TMPFS_MAGIC  # never on a disk
    assert kept.stat().st_mode & 0o777 == 0o600
    assert CANARY.encode() not in kept.read_bytes()
    assert CANARY.encode().hex().encode() not in kept.read_bytes()
    agent.stop(signal.SIGKILL)
    own_bao.stop()
    agent.start()
    with agent.client() as client:
        assert client.resolve(ref).reveal() == CANARY.encode()
    (last,) = [r for r in agent.records() if r["event"] == "resolve"][-1:]
    assert last["stale_seconds"] > 0
    assert "kept from the last agent" in agent.log.read_text()


@requires_root
def test_a_kept_cache_that_does_not_open_is_discarded(
    own_bao: Bao, agents: Callable[..., NodeAgent]
) -> None:
    own_bao.client().secrets.kv.v2.create_or_update_secret(path="app/db", secret={"pw": "v1"})
    agent = _vault_agent(
        agents, own_bao, agent="cache_ttl = 0.5\nmax_stale = 60", cache_ttl=0, deadline=1
    )
    with agent.client() as client:
        client.resolve(Secret.for_reference("/app/db", "pw"))
    assert agent.stop() == 0
    kept = agent.directory / "agent-cache" / "cache"
    data = bytearray(kept.read_bytes())
    data[-1] ^= 1  # one bit changed
    kept.write_bytes(bytes(data))
    own_bao.stop()
    agent.start()
    with agent.client() as client, pytest.raises(ResolverUnavailableError):
        client.resolve(Secret.for_reference("/app/db", "pw"))
    assert "does not open with this node's key: discarded" in agent.log.read_text()


def test_tells_systemd_when_ready_and_stopping(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Type=notify``: READY=1 once it serves, STOPPING=1 on SIGTERM."""
    where = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(where))
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(where))
    try:
        agent = NodeAgent(tmp_path / "a")
        try:
            assert listener.recv(100) == b"READY=1"
            assert agent.stop() == 0
            assert listener.recv(100) == b"STOPPING=1"
        finally:
            agent.cleanup()
    finally:
        listener.close()


# --- the node cache, in process ----------------------------------------------------------


class Rotating(SecretResolver):
    """A store whose every read of a secret gives a new pair of fields (a dynamic
    secret's user and password), and that can be taken down."""

    name = "rotating"

    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    def resolve_fields(self, name: str, context: Any = None) -> dict[str, SecretBytes]:
        if self.down:
            raise ResolverUnavailableError("the store is down", reference=name)
        self.reads += 1
        return {"user": SecretBytes(f"u{self.reads}"), "password": SecretBytes(f"p{self.reads}")}

    def resolve_reference(self, reference: Reference, context: Any = None) -> SecretBytes:
        return select_field(reference, self.resolve_fields(reference.name), resolver=self.name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_keys_served_of_a_secret_come_from_one_read() -> None:
    """The user name read at t=0 and the password at t=3 came from one read; at t=6
    (past the TTL) both are read again, together: never a user with another's password."""
    store, clock = Rotating(), Clock()
    cache = NodeCache(store, ttl=5, max_stale=0, clock=clock)

    def get(key: str) -> bytes:
        answer = cache.get(Reference("/db/creds", key))
        assert not isinstance(answer, ResolverError)
        return answer.value.reveal()

    assert get("user") == b"u1"
    clock.now += 3
    assert get("password") == b"p1"
    clock.now += 3
    assert (get("user"), get("password")) == (b"u2", b"p2")
    assert store.reads == 2


def test_a_down_store_is_not_waited_for_again_while_stale_values_may_be_served() -> None:
    store, clock = Rotating(), Clock()
    cache = NodeCache(store, ttl=1, max_stale=60, clock=clock)
    assert not isinstance(cache.get(Reference("/a", "user")), ResolverError)
    assert not isinstance(cache.get(Reference("/b", "user")), ResolverError)
    store.down = True
    clock.now += 2
    first = cache.get(Reference("/a", "user"))
    assert isinstance(first, Answer)
    assert first.stale == 1
    store.down = False  # back, but the breaker is open: /b is served stale at once
    second = cache.get(Reference("/b", "user"))
    assert isinstance(second, Answer)
    assert second.value.reveal() == b"u2"
    assert store.reads == 2
    clock.now += 10  # the breaker closes: the store is asked again
    third = cache.get(Reference("/b", "user"))
    assert isinstance(third, Answer)
    assert third.stale == 0
    assert store.reads == 3


def test_a_secret_the_store_no_longer_has_is_not_served_stale() -> None:
    store, clock = Rotating(), Clock()
    cache = NodeCache(store, ttl=1, max_stale=60, clock=clock)
    assert isinstance(cache.get(Reference("/a", "user")), Answer)
    clock.now += 2

    def gone(name: str, context: Any = None) -> dict[str, SecretBytes]:
        raise SecretNotFoundError(f"secret '{name}' not found", reference=name)

    store.resolve_fields = gone  # type: ignore[method-assign]
    assert isinstance(cache.get(Reference("/a", "user")), SecretNotFoundError)
    store.resolve_fields = Rotating.resolve_fields.__get__(store)  # type: ignore[method-assign]
    store.down = True
    assert isinstance(cache.get(Reference("/a", "user")), ResolverUnavailableError)


@requires_root
def test_the_client_trusts_no_agent_of_another_user(reachable: Path) -> None:
    """A process of another user listening where the agent should be gets no token
    and gives no values: the client checks who serves the socket."""
    nobody = pwd.getpwnam("nobody")
    theirs = reachable / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    where = theirs / "agent.sock"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fake agent, as nobody: it accepts and waits
        status = 1
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            fake.bind(str(where))
            fake.listen(1)
            os.write(ready_w, b"x")
            connection, _ = fake.accept()
            status = 3 if connection.recv(100) else 0  # 3: the client sent a request
        finally:
            os._exit(status)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    token = mint_executor_token(KEY, "fw", "ex", "c")
    with (
        AgentResolver(socket=str(where), executor_token=token) as client,
        pytest.raises(ResolverUnavailableError) as caught,
    ):
        client.resolve(Secret.for_reference("/app/db", "user"))
    assert f"runs as uid {nobody.pw_uid}, not root or this user" in str(caught.value)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # it never saw the token


def test_one_user_cannot_take_every_connection(
    store: LocalStore, agents: Callable[..., NodeAgent]
) -> None:
    from mesos_secrets.agent.server import MAX_PER_UID

    agent = agents()
    held = []
    try:
        for _ in range(MAX_PER_UID):
            held.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            held[-1].connect(str(agent.socket))
            held[-1].sendall(b"GET /v1/health HTTP/1.1\r\n")  # and never finishes
        time.sleep(0.5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(10)
            extra.connect(str(agent.socket))
            try:
                extra.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
                answer = extra.recv(100)
            except (ConnectionResetError, BrokenPipeError):  # closed before it was written
                answer = b""
            assert answer == b""  # closed at once, unanswered
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while not agent.ready():  # the slots come back once those close
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --- the agent, in process --------------------------------------------------------------


def in_process(resolver: SecretResolver, tmp_path: Path, ttl: float = 5) -> tuple[Agent, Caller]:
    agent = Agent(resolver, AgentSettings.from_table({"cache_ttl": ttl}, tmp_path))
    return agent, agent.caller(os.getpid(), os.getuid(), os.getgid(), None)


class Leased(Rotating):
    """A dynamic secret: every read a new pair; what was given up, counted."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[str] = []

    def release(self, reference: Reference) -> bool:
        self.released.append(reference.name)
        return True


def test_a_secret_is_given_up_only_once_no_key_of_it_is_held(tmp_path: Path) -> None:
    store = Leased()
    agent, caller = in_process(store, tmp_path)
    both = [Reference("/db", "user"), Reference("/db", "password")]
    agent.resolve(caller, both, {"task_id": "a"})
    agent.resolve(caller, both[1:], {"task_id": "b"})
    assert agent.release(caller, {"task_id": "a"}) == 1
    assert store.released == []  # b still holds a key of it
    assert agent.release(caller, {"task_id": "b"}) == 1
    assert store.released == ["/db"]


def test_the_keys_of_one_request_come_from_one_read(tmp_path: Path) -> None:
    """A read of another secret between two keys of /db crosses /db's TTL: the keys are
    answered again, together, rather than a user name with another read's password."""
    clock = Clock()

    class Slow(Rotating):
        def resolve_fields(self, name: str, context: Any = None) -> dict[str, SecretBytes]:
            if name == "/other":
                clock.now += 2  # the read takes long
            return super().resolve_fields(name, context)

    agent, caller = in_process(Slow(), tmp_path)
    agent.cache._clock = clock
    agent.resolve(caller, [Reference("/db", "user")], {})
    clock.now += 4
    got = agent.resolve(
        caller,
        [Reference("/db", "user"), Reference("/other", "user"), Reference("/db", "password")],
        {},
    )
    values = [a.value.reveal() for a in got if isinstance(a, Answer)]
    assert values[0][1:] == values[2][1:]  # u<n> with p<n>: one read


def test_too_many_holders_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesos_secrets.agent import server

    monkeypatch.setattr(server, "MAX_HOLDERS_PER_PROCESS", 2)
    store = Rotating()
    agent, caller = in_process(store, tmp_path)
    for task in ("a", "b"):
        agent.resolve(caller, [Reference(f"/{task}", "user")], {"task_id": task})
    reads = store.reads
    with pytest.raises(server.TooManyHolders):
        agent.resolve(caller, [Reference("/c", "user")], {"task_id": "c"})
    assert store.reads == reads


def test_refused_names_leave_no_lock_behind(tmp_path: Path) -> None:
    agent, caller = in_process(Rotating(), tmp_path)
    agent.acls = ACLs.from_json({"access_secrets": []})  # nothing for anyone
    agent.resolve(caller, [Reference(f"/n{i}", "user") for i in range(100)], {})
    assert len(agent._names) == 0
