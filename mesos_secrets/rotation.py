"""Rotation: what a running task does when a secret it holds gets a new version.

Mesos delivers a secret once, at launch. With the node agent (:mod:`.agent`), a front end
(``run``, the executor) hears of new versions (:mod:`.watcher`) and, as the task's
labels say (Marathon passes an app's ``labels`` into its TaskInfo):

``mesos-secrets/refresh-interval`` (seconds, 1 to 86400)
    How often the agent reads the task's secrets again to notice a new version (with
    jitter). Without it, only a push (``mesos-secrets agent refresh NAME``) or the end
    of a lease makes the agent look.
``mesos-secrets/on-change`` (``noop``, ``signal:SIGHUP`` or any signal name, ``restart``)
    What happens once a new version is known. File secrets are rewritten in place in
    every case but ``restart``, atomically (:mod:`isolators.volume_secret`: a ``..data``
    link swapped, as the kubelet does); ``signal`` then sends the signal to the task,
    once per new version; ``restart`` stops the task and launches it again (environment
    secrets, which cannot change in a running process, change only so), a few tasks of
    an app at a time (:class:`~.agent.rollouts.Rollouts`): the next only once the last
    are healthy again, and none once one is not. Default ``noop``.
``mesos-secrets/restart-batch`` (default 1), ``mesos-secrets/restart-timeout`` (seconds,
default 60)
    How many tasks of the app restart at once on this node, and how long a restarted
    task has to become healthy (its health checks pass; without any, to keep running)
    before the rollout stops.
``mesos-secrets/optional`` (secret names, comma-separated, or ``*``)
    Secrets the task may start without: one that cannot be read at launch is left out
    (no variable, no file) and delivered once it can be. Others fail the launch.
``mesos-secrets/fail-on-refresh-error`` (secret names, comma-separated, or ``*``)
    Secrets the task must not run without the store's current version of: when the
    agent cannot read one again, the task is stopped and fails, saying why. Others keep
    the last good value, and the agent's inventory says since when it could not be read.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from .errors import MesosSecretsError, SecretValidationError
from .labels import (
    FAIL_ON_REFRESH_ERROR,
    ON_CHANGE,
    OPTIONAL,
    REFRESH_INTERVAL,
    RESTART_BATCH,
    RESTART_TIMEOUT,
    label_violations,
    labels_of,
    parse_on_change,
)
from .names import agent_name

if TYPE_CHECKING:
    from .containerizer import Container
    from .isolator import IsolatorChain
    from .mesos import TaskInfo
    from .resolver import ResolveContext, SecretResolver

__all__ = [
    "OnChange",
    "RotatingTask",
    "RotationPolicy",
    "Rotator",
]

log = logging.getLogger(__name__)

DEFAULT_RESTART_TIMEOUT = 60.0
#: A restarted task without health checks counts as healthy once it ran this long.
RUNNING_IS_HEALTHY_S = 2.0
#: A relaunch that fails is tried again after these pauses, then the task fails.
RELAUNCH_BACKOFF_S = (1.0, 2.0, 4.0)


@attrs.frozen
class OnChange:
    """``noop``, ``signal`` (with its signal) or ``restart``."""

    kind: str = "noop"
    signum: int | None = None

    def __str__(self) -> str:
        if self.signum is not None:
            return f"signal:{signal.Signals(self.signum).name}"
        return self.kind


def _names(value: str) -> frozenset[str]:
    names = (n.strip() for n in value.split(","))
    return frozenset(agent_name(n) if n != "*" else "*" for n in names if n)


@attrs.frozen
class RotationPolicy:
    """A task's rotation labels, read (see the module)."""

    refresh_interval: float | None = None
    on_change: OnChange = OnChange()
    restart_batch: int = 1
    restart_timeout: float = DEFAULT_RESTART_TIMEOUT
    optional: frozenset[str] = frozenset()
    fail_on_refresh_error: frozenset[str] = frozenset()

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> RotationPolicy:
        """The policy ``labels`` state; a :class:`SecretValidationError` naming the first
        bad label."""
        found = label_violations(labels)
        if found:
            path, message = found[0]
            raise SecretValidationError(message, path)
        interval = labels.get(REFRESH_INTERVAL)
        batch = labels.get(RESTART_BATCH)
        timeout = labels.get(RESTART_TIMEOUT)
        return cls(
            refresh_interval=float(interval) if interval is not None else None,
            on_change=OnChange(*parse_on_change(labels.get(ON_CHANGE, "noop")) or ("noop",)),
            restart_batch=int(batch) if batch is not None else 1,
            restart_timeout=float(timeout) if timeout is not None else DEFAULT_RESTART_TIMEOUT,
            optional=_names(labels.get(OPTIONAL, "")),
            fail_on_refresh_error=_names(labels.get(FAIL_ON_REFRESH_ERROR, "")),
        )

    @classmethod
    def of_task(cls, task: TaskInfo) -> RotationPolicy:
        """The policy of a TaskInfo's labels (``{"labels": [{"key", "value"}]}``)."""
        return cls.from_labels(labels_of(task))

    def is_optional(self, name: str) -> bool:
        return "*" in self.optional or agent_name(name) in self.optional

    def fails_on_refresh_error(self, name: str) -> bool:
        return "*" in self.fail_on_refresh_error or agent_name(name) in self.fail_on_refresh_error


