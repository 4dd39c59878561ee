"""What a sealed container costs: launch, run `true`, clean up, through the pipeline.

Everything of a launch but the interpreter's own start-up (which ``mesos-secrets run``
adds): the container's init, its namespaces, cgroups and mounts, an environment secret
and a file secret. Root only (cgroups, the secret tmpfs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import (
    CommandInfo,
    ContainerInfo,
    Environment,
    Secret,
    TaskInfo,
    Variable,
    Volume,
)
from mesos_secrets.containerizer import Containerizer
from mesos_secrets.containerizer.launcher import PosixLauncher
from mesos_secrets.isolator import create_isolators
from resolvers.local import LocalResolver

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def containerizer(tmp_path: Path) -> Iterator[Containerizer]:
    with LocalResolver(home=tmp_path / "store") as resolver:
        resolver.store.put("/bench/db", {"password": b"x" * 64})
        runtime = tmp_path / "runtime"
        yield Containerizer(create_isolators(None, resolver, runtime), PosixLauncher(), runtime)


def _task(*, secrets: bool) -> TaskInfo:
    secret = Secret.for_reference("/bench/db", "password")
    environment = Environment(variables=(Variable.for_secret("DB", secret),)) if secrets else None
    volumes = (Volume.for_secret("secrets/db", secret),) if secrets else ()
    return TaskInfo(
        name="bench",
        task_id="bench",
        command=CommandInfo(value="true", environment=environment),
        container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=volumes),
    )


@pytest.mark.parametrize("secrets", [False, True], ids=["no-secrets", "env-and-file-secret"])
def test_launch_true(
    benchmark: Any, containerizer: Containerizer, tmp_path: Path, secrets: bool
) -> None:
    """One container from claim to clean-up, the task `true`."""
    task = _task(secrets=secrets)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()

    def once() -> int:
        with containerizer.launch(task, sandbox) as container:
            return container.wait().status

    assert benchmark(once) == 0
