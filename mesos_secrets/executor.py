"""``mesos-secrets-executor``: a Mesos executor that runs tasks through the pipeline.

It speaks the v1 executor HTTP API through pymesos, with the driver of
:mod:`mesos_secrets.driver`: executor authentication, and reconnection, status updates
and refusals handled as Mesos' own executor library handles them. When the agent sets
``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``, every call carries ``Authorization: Bearer
<token>``, and the variable leaves the environment before any task starts, as the
library does. A 401 or 403 from the agent to SUBSCRIBE ends the executor with a message
saying so; so does losing the agent for good (exit status 1).

Secrets: the executor gets its own access to the store from a one-time bootstrap in
``MESOS_SECRETS_VAULT_WRAPPED_TOKEN`` (a VALUE secret in its ExecutorInfo, which the
agent resolves): unwrapped once at start, then gone from the environment; the token is
renewed while the executor runs and revoked when it shuts down. Without a bootstrap
the resolver is configured as for ``mesos-secrets run`` (``MESOS_SECRETS_RESOLVER``,
``MESOS_SECRETS_CONFIG``, Vault's variables).

Each LAUNCH (and each task of a LAUNCH_GROUP) runs in the background: TASK_STARTING,
then TASK_RUNNING once the task runs, then TASK_FINISHED, TASK_FAILED or TASK_KILLED.
A failure before the task runs is TASK_FAILED with reason
REASON_CONTAINER_LAUNCH_FAILED and a message naming the secret or path — never a
value. KILL stops a task and cleans up; SHUTDOWN stops them all, revokes the token and
exits within the grace period.

With the node agent's resolver, a task whose secrets are revoked on the node
(``mesos-secrets revoke``) is killed at once, with no grace period, and its TASK_KILLED
says so (:mod:`.watcher`). New versions of its secrets reach it as its labels say
(:mod:`.rotation`): its files rewritten in place, a signal, or a restart in the same
sandbox, under the same task id (the task stays TASK_RUNNING; an update says
``restarted: …``); a secret it may not run on an old value of that cannot be read
again makes it TASK_FAILED, saying which and why.

A task's health check and check (:mod:`.checks`) start once it runs: TASK_RUNNING
updates carry ``healthy`` (reason REASON_TASK_HEALTH_CHECK_STATUS_UPDATED) and
``check_status`` (REASON_TASK_CHECK_STATUS_UPDATED); a task that stays unhealthy is
killed, its TASK_KILLED saying ``healthy: false``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import pymesos  # type: ignore[import-untyped,unused-ignore]

from .acls import ACLs
from .checks import TaskChecks, parse_checks
from .config import Config, load_config
from .containerizer import Container, Containerizer, default_runtime_dir
from .containerizer.launcher import Termination
from .driver import AgentDriver, Reconnection, parse_duration
from .errors import LaunchCancelled, MesosSecretsError, SecretValidationError, printable
from .framework import BOOTSTRAP_ENV
from .hardening import protect_process
from .isolator import ContainerGroup
from .labels import labels_of, redacts_output
from .mesos import ExecutorInfo, TaskInfo
from .registry import choose_resolver, get_resolver, resolvers
from .resolver import ResolveContext, SecretResolver, option_types
from .rotation import (
    RELAUNCH_BACKOFF_S,
    RotationPolicy,
    Rotator,
    ask_for_new_versions,
    stop_container,
    wait_healthy,
)
from .run import build_containerizer, configured_redaction, log_progress
from .watcher import Watcher

__all__ = ["SecretsExecutor", "main"]

log = logging.getLogger("mesos_secrets.executor")

TOKEN_ENV = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN"
SHUTDOWN_GRACE_ENV = "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"
REQUIRED_ENV = ("MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID")
#: Mesos' executors' default grace period for a kill, and agents' for a shutdown.
DEFAULT_KILL_GRACE_S = 3.0
DEFAULT_SHUTDOWN_GRACE_S = 5.0
#: Mesos' reason (``TaskStatus.Reason``) for a task that failed before it ran.
REASON_LAUNCH_FAILED = "REASON_CONTAINER_LAUNCH_FAILED"


def _pod(executor_info: Any, framework_id: str) -> ContainerGroup | str:
    """What the tasks of the executor's task groups share: its ContainerInfo (their
    network) and labels, by the framework's and the executor's ids (an executor id is
    unique within its framework only); or, if its ExecutorInfo cannot be read, why
    (each of them then fails with it, rather than run in a network its pod did not ask
    for)."""
    try:
        executor = ExecutorInfo.from_json(dict(executor_info))
    except (SecretValidationError, TypeError, ValueError) as error:
        return f"the executor's ExecutorInfo cannot be read: {printable(str(error), 200)}"
    return ContainerGroup.of_executor(f"{framework_id}/{executor.executor_id}", executor)


@attrs.define(eq=False)
class _Task:
    """A task from its LAUNCH to its terminal update."""

    task_id: str
    container_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    #: The other tasks of its task group (empty for a LAUNCH).
    group: tuple[str, ...] = ()
    #: Whether it came in a task group (a LAUNCH_GROUP): it shares the executor's pod.
    in_group: bool = False
    #: Its TaskInfo's kill policy's grace period, once it is read.
    grace_period: float | None = None
    container: Container | None = None
    killing: bool = False
    #: When the kill started, and when it escalates to SIGKILL (monotonic seconds).
    kill_started: float = 0.0
    kill_deadline: float = 0.0
    timer: threading.Timer | None = None
    #: Whether it was killed because another task of its group failed.
    by_group: bool = False
    #: Whether its terminal update was sent.
    ended: bool = False
    #: Its health check and check, once it runs.
    checks: TaskChecks | None = None
    #: What it asks for its secrets with, once launched.
    context: ResolveContext | None = None
    #: Why its secrets were revoked (it is then killed at once).
    revoked: str | None = None
    #: Why it was stopped as failed: a secret it may not run without an up-to-date
    #: value of could not be refreshed (:mod:`.rotation`).
    failure: str | None = None
    #: Its sandbox and TaskInfo, once launched (a restart launches it there again).
    sandbox: Path | None = None
    info: TaskInfo | None = None
    #: Why it is being restarted for a new version of its secrets (None: it is not),
    #: whether it was launched again (None: not yet), and the verdict of its last
    #: health check since it started.
    restart: str | None = None
    relaunched: bool | None = None
    health: bool | None = None


class SecretsExecutor(pymesos.Executor):  # type: ignore[misc]
    """Runs each task through the containerizer pipeline, reporting status to the agent.

    Kills, shutdown and task groups follow Mesos' own executors
    (``src/launcher/executor.cpp``, ``src/launcher/default_executor.cpp``): a KILL's
    grace period comes from the event's kill policy, else the TaskInfo's, else 3 s, and
    a second KILL may only shorten it; TASK_KILLING goes first when the framework has
    the TASK_KILLING_STATE capability; a task of a group that fails or is killed takes
    the rest of its group with it (TASK_KILLED); SHUTDOWN launches nothing more and
    gives every task a terminal update within the agent's shutdown grace period.
    """

    def __init__(
        self,
        config: Config,
        *,
        bootstrap: str | None,
        runtime_dir: Path,
        directory: Path,
        kill_grace_period: float = DEFAULT_KILL_GRACE_S,
        shutdown_grace_period: float = DEFAULT_SHUTDOWN_GRACE_S,
        executor_token: str | None = None,
    ) -> None:
        self.config = config
        self._bootstrap = bootstrap
        #: The Mesos executor token, for a resolver that presents it (the node agent's).
        self._executor_token = executor_token
        self.runtime_dir = runtime_dir
        self.directory = directory
        self.kill_grace_period = kill_grace_period
        self.shutdown_grace_period = shutdown_grace_period
        self.resolver: SecretResolver | None = None
        self.containerizer: Containerizer | None = None
        self.setup_error: str | None = None
        self.framework_id = ""
        self.executor_id = ""
        #: What its task groups' tasks share (a pod's network), from its ExecutorInfo;
        #: or why that could not be read.
        self.pod: ContainerGroup | str | None = None
        #: Whether tasks' output is redacted unless their label says otherwise.
        self.redact_output = False
        self.principal: str | None = None
        self.task_killing_state = False
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._threads: list[threading.Thread] = []
        self._shutting_down = False
        self._watcher: Watcher | None = None
        #: Told when a task's container is replaced (a restart ends).
        self._replaced = threading.Condition(self._lock)

    # --- pymesos callbacks (camelCase at this one boundary) -----------------------------

    def registered(
        self, driver: Any, executor_info: Any, framework_info: Any, agent_info: Any
    ) -> None:
        self.framework_id = framework_info["id"]["value"]
        self.executor_id = executor_info["executor_id"]["value"]
        self.pod = _pod(executor_info, self.framework_id)
        self.principal = framework_info.get("principal")
        capabilities = framework_info.get("capabilities") or []
        self.task_killing_state = any(
            isinstance(c, Mapping) and c.get("type") == "TASK_KILLING_STATE" for c in capabilities
        )
        log.info("registered with agent %s", (agent_info.get("id") or {}).get("value"))
        self._start(driver)

    def reregistered(self, driver: Any, agent_info: Any) -> None:
        log.info("re-registered with the agent")

    def disconnected(self, driver: Any) -> None:
        log.warning("disconnected from the agent")

    def launchTask(self, driver: Any, task: Any) -> None:
        self._launch_tasks(driver, [task])

    def launchTaskGroup(self, driver: Any, tasks: Any) -> None:
        self._launch_tasks(driver, list(tasks), group=True)

    def killTask(self, driver: Any, task_id: Any, kill_policy: Any = None) -> None:
        name = task_id.get("value") if isinstance(task_id, Mapping) else None
        with self._lock:
            task = self._tasks.get(name) if isinstance(name, str) else None
            if task is None or self._shutting_down:
                log.warning("ignoring a kill of task %s: it is not active", name)
                return
        self._kill(driver, task, _grace_period(kill_policy))

    def frameworkMessage(self, driver: Any, message: Any) -> None:
        log.info("ignoring a framework message")

    def error(self, driver: Any, message: str) -> None:
        log.error("the agent reports an error: %s", message)

    def shutdown(self, driver: Any) -> None:
        """Launch nothing more; kill every task within the shutdown grace period, leaving
        two seconds for the last clean-up and updates; then revoke the store's token."""
        started = time.monotonic()
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            tasks = list(self._tasks.values())
            threads = list(self._threads)
        # As the command executor: the tasks get the grace period less its reaping
        # interval (1 s) and a second, so that they are cleaned up and their TASK_KILLED
        # is sent before the agent's deadline.
        grace = max(0.0, self.shutdown_grace_period - 2.0)
        log.info("shutting down: killing %d task(s) within %.1f s", len(tasks), grace)
        for task in tasks:
            self._kill(driver, task, grace)
        deadline = started + max(0.0, self.shutdown_grace_period - 0.5)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for task in tasks:  # what did not end in time (a store that does not answer)
            ran = task.container is not None
            if not task.ended and self.containerizer is not None:
                # What it made so far goes now: the executor exits before its thread could
                # clean up after it (a launch still resolving, a slow clean-up).
                try:
                    if task.container is not None:
                        task.container.destroy()
                    else:
                        self.containerizer.destroy(task.container_id)
                except (MesosSecretsError, OSError) as error:
                    log.error("cleaning up after task %s failed: %s", task.task_id, error)
            why = "the executor shut down" + ("" if ran else " before the task ran")
            self._end(driver, task, "TASK_KILLED", f"Task killed: {why}")
        if self._watcher is not None:
            self._watcher.stop()
        if self.resolver is not None:
            self.resolver.close()

    # --- the work -------------------------------------------------------------------

    def _start(self, driver: Any) -> None:
        """Log in to the store (unwrapping the bootstrap now, once) and recover; with
        the node agent's resolver, watch for revocations."""
        bootstrap, self._bootstrap = self._bootstrap, None
        try:
            options: dict[str, Any] = {"wrapped_token": bootstrap} if bootstrap else {}
            name = "vault" if bootstrap else choose_resolver(None, self.config)
            if self._executor_token and "executor_token" in option_types(resolvers.load(name)):
                options["executor_token"] = self._executor_token
            self.resolver = get_resolver(name, config=self.config, **options)
            self.resolver.check()
            acls = ACLs.load(self.config.acls) if self.config.acls else None
            self.redact_output = configured_redaction(self.config)
            self.containerizer = build_containerizer(
                self.config,
                self.resolver,
                self.runtime_dir,
                progress=log_progress,
                authorize=acls.authorizer(self.resolver.audit) if acls else None,
            )
            orphans = self.containerizer.recover()
            if orphans:
                log.warning("cleaned up %d container(s) left by an earlier executor", len(orphans))
            if self.resolver.watches:
                rotator = Rotator(
                    self.resolver,
                    self.containerizer.isolators,
                    lambda task_id: self._rotating(driver, task_id),
                )
                self._watcher = Watcher(
                    self.resolver,
                    revoked=lambda context, why: self._revoked(driver, context, why),
                    changed=rotator.changed,
                    stale=rotator.stale,
                    resync=rotator.resync,
                    held=self._held,
                ).start()
                self._watcher.watching.wait(timeout=5)
        except MesosSecretsError as error:
            self.setup_error = f"the executor cannot use the secret store: {error}"
            log.error("%s", self.setup_error)
        except Exception as error:  # noqa: BLE001 (a plugin's bug; its text may hold a value)
            self.setup_error = f"the executor failed to start: {type(error).__name__}"
            log.error("%s", self.setup_error)

    def _launch_tasks(self, driver: Any, raws: list[Any], *, group: bool = False) -> None:
        ids = [_task_id(raw) for raw in raws]
        with self._lock:
            shutting_down = self._shutting_down
            tasks = [
                _Task(
                    task_id,
                    group=tuple(i for i in ids if i != task_id) if group else (),
                    in_group=group,
                    # Read now: a KILL may come before the TaskInfo is.
                    grace_period=_grace_period(
                        raw.get("kill_policy") if isinstance(raw, Mapping) else None
                    ),
                )
                for task_id, raw in zip(ids, raws, strict=True)
            ]
            if not shutting_down:
                self._tasks.update((task.task_id, task) for task in tasks)
            self._threads = [thread for thread in self._threads if thread.is_alive()]
        for task, raw in zip(tasks, raws, strict=True):
            if shutting_down:  # nothing launches after SHUTDOWN
                self._end(driver, task, "TASK_KILLED", "the executor is shutting down")
                continue
            thread = threading.Thread(target=self._run_task, args=(driver, task, raw), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _run_task(self, driver: Any, task: _Task, raw: Any) -> None:
        """One task, from TASK_STARTING to a terminal update, whatever fails on the way."""
        task_id = task.task_id
        running = False
        try:
            self._update(driver, task_id, "TASK_STARTING")
            try:
                info = TaskInfo.from_json(dict(raw))
                RotationPolicy.of_task(info)  # its labels of ours are good
            except SecretValidationError as error:
                self._end(driver, task, "TASK_FAILED", str(error), "REASON_TASK_INVALID")
                return
            container = self._launch(driver, task, info)
            if container is None:
                return
            running = True
            self._supervise(driver, task, container)
        except Exception as error:  # noqa: BLE001 (the boundary: every task ends in a state)
            # Named by type only: the text of an error we did not write may hold a value.
            kind = type(error).__name__
            log.error("task %s: the executor failed: %s", task_id, kind)
            if running:  # as Mesos' executors do when the task's end cannot be known
                message = f"Command terminated with unknown status (the executor failed: {kind})"
                self._end(driver, task, "TASK_FAILED", message)
            else:
                message = f"the executor failed to launch the task ({kind})"
                self._end(driver, task, "TASK_FAILED", message, REASON_LAUNCH_FAILED)

    def _supervise(self, driver: Any, task: _Task, container: Container) -> None:
        try:
            if not task.killing:  # killed as it started: TASK_KILLING was its last word
                self._update(driver, task.task_id, "TASK_RUNNING")
                self._start_checks(driver, task, container)
            while True:
                termination = container.wait()
                # A restart is not the task's end: it is launched again here, by the
                # thread that lives as long as the task (a task's init dies with the
                # thread that started it: PR_SET_PDEATHSIG).
                with self._lock:
                    why = task.restart
                if why is None:
                    break
                relaunched = self._relaunch(driver, task, container, why)
                with self._replaced:
                    task.restart, task.relaunched = None, relaunched is not None
                    self._replaced.notify_all()
                if relaunched is None:
                    break
                container = relaunched
        finally:
            with self._lock:
                if task.timer is not None:
                    task.timer.cancel()
                checks = task.checks
            if checks is not None:
                checks.stop()  # no update after the terminal one, no check command left
            try:
                container.destroy()
            except (MesosSecretsError, OSError) as error:
                log.error("cleaning up after task %s failed: %s", task.task_id, error)
        if task.failure is not None:
            self._end(driver, task, "TASK_FAILED", f"Task {termination.describe()}: {task.failure}")
        elif task.killing:
            # Killed for failing its health check: Mesos' executors say so with `healthy`.
            unhealthy = False if checks is not None and checks.unhealthy_kill else None
            message = f"Task {termination.describe()}" + _revocation(task)
            self._end(driver, task, "TASK_KILLED", message, healthy=unhealthy)
        elif termination.status == 0:
            self._end(driver, task, "TASK_FINISHED", "Command exited with status 0")
        else:
            self._end(driver, task, "TASK_FAILED", _failure(termination))

    def _launch(self, driver: Any, task: _Task, info: TaskInfo) -> Container | None:
        task_id = task.task_id
        if self.containerizer is None:
            message = self.setup_error or "the executor is not registered yet"
            self._end(driver, task, "TASK_FAILED", message, REASON_LAUNCH_FAILED)
            return None
        if task.in_group and isinstance(self.pod, str):
            self._end(driver, task, "TASK_FAILED", self.pod, REASON_LAUNCH_FAILED)
            return None
        # tasks/ is ours, 0711: a task can neither list it nor guess another's name in it.
        tasks = self.directory / "tasks"
        tasks.mkdir(mode=0o711, exist_ok=True)
        tasks.chmod(0o711)
        sandbox = tasks / f"{_safe(task_id)}.{secrets.token_hex(6)}"
        sandbox.mkdir()
        log.info("task %s runs in %s", task_id, sandbox)
        task.sandbox, task.info = sandbox, info
        context = ResolveContext(
            framework_id=self.framework_id,
            executor_id=self.executor_id,
            task_id=task_id,
            principal=self.principal,
        )
        try:
            container = self._start_container(task, info, sandbox, context)
        except LaunchCancelled:  # killed (or shut down) while its secrets were resolved
            message = "Task killed before it was launched" + _revocation(task)
            self._end(driver, task, "TASK_KILLED", message)
            return None
        except MesosSecretsError as error:
            self._end(driver, task, "TASK_FAILED", str(error), REASON_LAUNCH_FAILED)
            return None
        except OSError as error:  # the sandbox's stdout or stderr: a link, a directory…
            message = f"cannot open the task's output in its sandbox: {error.strerror}"
            self._end(driver, task, "TASK_FAILED", message, REASON_LAUNCH_FAILED)
            return None
        with self._lock:
            task.container = container
            task.context = context
            killing = task.killing
        if killing:  # a KILL arrived between the last check and the start
            self._signal(driver, task, container, _kill_signal(task))
        return container

    def _start_container(
        self, task: _Task, info: TaskInfo, sandbox: Path, context: ResolveContext
    ) -> Container:
        assert self.containerizer is not None
        assert self.resolver is not None
        ask_for_new_versions(self.resolver, info, context)
        with _output(sandbox, "stdout") as out, _output(sandbox, "stderr") as err:
            return self.containerizer.launch(
                info,
                sandbox,
                context=context,
                stdout=out,
                stderr=err,
                container_id=task.container_id,
                cancelled=lambda: task.killing,
                group=self.pod if task.in_group and isinstance(self.pod, ContainerGroup) else None,
                redact=redacts_output(labels_of(info), self.redact_output),
            )

    def _rotating(self, driver: Any, task_id: str) -> _Rotating | None:
        """The running task ``task_id``, as the rotator acts on it."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.killing or task.ended:
                return None
            if task.container is None or task.info is None:
                return None
        return _Rotating(self, driver, task)

    def _restart(self, driver: Any, task: _Task, why: str, timeout: float) -> bool | None:
        """Stop the task's container, to be launched again in its sandbox by the task's
        own thread (:meth:`_supervise`); True once it is healthy again within
        ``timeout`` seconds; None if it was not restarted (it ended, or is killed)."""
        with self._lock:
            old, info = task.container, task.info
            if task.killing or task.ended or old is None or info is None:
                return None
            if old.poll() is not None:  # it ended on its own: that is its end
                return None
            task.restart, task.relaunched = why, None
            checks, task.checks = task.checks, None
        log.info("task %s: restarting it (%s)", task.task_id, why)
        if checks is not None:
            checks.stop()
        if info.extra.get("health_check") is not None:  # not healthy while it restarts
            self._update(driver, task.task_id, "TASK_RUNNING", f"restarting: {why}", healthy=False)
        grace = task.grace_period if task.grace_period is not None else self.kill_grace_period
        stop_container(old, grace)
        with self._replaced:
            self._replaced.wait_for(lambda: task.relaunched is not None)
            container = task.container
            launched = bool(task.relaunched)
        if _stopping(task):  # killed, or ended, meanwhile
            return None
        if not launched or container is None:
            return False
        self._update(driver, task.task_id, "TASK_RUNNING", f"restarted: {why}")
        self._start_checks(driver, task, container)
        return wait_healthy(
            container, lambda: task.health, info.extra.get("health_check") is not None, timeout
        )

    def _relaunch(self, driver: Any, task: _Task, old: Container, why: str) -> Container | None:
        """Clean up after the stopped container and launch the task again in its
        sandbox (backing off after a failure); the new container, or None."""
        try:
            old.destroy()
        except (MesosSecretsError, OSError) as error:
            log.error("cleaning up after task %s failed: %s", task.task_id, error)
        info, sandbox, context = task.info, task.sandbox, task.context
        if info is None or sandbox is None or context is None:
            return None
        for pause in (0.0, *RELAUNCH_BACKOFF_S):
            time.sleep(pause)
            if task.killing:
                return None
            task.container_id = str(uuid.uuid4())
            try:
                container = self._start_container(task, info, sandbox, context)
            except LaunchCancelled:  # killed while it was launched again
                return None
            except (MesosSecretsError, OSError) as error:
                log.warning("task %s: launching it again failed: %s", task.task_id, error)
                continue
            with self._lock:
                task.health = None
                task.container = container
                killing = _killing(task)  # read again: another thread may have set it
            if killing:  # a KILL (or a revocation) came while it was launched again
                self._signal(driver, task, container, _kill_signal(task))
            return container
        task.failure = f"it could not be launched again after its restart ({why})"
        return None

    def _start_checks(self, driver: Any, task: _Task, container: Container) -> None:
        """The task's health check and check (validated with the task), run from now on:
        TASK_RUNNING updates carry their results; an unhealthy task is killed."""
        health_check, check = parse_checks(container.task)

        def update(healthy: bool | None, check_status: dict[str, Any] | None, reason: str) -> None:
            if healthy is not None:
                task.health = healthy
            self._update(
                driver,
                task.task_id,
                "TASK_RUNNING",
                reason=reason,
                healthy=healthy,
                check_status=check_status,
            )

        checks = TaskChecks(
            task.task_id,
            health_check,
            check,
            container=container,
            update=update,
            kill=lambda: self._kill(driver, task, None),
        )
        with self._lock:
            if task.killing or task.ended:  # Mesos does not check a task it kills
                return
            task.checks = checks
        checks.start()

    def _revoked(self, driver: Any, context: Mapping[str, str], why: str) -> None:
        """The task's secrets were revoked on the node: kill it now, saying why."""
        with self._lock:
            task = self._tasks.get(context.get("task_id", ""))
            if task is None:
                return
            task.revoked = why
        log.warning("task %s: its secrets were revoked: killing it now", task.task_id)
        self._kill(driver, task, 0.0, signal.SIGKILL)

    def _held(self) -> list[tuple[TaskInfo, ResolveContext]]:
        """The running tasks, and the context each asks for its secrets with."""
        with self._lock:
            return [
                (t.container.task, t.context)
                for t in self._tasks.values()
                if t.container is not None and t.context is not None
            ]

    def _kill(
        self,
        driver: Any,
        task: _Task,
        grace_period: float | None,
        signum: signal.Signals = signal.SIGTERM,
    ) -> None:
        """Kill ``task``: SIGTERM (``signum``) now, SIGKILL to the whole container after
        the grace period (the given one, else its TaskInfo's, else the default). A task
        not yet started is not started. A second kill may shorten the grace period,
        never lengthen it, as the command executor does."""
        grace = next(
            g for g in (grace_period, task.grace_period, self.kill_grace_period) if g is not None
        )
        now = time.monotonic()
        with self._lock:
            if task.ended:
                return
            if task.killing:
                deadline = task.kill_started + grace
                if deadline >= task.kill_deadline:
                    return
                task.kill_deadline = deadline
                if task.timer is not None and task.container is not None:
                    task.timer.cancel()
                    task.timer = _escalation(task.container, max(0.0, deadline - now))
                return
            task.killing = True
            task.kill_started, task.kill_deadline = now, now + grace
            container, checks = task.container, task.checks
        if checks is not None:
            checks.stop()  # as Mesos' executors: a task being killed is not checked
        if container is not None:
            self._signal(driver, task, container, signum)

    def _signal(
        self,
        driver: Any,
        task: _Task,
        container: Container,
        signum: signal.Signals = signal.SIGTERM,
    ) -> None:
        with self._lock:
            if task.ended:  # it ended while its checks were being stopped
                return
        if self.task_killing_state:
            self._update(driver, task.task_id, "TASK_KILLING")
        log.info(
            "task %s: %s, SIGKILL in %.1f s",
            task.task_id,
            signum.name,
            max(0.0, task.kill_deadline - time.monotonic()),
        )
        container.kill(signum)
        with self._lock:
            if not task.ended:
                delay = max(0.0, task.kill_deadline - time.monotonic())
                task.timer = _escalation(container, delay)

    def _end(
        self,
        driver: Any,
        task: _Task,
        state: str,
        message: str | None = None,
        reason: str | None = None,
        *,
        healthy: bool | None = None,
    ) -> None:
        """The task's terminal update, once; a failed or killed task of a group takes
        the rest of its group with it, as the default executor does."""
        with self._lock:
            if task.ended:
                return
            task.ended = True
            if task.timer is not None:
                task.timer.cancel()
            self._tasks.pop(task.task_id, None)
            siblings = (
                [  # one already being killed keeps its grace period (MESOS-8051)
                    self._tasks[i]
                    for i in task.group
                    if i in self._tasks and not self._tasks[i].killing
                ]
                if state in ("TASK_FAILED", "TASK_KILLED")
                and not task.by_group
                and not self._shutting_down
                else []
            )
            for sibling in siblings:
                sibling.by_group = True
        self._update(driver, task.task_id, state, message, reason, healthy=healthy)
        if siblings:
            log.info("task %s ended in %s: killing the rest of its group", task.task_id, state)
        for sibling in siblings:
            self._kill(driver, sibling, None)

    def _update(
        self,
        driver: Any,
        task_id: str,
        state: str,
        message: str | None = None,
        reason: str | None = None,
        *,
        healthy: bool | None = None,
        check_status: dict[str, Any] | None = None,
    ) -> None:
        status: dict[str, Any] = {
            "task_id": {"value": task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "uuid": pymesos.encode_data(uuid.uuid4().bytes),
        }
        if message:
            status["message"] = printable(message)
        if reason:
            status["reason"] = reason
        if healthy is not None:
            status["healthy"] = healthy
        if check_status is not None:
            status["check_status"] = check_status
        shown = f" ({printable(message)})" if message else ""
        log.info("task %s: %s%s", printable(task_id), state, shown)
        try:
            driver.sendStatusUpdate(status)
        except (RuntimeError, OSError) as error:
            log.error("could not send %s for task %s: %s", state, task_id, error)


@attrs.define
class _Rotating:
    """A task of the executor as the rotator acts on it (:class:`.rotation.RotatingTask`)."""

    executor: SecretsExecutor
    driver: Any
    running: _Task

    @property
    def task(self) -> TaskInfo:
        assert self.running.info is not None
        return self.running.info

    @property
    def container_id(self) -> str:
        container = self.running.container
        assert container is not None
        return container.id

    def signal(self, signum: int) -> None:
        container = self.running.container
        if container is not None:
            container.kill(signum)

    def restart(self, why: str, timeout: float) -> bool | None:
        return self.executor._restart(self.driver, self.running, why, timeout)

    def fail(self, why: str) -> None:
        self.running.failure = why
        self.executor._kill(self.driver, self.running, None)


def _killing(task: _Task) -> bool:
    return task.killing


def _stopping(task: _Task) -> bool:
    return task.killing or task.ended


def _task_id(raw: Any) -> str:
    """The task's ID from a LAUNCH, however malformed the rest of it is."""
    task_id = raw.get("task_id") if isinstance(raw, Mapping) else None
    value = task_id.get("value") if isinstance(task_id, Mapping) else None
    return value if isinstance(value, str) else "?"


def _kill_signal(task: _Task) -> signal.Signals:
    """A task whose secrets were revoked gets no grace period."""
    return signal.SIGKILL if task.revoked else signal.SIGTERM


def _revocation(task: _Task) -> str:
    """What a TASK_KILLED adds for a task whose secrets were revoked."""
    return f": its secrets were revoked on this node ({task.revoked})" if task.revoked else ""


def _escalation(container: Container, delay: float) -> threading.Timer:
    """SIGKILL to every process of ``container`` in ``delay`` seconds, if it still runs."""

    def escalate() -> None:
        if container.poll() is None:
            container.kill(signal.SIGKILL)

    timer = threading.Timer(delay, escalate)
    timer.daemon = True
    timer.start()
    return timer


def _grace_period(kill_policy: Any) -> float | None:
    """A ``KillPolicy``'s grace period in seconds (``grace_period.nanoseconds``), if any."""
    grace = kill_policy.get("grace_period") if isinstance(kill_policy, Mapping) else None
    nanoseconds = grace.get("nanoseconds") if isinstance(grace, Mapping) else None
    if isinstance(nanoseconds, int | str) and not isinstance(nanoseconds, bool):
        # Past a double (int64 at most from Mesos) is no grace period, as a malformed one.
        with contextlib.suppress(ValueError, OverflowError):
            return max(0, int(nanoseconds)) / 1e9
    return None


def _failure(termination: Termination) -> str:
    if termination.signal is not None:
        return f"Command terminated with {termination.describe().removeprefix('killed by ')}"
    return f"Command exited with status {termination.exit_code}"


def _safe(task_id: str) -> str:
    """The readable part of a task's directory name (a random part makes it unique)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in task_id)[:100] or "task"


def _output(sandbox: Path, name: str) -> IO[bytes]:
    """A task's stdout or stderr, appended to, never through a link the task planted;
    and, as it is opened again after a restart in a sandbox the task had, only a plain
    file of its own (not a FIFO that would block, a device, nor a hard link to another
    file)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(sandbox / name, flags | os.O_NONBLOCK, 0o644)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EPERM, "not a plain file of the task's", str(sandbox / name))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run as a Mesos executor until the agent shuts it down."""
    logging.basicConfig(
        level=logging.INFO,
        format="mesos-secrets-executor: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # pymesos brings its own stderr handler: its records, filtered, go through ours only.
    logging.getLogger("pymesos").handlers.clear()
    # Not dumpable, and the tokens blanked in /proc/self/environ, before anything runs.
    protect_process()
    # Taken out of the environment before anything else runs, and never logged.
    token = os.environ.pop(TOKEN_ENV, None)
    bootstrap = os.environ.pop(BOOTSTRAP_ENV, None)
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(
            f"mesos-secrets-executor: not started by a Mesos agent ({', '.join(missing)} unset); "
            "use 'mesos-secrets run' to run a spec locally",
            file=sys.stderr,
        )
        return 1
    try:
        config = load_config(known=resolvers.names())
        reconnection = Reconnection.from_environment(os.environ)
        # Read as the other durations the agent passes (pymesos' own reader asserts on
        # a malformed one); agents always set it, else Mesos' default.
        grace = os.environ.get(SHUTDOWN_GRACE_ENV)
        shutdown_grace = (
            parse_duration(grace, SHUTDOWN_GRACE_ENV) if grace else DEFAULT_SHUTDOWN_GRACE_S
        )
    except MesosSecretsError as error:
        print(f"mesos-secrets-executor: {error}", file=sys.stderr)
        return 1
    directory = Path(
        os.environ.get("MESOS_DIRECTORY") or os.environ.get("MESOS_SANDBOX") or os.getcwd()
    )
    runtime = Path(config.runtime_dir) if config.runtime_dir else default_runtime_dir()
    executor = SecretsExecutor(
        config,
        bootstrap=bootstrap,
        runtime_dir=runtime,
        directory=directory,
        shutdown_grace_period=shutdown_grace,
        executor_token=token,
    )
    driver = AgentDriver(executor, token, reconnection)
    # Without it pymesos would kill the executor at once on SHUTDOWN.
    driver.grace_shutdown_period = shutdown_grace
    try:
        driver.run()
    except KeyboardInterrupt:
        executor.shutdown(driver)
        return 130
    if driver.lost is not None:
        # As Mesos' executors, which exit with a failure when they lose their agent.
        print(f"mesos-secrets-executor: {driver.lost}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