def optional_of(task: TaskInfo) -> frozenset[str]:
    """The secret names (``"*"``: all) a task's ``mesos-secrets/optional`` label names."""
    return RotationPolicy.of_task(task).optional


def ask_for_new_versions(resolver: SecretResolver, task: TaskInfo, context: ResolveContext) -> None:
    """Have the agent read the task's secrets again on its ``refresh-interval``, if it
    has one (sent with the task's requests, from its launch on)."""
    interval = RotationPolicy.of_task(task).refresh_interval
    if resolver.watches and interval is not None:
        resolver.refresh_every(context, interval)


class RotatingTask(Protocol):
    """A running task as a front end shows it to the :class:`Rotator`."""

    @property
    def task(self) -> TaskInfo: ...

    @property
    def container_id(self) -> str: ...

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the task."""

    def restart(self, why: str, timeout: float) -> bool | None:
        """Stop the task and launch it again; True once it is healthy again within
        ``timeout`` seconds (its health checks pass; without any, it keeps running);
        None if it was not restarted (it ended, or is being stopped)."""

    def fail(self, why: str) -> None:
        """Stop the task; it failed, for ``why``."""


class Rotator:
    """Acts on what the watcher hears for a front end's tasks (see the module).

    ``find`` gives the running task of a task id (None: not running, or not ours).
    """

    def __init__(
        self,
        resolver: SecretResolver,
        isolators: IsolatorChain,
        find: Callable[[str], RotatingTask | None],
    ) -> None:
        self.resolver = resolver
        self.isolators = isolators
        self._find = find
        self._lock = threading.Lock()
        #: One restart of a task at a time; when its last began, and how it went.
        self._task_locks: dict[str, threading.Lock] = {}
        self._last: dict[str, tuple[float, bool | None]] = {}
        #: The restarts under way (past their turn): their rollout hears how they went.
        self._under_way: set[threading.Thread] = set()

    def _task(self, context: Mapping[str, str]) -> tuple[RotatingTask, RotationPolicy] | None:
        task_id = context.get("task_id")
        running = self._find(task_id) if task_id else None
        if running is None:
            return None
        return running, RotationPolicy.of_task(running.task)

    def changed(self, context: Mapping[str, str], names: tuple[str, ...], change: str) -> None:
        """New versions of ``names`` are in the store: act as the task's policy says."""
        found = self._task(context)
        if found is None:
            return
        running, policy = found
        if policy.on_change.kind == "restart":
            threading.Thread(
                target=self._restart,
                args=(running, policy, names, change, time.monotonic()),
                name="secret-restart",
                daemon=True,
            ).start()
            return
        self._rewrite(context, running, policy, names, told=True)

    def _rewrite(
        self,
        context: Mapping[str, str],
        running: RotatingTask,
        policy: RotationPolicy,
        names: tuple[str, ...],
        *,
        told: bool,
    ) -> None:
        """The task's files of ``names`` compared with the store's, rewritten where they
        differ, and the task signalled if its policy says so. ``told``: the agent said
        they changed (what cannot change in place is then said to keep its value)."""
        task_id = running.task.task_id
        what = ", ".join(f"'{n}'" for n in names)
        try:
            refreshed = self.isolators.refresh(running.container_id, names)
        except MesosSecretsError as error:
            self.stale(context, names, str(error))
            return
        if refreshed.updated:
            log.info(
                "task %s: the new version of %s is in its file(s) %s",
                task_id,
                what,
                ", ".join(refreshed.updated),
            )
            if policy.on_change.signum is not None:
                log.info("task %s: sending it %s", task_id, policy.on_change)
                running.signal(policy.on_change.signum)
        if refreshed.fixed and told:
            log.warning(
                "task %s: %s keep(s) the value it started with (on-change is '%s'; only a "
                "restart changes them)",
                task_id,
                ", ".join(refreshed.fixed),
                policy.on_change,
            )

    def resync(self, context: Mapping[str, str], names: tuple[str, ...]) -> None:
        """The agent restarted: a version may have come while no agent watched. Files
        are compared with the store's and rewritten (and the task signalled) where they
        differ; a task that restarts for a new version is left as it is until the next
        one (what it was given is not known)."""
        found = self._task(context)
        if found is None or found[1].on_change.kind == "restart":
            return
        self._rewrite(context, *found, names, told=False)

    def stale(self, context: Mapping[str, str], names: tuple[str, ...], why: str) -> None:
        """``names`` could not be read again: the task keeps what it has, or fails."""
        found = self._task(context)
        if found is None:
            return
        running, policy = found
        fatal = [n for n in names if policy.fails_on_refresh_error(n)]
        if fatal:
            message = (
                f"secret '{fatal[0]}' could not be refreshed and the task may not run on "
                f"an old value ({FAIL_ON_REFRESH_ERROR}): {why}"
            )
            log.error("task %s: %s", running.task.task_id, message)
            running.fail(message)
            return
        log.warning(
            "task %s keeps the last good value of %s: %s",
            running.task.task_id,
            ", ".join(f"'{n}'" for n in names),
            why,
        )

    def _restart(
        self,
        running: RotatingTask,
        policy: RotationPolicy,
        names: tuple[str, ...],
        change: str,
        known: float,
    ) -> None:
        """Restart the task for ``change`` (known since ``known``), when its turn in the
        app's rollout comes. One restart of a task at a time: a version known before a
        restart began is in that restart, which is its outcome too."""
        task = running.task
        app = app_of(task)
        what = ", ".join(f"'{n}'" for n in names)
        with self._lock:
            lock = self._task_locks.setdefault(task.task_id, threading.Lock())
        with lock:
            go, why = self._begin(app, change, task.task_id, policy, what)
            if go is None:
                return
            if not go:
                log.warning(
                    "task %s stays on the old version of %s: the rollout stopped (%s)",
                    task.task_id,
                    what,
                    why,
                )
                return
            last = self._last.get(task.task_id)
            if last is not None and last[0] >= known:
                log.info("task %s has the new version of %s already", task.task_id, what)
                self._end(app, change, task.task_id, last[1])
                return
            log.info("task %s: restarting it for the new version of %s", task.task_id, what)
            self._under_way.add(threading.current_thread())
            try:
                started = time.monotonic()
                self._last[task.task_id] = (started, None)
                healthy = running.restart(f"a new version of {what}", policy.restart_timeout)
                self._last[task.task_id] = (started, healthy)
                if healthy is None:
                    log.info("task %s ended before its restart", task.task_id)
                else:
                    log.log(
                        logging.INFO if healthy else logging.ERROR,
                        "task %s %s after its restart (%.1fs)",
                        task.task_id,
                        "is healthy" if healthy else "did not become healthy",
                        time.monotonic() - started,
                    )
                self._end(app, change, task.task_id, healthy)
            finally:
                self._under_way.discard(threading.current_thread())

    def _begin(
        self, app: str, change: str, task_id: str, policy: RotationPolicy, what: str
    ) -> tuple[bool | None, str]:
        """The task's turn in the rollout; (None, "") if the agent cannot say (tried
        again for a while: it may be restarting)."""
        for pause in (0.0, *RELAUNCH_BACKOFF_S, 8.0):
            time.sleep(pause)
            try:
                return self.resolver.rollout_begin(
                    app, change, task_id, policy.restart_batch, policy.restart_timeout
                )
            except MesosSecretsError as error:
                failure = error
        log.error("task %s: no restart for the new %s: %s", task_id, what, failure)
        return None, ""

    def _end(self, app: str, change: str, task_id: str, healthy: bool | None) -> None:
        try:
            self.resolver.rollout_end(app, change, task_id, healthy)
        except MesosSecretsError as error:
            log.error("task %s: telling the node agent of its restart: %s", task_id, error)

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the restarts under way to say how they went (a front end about to
        end: its tasks have, so they do at once)."""
        for thread in list(self._under_way):
            thread.join(timeout)


def app_of(task: TaskInfo) -> str:
    """The app a task belongs to: Marathon's ``MARATHON_APP_ID`` in its environment, else
    its name."""
    environment = task.command.environment if task.command else None
    for variable in environment.variables if environment else ():
        if variable.name == "MARATHON_APP_ID" and variable.value is not None:
            return str(variable.value)
    return task.name or task.task_id


def stop_container(container: Container, grace_period: float) -> None:
    """Stop a task for its restart: SIGTERM, SIGKILL to the whole container if it still
    runs ``grace_period`` seconds later; returns once it has ended."""
    container.kill(signal.SIGTERM)
    deadline = time.monotonic() + grace_period
    while container.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if container.poll() is None:
        container.kill(signal.SIGKILL)
    container.wait()


def wait_healthy(
    container: Container, health: Callable[[], bool | None], checked: bool, timeout: float
) -> bool:
    """Whether a restarted task is healthy again within ``timeout`` seconds: with a health
    check (``checked``), once ``health()`` says so (False, or the task ending: not);
    without, once it kept running for :data:`RUNNING_IS_HEALTHY_S`."""
    deadline = time.monotonic() + (timeout if checked else min(RUNNING_IS_HEALTHY_S, timeout))
    while time.monotonic() < deadline:
        verdict = health()
        if container.poll() is not None or verdict is False:
            return False
        if verdict:
            return True
        time.sleep(0.05)
    return not checked and container.poll() is None
