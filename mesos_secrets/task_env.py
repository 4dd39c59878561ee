"""The environment Marathon gives every task besides the spec's own variables.

``MESOS_TASK_ID``, ``MARATHON_APP_ID``, ``MARATHON_APP_VERSION``, the resources, the
labels (``MARATHON_APP_LABELS`` and one ``MARATHON_APP_LABEL_<KEY>`` each) and ``HOST``
(``TaskBuilder.taskContextEnv``, ``TaskGroupBuilder.taskContextEnv``,
``EnvironmentHelper.labelsToEnvVars``). Values are written as the JVM writes them: a
resource of 1 is ``1.0``.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping

import attrs

__all__ = ["LaunchContext", "app_env", "java_double", "labels_env", "pod_task_env"]

MAX_VARIABLE = 512
LABEL_PREFIX = "MARATHON_APP_LABEL_"
_LABEL_ESCAPE = re.compile(r"[^a-zA-Z0-9_]+")


def _now() -> str:
    moment = datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@attrs.frozen
class LaunchContext:
    """What Marathon knows only when it launches: the agent's host name, the app's
    version (a timestamp), whether the group's role is enforced, and the host ports."""

    host: str = attrs.field(factory=lambda: os.uname().nodename)  # gethostname(2)
    version: str = attrs.field(factory=_now)
    enforce_role: bool = False


def java_double(value: float) -> str:
    """``Double.toString``: ``1.0``, ``0.25``, ``1.0E7``, ``1.0E-4``."""
    if value == 0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e7:
        text = repr(float(value))
        return text if "." in text else f"{text}.0"
    from decimal import Decimal  # noqa: PLC0415 (only for such numbers)

    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    shown = "".join(map(str, digits))
    power = len(shown) + exponent - 1
    return f"{'-' if sign else ''}{shown[0]}.{shown[1:] or '0'}E{power}"


def labels_env(labels: Mapping[str, str]) -> dict[str, str]:
    """``MARATHON_APP_LABELS`` and ``MARATHON_APP_LABEL_<KEY>`` for labels that fit."""
    valid = {
        _LABEL_ESCAPE.sub("_", key).upper(): value
        for key, value in labels.items()
        if len(key) < MAX_VARIABLE - len(LABEL_PREFIX) and len(value) < MAX_VARIABLE
    }
    env = {"MARATHON_APP_LABELS": " ".join(valid)}
    env.update({f"{LABEL_PREFIX}{key}": value for key, value in valid.items()})
    return env


def app_env(
    *,
    task_id: str,
    app_id: str,
    context: LaunchContext,
    docker_image: str | None,
    resources: Mapping[str, float],
    gpus: int,
    labels: Mapping[str, str],
) -> dict[str, str]:
    """An app task's context variables, then its labels'."""
    env = {
        "MESOS_TASK_ID": task_id,
        "MARATHON_APP_ID": app_id,
        "MARATHON_APP_VERSION": context.version,
    }
    if docker_image is not None:
        env["MARATHON_APP_DOCKER_IMAGE"] = docker_image
    for name in ("cpus", "mem", "disk"):
        env[f"MARATHON_APP_RESOURCE_{name.upper()}"] = java_double(resources.get(name, 0.0))
    env["MARATHON_APP_RESOURCE_GPUS"] = str(gpus)
    env["MARATHON_APP_ENFORCE_GROUP_ROLE"] = str(context.enforce_role).upper()
    env.update(labels_env(labels))
    return env


def pod_task_env(
    *,
    task_id: str,
    executor_id: str,
    pod_id: str,
    container: str,
    context: LaunchContext,
    resources: Mapping[str, float],
    gpus: int,
) -> dict[str, str]:
    """A pod task's context variables."""
    env = {
        "MESOS_TASK_ID": task_id,
        "MESOS_EXECUTOR_ID": executor_id,
        "MARATHON_APP_ID": pod_id,
        "MARATHON_APP_VERSION": context.version,
        "MARATHON_CONTAINER_ID": container,
        "MARATHON_APP_ENFORCE_GROUP_ROLE": str(context.enforce_role).upper(),
    }
    for name in ("cpus", "mem", "disk"):
        env[f"MARATHON_CONTAINER_RESOURCE_{name.upper()}"] = java_double(resources.get(name, 0.0))
    env["MARATHON_CONTAINER_RESOURCE_GPUS"] = str(gpus)
    return env
