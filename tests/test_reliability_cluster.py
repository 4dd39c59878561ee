"""The reliability suite's raft cluster: three real OpenBao nodes, a leader killed, a
standby sealed, and nothing left running afterwards."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import requests

from reliability.cluster import (
    ACTIVE,
    SEALED,
    STANDBY,
    ClusterError,
    Node,
    NoForwardingProxy,
    RaftCluster,
)


def bao_processes(directory: Path) -> list[int]:
    """Pids of the processes whose command line names ``directory`` (a node's config)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if str(directory).encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return found


def raw_read(address: str, token: str, path: str = "app/db") -> requests.Response:
    """A KV v2 read that follows no redirect, so that what the node itself said shows."""
    return requests.get(
        f"{address}/v1/secret/data/{path}",
        headers={"X-Vault-Token": token},
        allow_redirects=False,
        timeout=10,
    )


def read_value(client: hvac.Client, path: str = "app/db") -> dict[str, str]:
    answer = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    return dict(answer["data"]["data"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    """OpenBao's defaults: standbys serve reads from their own replica."""
    with RaftCluster(tmp_path_factory.mktemp("raft")) as started:
        started.put_secret("app/db", {"password": "first"})
        yield started


@pytest.fixture(scope="module")
def forwarding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    """``disable_standby_reads``: standbys forward every request to the active node."""
    with RaftCluster(tmp_path_factory.mktemp("raft-forwarding"), standby_reads=False) as started:
        started.put_secret("app/db", {"password": "first"})
        yield started


@pytest.mark.slow
class TestCluster:
    def test_three_voters_one_leader(self, cluster: RaftCluster) -> None:
        state = cluster.autopilot()
        assert sorted(state["voters"]) == ["node1", "node2", "node3"]
        assert state["healthy"]
        assert sorted(node.health() or 0 for node in cluster.nodes) == [ACTIVE, STANDBY, STANDBY]
        assert cluster.leader().name == state["leader"]
        assert cluster.startup_seconds < 30, cluster.timings

    def test_standbys_serve_reads_themselves(self, cluster: RaftCluster) -> None:
        """A secret written through the leader is read through each standby, which answers
        from its own replica (X-Vault-Raft-Node-Id is its own name), not by forwarding."""
        cluster.put_secret("app/standby", {"v": "written on the leader"})
        standbys = cluster.standbys()
        assert len(standbys) == 2
        for node in standbys:
            answer = raw_read(node.address, cluster.root_token, "app/standby")
            assert answer.status_code == 200
            assert answer.headers["X-Vault-Raft-Node-Id"] == node.name
            assert answer.headers["X-Vault-Index"]  # for clients that want read-after-write
            assert read_value(cluster.client(node), "app/standby") == {"v": "written on the leader"}

    def test_kill_the_leader(self, cluster: RaftCluster) -> None:
        """A new leader within 30 s, reads through the survivors meanwhile and after; the
        killed node, restarted, rejoins as a standby."""
        old = cluster.leader()
        survivors = [node for node in cluster.nodes if node is not old]
        started = time.monotonic()
        cluster.kill(old)
        assert not old.alive
        # Standbys serve reads from their replica even while no node is active.
        assert raw_read(survivors[0].address, cluster.root_token).status_code == 200
        new = cluster.wait_for_leader(30, not_=old)
        elected = time.monotonic() - started
        assert new in survivors
        assert elected < 30
        for node in survivors:
            assert read_value(cluster.client(node)) == {"password": "first"}
        cluster.put_secret("app/after", {"v": "new leader"})

        cluster.restart(old)
        cluster.wait_healthy()
        assert old.health() == STANDBY
        assert cluster.leader() is new
        assert read_value(cluster.client(old), "app/after") == {"v": "new leader"}

    def test_seal_a_standby(self, cluster: RaftCluster) -> None:
        """Reads against a sealed node fail at once with 503 "Vault is sealed"; the others
        go on; unsealing restores it."""
        sealed, other = cluster.standbys()
        cluster.seal(sealed)
        assert sealed.health() == SEALED
        answer = raw_read(sealed.address, cluster.root_token)
        assert answer.status_code == 503
        assert answer.json() == {"errors": ["Vault is sealed"]}
        with pytest.raises(hvac.exceptions.VaultDown, match="Vault is sealed"):
            read_value(cluster.client(sealed))
        assert read_value(cluster.client(other)) == {"password": "first"}
        assert read_value(cluster.client()) == {"password": "first"}

        cluster.unseal(sealed)
        assert sealed.health() == STANDBY
        assert read_value(cluster.client(sealed)) == {"password": "first"}

    def test_seal_the_leader(self, cluster: RaftCluster) -> None:
        """A sealed leader hands over at once (no heartbeat timeout to wait out)."""
        old = cluster.leader()
        cluster.seal(old)
        new = cluster.wait_for_leader(10, not_=old)
        assert read_value(cluster.client(new)) == {"password": "first"}
        cluster.unseal(old)
        cluster.wait_healthy()


@pytest.mark.slow
class TestForwarding:
    def test_standbys_forward(self, forwarding: RaftCluster) -> None:
        """Without standby reads, a standby's answer comes from the active node."""
        leader = forwarding.leader()
        for node in forwarding.standbys():
            answer = raw_read(node.address, forwarding.root_token)
            assert answer.status_code == 200
            assert answer.headers["X-Vault-Raft-Node-Id"] == leader.name

    def test_a_standby_that_redirects(self, forwarding: RaftCluster) -> None:
        """Told not to forward, a standby sends the client to the active node (307); hvac
        and the resolver's requests follow it, an hvac client that does not gets the
        307 back as a response, not an error."""
        leader = forwarding.leader()
        standby = forwarding.standbys()[0]
        with NoForwardingProxy(standby.address) as proxy:
            answer = raw_read(proxy.address, forwarding.root_token)
            assert answer.status_code == 307
            assert answer.headers["Location"] == f"{leader.address}/v1/secret/data/app/db"
            followed = hvac.Client(url=proxy.address, token=forwarding.root_token)
            assert read_value(followed) == {"password": "first"}
            unfollowed = hvac.Client(
                url=proxy.address, token=forwarding.root_token, allow_redirects=False
            ).secrets.kv.v2.read_secret_version(
                path="app/db", mount_point="secret", raise_on_deleted_version=True
            )
            assert unfollowed.status_code == 307

    def test_seal_a_forwarding_standby(self, forwarding: RaftCluster) -> None:
        """Such a standby refuses sys/seal ("please restart instead"): seal() restarts it
        without unsealing it."""
        standby = forwarding.standbys()[0]
        first = standby.process
        forwarding.seal(standby)
        assert standby.process is not first
        assert raw_read(standby.address, forwarding.root_token).status_code == 503
        forwarding.unseal(standby)
        forwarding.wait_healthy()


@pytest.mark.slow
def test_close_after_an_exception(tmp_path: Path) -> None:
    """An exception in the ``with`` block still stops every node, a frozen one too, and
    close() again does nothing."""
    clusters: list[RaftCluster] = []

    def crash() -> None:
        with RaftCluster(tmp_path) as cluster:
            clusters.append(cluster)
            assert len(bao_processes(tmp_path)) == 3
            cluster.kill(cluster.standbys()[0], signal.SIGSTOP)
            raise RuntimeError("in the block")

    with pytest.raises(RuntimeError, match="in the block"):
        crash()
    (cluster,) = clusters
    assert all(node.process is not None for node in cluster.nodes)
    assert not any(node.alive for node in cluster.nodes)
    assert bao_processes(tmp_path) == []
    cluster.close()


def test_startup_failure_shows_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that cannot start: the error names it and ends with its log, and no node is
    left running."""
    write = RaftCluster._write_config

    def broken(self: RaftCluster, node: Node) -> None:
        write(self, node)
        node.config.write_text(node.config.read_text() + "no_such_setting {\n")

    monkeypatch.setattr(RaftCluster, "_write_config", broken)
    with pytest.raises(ClusterError, match=r"(?s)node1 exited \(\d+\) .*--- node1 .*bao\.log"):
        RaftCluster(tmp_path)
    assert bao_processes(tmp_path) == []


def test_failed_api_call_shows_the_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API call that fails during startup becomes a ClusterError with every node's log."""

    def refused(self: RaftCluster, node: Node) -> None:
        raise requests.ConnectionError(f"{node.name} refused")

    monkeypatch.setattr(RaftCluster, "_submit_keys", refused)
    with pytest.raises(
        ClusterError, match=r"(?s)did not start: node1 refused.*--- node1 .*--- node3 "
    ):
        RaftCluster(tmp_path)
    assert bao_processes(tmp_path) == []
