"""Our labels: ``mesos-secrets/…`` on an app, a pod or a pod's container.

Marathon passes an app's ``labels`` into its TaskInfo, a pod container's into that
container's TaskInfo, and a pod's own into the ExecutorInfo its containers share; the
front ends read them there. Each label is read where it acts:

- on a task (an app's labels, a pod container's): the rotation labels
  (:mod:`.rotation`: ``refresh-interval``, ``on-change``, ``restart-batch``,
  ``restart-timeout``, ``optional``, ``fail-on-refresh-error``), and
  ``mesos-secrets/redact-output`` (``true``, ``false``: whether the task's output has
  the values it was given replaced, :mod:`.redacted_output`);
- on an app or a pod (a pod's containers share its network): ``mesos-secrets/network``
  (``host``, ``none`` or ``bridge``), the network mode the network isolator gives it
  where its spec names no network (:mod:`isolators.network`).

:func:`label_violations` says what is wrong with a spec's labels, each with its JSON
path, as ``validate`` reports it.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Mapping
from typing import Any

from .errors import printable

__all__ = [
    "APP",
    "FAIL_ON_REFRESH_ERROR",
    "LABELS",
    "NETWORK",
    "NETWORK_MODES",
    "ON_CHANGE",
    "OPTIONAL",
    "POD",
    "PREFIX",
    "REDACT_OUTPUT",
    "REFRESH_INTERVAL",
    "RESTART_BATCH",
    "RESTART_TIMEOUT",
    "TASK",
    "label_violations",
    "labels_of",
    "parse_on_change",
    "redacts_output",
    "seconds",
]

PREFIX = "mesos-secrets/"
REFRESH_INTERVAL = PREFIX + "refresh-interval"
ON_CHANGE = PREFIX + "on-change"
RESTART_BATCH = PREFIX + "restart-batch"
RESTART_TIMEOUT = PREFIX + "restart-timeout"
OPTIONAL = PREFIX + "optional"
FAIL_ON_REFRESH_ERROR = PREFIX + "fail-on-refresh-error"
NETWORK = PREFIX + "network"
REDACT_OUTPUT = PREFIX + "redact-output"
#: The modes ``mesos-secrets/network`` may name.
NETWORK_MODES = ("host", "none", "bridge")

#: Where a set of labels is: an app's (a task and its network), a pod container's (a
#: task), a pod's (the network its containers share).
APP, TASK, POD = "app", "task", "pod"

#: The labels read from a task's TaskInfo, and those read where its network is decided.
_ON_TASK = (
    REFRESH_INTERVAL,
    ON_CHANGE,
    RESTART_BATCH,
    RESTART_TIMEOUT,
    OPTIONAL,
    FAIL_ON_REFRESH_ERROR,
    REDACT_OUTPUT,
)
_ON_NETWORK = (NETWORK,)
#: Every label of ours.
LABELS = _ON_TASK + _ON_NETWORK

MIN_INTERVAL, MAX_INTERVAL = 1.0, 86400.0


def labels_of(model: Any) -> dict[str, str]:
    """The labels of a TaskInfo or ExecutorInfo (``{"labels": [{"key", "value"}]}`` in
    what the model keeps verbatim), as a mapping; a value that is not a string is ``""``."""
    raw = model.extra.get("labels") if model is not None else None
    items = raw.get("labels") if isinstance(raw, Mapping) else None
    labels: dict[str, str] = {}
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            value = item.get("value")
            labels[item["key"]] = value if isinstance(value, str) else ""
    return labels


def redacts_output(labels: Mapping[str, str], default: bool) -> bool:
    """Whether a task's output is redacted: as its label ``mesos-secrets/redact-output``
    says, else ``default`` (the front end's: configured, or asked for)."""
    value = labels.get(REDACT_OUTPUT)
    return default if value not in ("true", "false") else value == "true"


def parse_on_change(value: str) -> tuple[str, int | None] | None:
    """``noop``, ``restart``, ``signal:<NAME>`` as (kind, signal number); None if it is
    none of them (SIGKILL and SIGSTOP are refused: a task cannot act on them)."""
    if value in ("noop", "restart"):
        return value, None
    kind, _, name = value.partition(":")
    if kind != "signal":
        return None
    name = name.strip().upper() or "SIGHUP"
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        signum = signal.Signals[name]
    except KeyError:
        return None
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        return None
    return "signal", int(signum)


def seconds(value: str, low: float, high: float) -> float | None:
    """``value`` as a number of seconds from ``low`` to ``high``; None if it is not."""
    try:
        found = float(value)
    except ValueError:
        return None
    return found if math.isfinite(found) and low <= found <= high else None


def _names_ok(value: str) -> bool:
    names = [n.strip() for n in value.split(",")]
    return bool(value.strip()) and all(n and "//" not in n for n in names)


#: Each label: whether a value is good, and what a good one is.
_CHECKS: dict[str, tuple[Callable[[str], bool], str]] = {
    REFRESH_INTERVAL: (
        lambda v: seconds(v, MIN_INTERVAL, MAX_INTERVAL) is not None,
        f"a number of seconds from {MIN_INTERVAL:g} to {MAX_INTERVAL:g}",
    ),
    ON_CHANGE: (
        lambda v: parse_on_change(v) is not None,
        "noop, restart or signal:<NAME> (a signal such as SIGHUP or SIGUSR1; not SIGKILL "
        "or SIGSTOP)",
    ),
    RESTART_BATCH: (
        lambda v: v.strip().isdigit() and 1 <= int(v) <= 1000,
        "a number of tasks from 1 to 1000",
    ),
    RESTART_TIMEOUT: (
        lambda v: seconds(v, 1.0, 86400.0) is not None,
        "a number of seconds from 1 to 86400",
    ),
    OPTIONAL: (_names_ok, "'*' or secret names, comma-separated"),
    FAIL_ON_REFRESH_ERROR: (_names_ok, "'*' or secret names, comma-separated"),
    NETWORK: (lambda v: v in NETWORK_MODES, "a network mode: " + ", ".join(NETWORK_MODES)),
    REDACT_OUTPUT: (lambda v: v in ("true", "false"), "true or false"),
}


def label_violations(
    labels: Mapping[str, str], path: str = "/labels", where: str = APP
) -> list[tuple[str, str]]:
    """What is wrong with the ``mesos-secrets/`` labels at ``path``, as (JSON path,
    message): an unknown label, a bad value, or a label where it does not act
    (``where``: an app's labels, a pod container's, a pod's)."""
    found = []
    for key, value in labels.items():
        if not key.startswith(PREFIX):
            continue
        check = _CHECKS.get(key)
        if check is None:
            found.append(
                (f"{path}/{key}", f"unknown label of mesos-secrets (known: {', '.join(LABELS)})")
            )
        elif where == TASK and key in _ON_NETWORK:
            found.append(
                (f"{path}/{key}", "a pod's containers share its network: label the pod (/labels)")
            )
        elif where == POD and key in _ON_TASK:
            found.append(
                (
                    f"{path}/{key}",
                    "acts on each task: label the pod's containers (/containers/N/labels)",
                )
            )
        elif not check[0](value):
            found.append((f"{path}/{key}", f"'{printable(value)}' is not {check[1]}"))
    return found
