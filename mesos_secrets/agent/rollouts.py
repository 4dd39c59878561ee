"""Restarts for a new version, rolled out a few tasks of an app at a time on the node.

When a secret changes and an app's tasks restart for it (``mesos-secrets/on-change:
restart``, :mod:`mesos_secrets.rotation`), each task's front end asks the agent before
restarting (``POST /v1/rollout``, ``begin``) and says how it went (``end``: healthy
again, or not). One rollout per app and new version (the event's ``change``), of one
principal (the caller's), on this node:

- at most ``batch`` of its tasks restart at once: the next begins only once one of them
  is healthy again (its health checks pass);
- a task that does not become healthy, or whose front end says nothing within its
  ``timeout`` (and :data:`GRACE_S` more), stops the rollout: the tasks that have not
  restarted are told not to, and keep the old version. The inventory
  (``mesos-secrets agent status``) and the audit trail say which and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["GRACE_S", "Rollouts"]

#: How long past its timeout a restart may go unreported before the rollout stops.
GRACE_S = 30.0
#: A rollout nothing happened to for this long is forgotten.
FORGET_S = 3600.0
#: Rollouts remembered at once, at most.
MAX_ROLLOUTS = 1024

#: (principal or uid, app, change).
RolloutKey = tuple[str, str, str]


@attrs.define
class _Rollout:
    batch: int
    timeout: float
    started: float
    touched: float
    #: Tasks restarting, since when.
    restarting: dict[str, float] = attrs.field(factory=dict)
    healthy: list[str] = attrs.field(factory=list)
    #: Tasks whose turn came but that ended before they restarted.
    skipped: int = 0
    #: Why it stopped (None: it goes on).
    stopped: str | None = None


class Rollouts:
    """The node's rollouts (see the module). ``stopped`` is told of each that stops."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        stopped: Callable[[RolloutKey, str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_stop = stopped
        self._rollouts: dict[RolloutKey, _Rollout] = {}
        self._changed = threading.Condition()

    def begin(
        self, key: RolloutKey, task: str, batch: int, timeout: float, wait: float
    ) -> tuple[bool | None, str]:
        """May ``task`` restart now? Waits up to ``wait`` seconds for its turn: (True,
        "") it may; (False, why) the rollout stopped, it must not; (None, "") not yet,
        ask again."""
        stops = []
        try:
            with self._changed:
                now = self._clock()
                deadline = now + wait
                rollout = self._rollouts.get(key)
                if rollout is None:
                    self._forget_old(now)
                    if len(self._rollouts) >= MAX_ROLLOUTS:
                        return False, f"{MAX_ROLLOUTS} rollouts are under way on this node"
                    rollout = self._rollouts[key] = _Rollout(batch, timeout, now, now)
                while True:
                    now = self._clock()
                    stops += self._overdue(key, rollout, now)
                    if rollout.stopped is not None:
                        return False, rollout.stopped
                    if task in rollout.restarting or task in rollout.healthy:
                        return True, ""
                    if len(rollout.restarting) < rollout.batch:
                        rollout.restarting[task] = now
                        rollout.touched = now
                        return True, ""
                    if now >= deadline:
                        return None, ""
                    self._changed.wait(min(deadline - now, 1.0))
        finally:
            for stop in stops:
                self._tell(*stop)

    def end(self, key: RolloutKey, task: str, healthy: bool | None) -> None:
        """``task`` restarted, and is (or is not) healthy again; None: it was not
        restarted (it ended first), which frees its turn and stops nothing."""
        stop = None
        with self._changed:
            rollout = self._rollouts.get(key)
            if rollout is None or task not in rollout.restarting:
                return  # only a task whose turn it was says how it went
            rollout.restarting.pop(task, None)
            rollout.touched = self._clock()
            if healthy is None:
                rollout.skipped += 1
            elif healthy:
                rollout.healthy.append(task)
            elif rollout.stopped is None:
                rollout.stopped = f"task {task} did not become healthy after its restart"
                stop = (key, rollout.stopped)
            self._changed.notify_all()
        if stop is not None:
            self._tell(*stop)

    def _overdue(self, key: RolloutKey, rollout: _Rollout, now: float) -> list[tuple[Any, str]]:
        if rollout.stopped is not None:
            return []
        for task, since in rollout.restarting.items():
            if now - since > rollout.timeout + GRACE_S:
                rollout.stopped = f"task {task} did not say how its restart went in time"
                self._changed.notify_all()
                return [(key, rollout.stopped)]
        return []

    def _forget_old(self, now: float) -> None:
        for key in [k for k, r in self._rollouts.items() if now - r.touched > FORGET_S]:
            del self._rollouts[key]

    def _tell(self, key: RolloutKey, why: str) -> None:
        if self._on_stop is not None:
            self._on_stop(key, why)

    def status(self) -> list[dict[str, Any]]:
        """Every rollout remembered: its app and change, the tasks restarting and
        healthy again, and why it stopped."""
        with self._changed:
            return [
                {
                    "principal": key[0],
                    "app": key[1],
                    "change": key[2],
                    "batch": r.batch,
                    "restarting": sorted(r.restarting),
                    "healthy": list(r.healthy),
                    **({"stopped": r.stopped} if r.stopped is not None else {}),
                }
                for key, r in self._rollouts.items()
            ]
