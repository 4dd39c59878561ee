"""The vault resolver against a real OpenBao dev server: a store read, a cache hit, a task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesos_secrets import Secret
from mesos_secrets.resolver import resolve_all
from resolvers.vault import VaultResolver
from tests.bao import Bao


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    server = Bao(tmp_path_factory.mktemp("bao"))
    client = server.client()
    for i in range(16):
        client.secrets.kv.v2.create_or_update_secret(path=f"bench/s{i}", secret={"v": "x" * 64})
    yield server
    server.stop()


def test_read_uncached(benchmark: Any, bao: Bao) -> None:
    """One KV v2 read over a pooled connection (cache off)."""
    with VaultResolver(address=bao.address, token=bao.root_token, cache_ttl=0) as resolver:
        secret = Secret.for_reference("/bench/s0", "v")
        resolver.resolve(secret)  # mount lookup, connection
        benchmark(resolver.resolve, secret)


def test_read_cached(benchmark: Any, bao: Bao) -> None:
    """The same read answered from the in-memory cache."""
    with VaultResolver(address=bao.address, token=bao.root_token, cache_ttl=60) as resolver:
        secret = Secret.for_reference("/bench/s0", "v")
        resolver.resolve(secret)
        benchmark(resolver.resolve, secret)


def test_task_with_16_secrets(benchmark: Any, bao: Bao) -> None:
    """A task's 16 secrets, resolved at once (cache off): what one launch waits for."""
    with VaultResolver(address=bao.address, token=bao.root_token, cache_ttl=0) as resolver:
        secrets = [Secret.for_reference(f"/bench/s{i}", "v") for i in range(16)]
        resolve_all(resolver, secrets)
        results = benchmark(resolve_all, resolver, secrets)
        assert all(not isinstance(r, Exception) for r in results)
