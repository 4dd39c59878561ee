"""How fast the core paths are: the model's JSON and the embedded store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import Secret, TaskInfo
from resolvers.local import LocalResolver

TASK = json.loads((Path(__file__).parent.parent / "examples" / "task.json").read_text())


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[LocalResolver]:
    with LocalResolver(home=tmp_path) as r:
        r.store.put("/bench/db", {"password": b"x" * 64, "user": b"app"})
        yield r


def test_taskinfo_from_json(benchmark: Any) -> None:
    """Parse and validate a TaskInfo with four env secrets and a secret volume."""
    benchmark(TaskInfo.from_json, TASK)


def test_taskinfo_to_json(benchmark: Any) -> None:
    task = TaskInfo.from_json(TASK)
    benchmark(task.to_json)


def test_local_resolve(benchmark: Any, resolver: LocalResolver) -> None:
    """One reference resolved from the embedded store (SQLite read + AES-GCM open)."""
    secret = Secret.for_reference("/bench/db", "password")
    assert benchmark(resolver.resolve, secret).reveal() == b"x" * 64


def test_local_put(benchmark: Any, resolver: LocalResolver) -> None:
    """One new version written (a write transaction, fsync'ed by SQLite)."""
    benchmark(resolver.store.put, "/bench/put", {"k": b"v" * 64})
