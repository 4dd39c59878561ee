"""Health checks and checks of a task, as Mesos' built-in executors run them.

A ``TaskInfo`` may carry a ``health_check`` (``HealthCheck``) and a ``check``
(``CheckInfo``), in Mesos v1 JSON. They are read and validated here with Mesos' own
messages (``src/common/validation.cpp``; the master words them "Task uses invalid health
check: …"), and run as the checker library does (``src/checks/``):

- the first check ``delay_seconds`` (default 15) after the task runs, then
  ``interval_seconds`` (10) after each one ends; each may take ``timeout_seconds`` (20;
  0: no limit) before it is abandoned (its command killed);
- COMMAND: the command runs inside the task's container (its cgroups and namespaces, its
  user, its sandbox, its environment with the secrets, the check's own variables over
  it); the result is its exit code. Its output is discarded, never logged;
- HTTP: ``GET scheme://127.0.0.1:port/path`` (``[::1]`` for IPv6), redirects followed,
  certificates not verified, as ``curl -s -S -L -k`` does; the result is the status
  code. TCP: a connection to the port; the result is whether it was made. Both from a
  thread in the task's network namespace when it has one of its own (``network``
  isolator), as Mesos' checker enters it.

A health check interprets the result (exit code 0, a status code in [200, 400), a
connection) as healthy or not. Failures before the first success within
``grace_period_seconds`` (10) of the start are ignored; every other failure is reported
(``healthy`` false), and the task is killed once ``consecutive_failures`` (3) happened
in a row; a success is reported when it is the first, or follows failures. A check is
not interpreted: its result (``CheckStatusInfo``) is reported whenever it changes, an
error or a timeout being an empty result. Neither ever logs a value.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from . import linux
from ._codec import JSONModel, frozen_mapping
from .errors import LaunchError, SecretValidationError
from .mesos import CommandInfo, VariableType

if TYPE_CHECKING:
    from .containerizer import Container
    from .mesos import TaskInfo

__all__ = [
    "REASON_CHECK_UPDATED",
    "REASON_HEALTH_UPDATED",
    "CheckInfo",
    "CheckType",
    "Checker",
    "HealthCheck",
    "HealthChecker",
    "Probe",
    "TaskChecks",
    "parse_checks",
]

log = logging.getLogger(__name__)

_R = TypeVar("_R")

#: ``TaskStatus.reason`` of an update sent because the health status changed.
REASON_HEALTH_UPDATED = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
#: ``TaskStatus.reason`` of an update sent because the check's result changed.
REASON_CHECK_UPDATED = "REASON_TASK_CHECK_STATUS_UPDATED"
#: The address HTTP and TCP checks reach: the task's loopback (the host's, or that of the
#: task's own network namespace, which the probe then joins).
IPV4_HOST = "127.0.0.1"
IPV6_HOST = "::1"
#: The longest duration a field may hold (Mesos' ``Duration``: int64 nanoseconds).
MAX_SECONDS = threading.TIMEOUT_MAX
#: How long a check command killed at its timeout (or at the end) may take to go.
_KILL_WAIT_S = 5.0


class CheckType(enum.IntEnum):
    """``CheckInfo.Type`` and ``HealthCheck.Type``."""

    UNKNOWN = 0
    COMMAND = 1
    HTTP = 2
    TCP = 3


class Protocol(enum.IntEnum):
    """``NetworkInfo.Protocol``."""

    IPv4 = 1
    IPv6 = 2


def _port(value: int, path: str) -> None:
    # Mesos takes any uint32 and truncates it to 16 bits for TCP: 65616 would be 80.
    if not 0 < value <= 65535:
        raise SecretValidationError("Expecting 'port' to be a TCP port (1-65535)", path)


@attrs.frozen
class HTTPCheckInfo(JSONModel):
    """``HealthCheck.HTTPCheckInfo``; ``statuses`` is read but, as in Mesos' executors,
    has no effect."""

    _keeps_extra: ClassVar[bool] = True

    port: int
    scheme: str | None = None
    path: str | None = None
    statuses: tuple[int, ...] = attrs.field(factory=tuple, converter=tuple)
    protocol: Protocol = Protocol.IPv4
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, repr=False)

    def __attrs_post_init__(self) -> None:
        _port(self.port, "/port")


@attrs.frozen
class TCPCheckInfo(JSONModel):
    """``HealthCheck.TCPCheckInfo``."""

    _keeps_extra: ClassVar[bool] = True

    port: int
    protocol: Protocol = Protocol.IPv4
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, repr=False)

    def __attrs_post_init__(self) -> None:
        _port(self.port, "/port")


@attrs.frozen
class CheckCommand(JSONModel):
    """``CheckInfo.Command``."""

    command: CommandInfo


@attrs.frozen
class CheckHttp(JSONModel):
    """``CheckInfo.Http``."""

    port: int
    path: str | None = None

    def __attrs_post_init__(self) -> None:
        _port(self.port, "/port")


@attrs.frozen
class CheckTcp(JSONModel):
    """``CheckInfo.Tcp``."""

    port: int

    def __attrs_post_init__(self) -> None:
        _port(self.port, "/port")


def _durations(model: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(model, name)
        if value < 0:
            raise SecretValidationError(f"Expecting '{name}' to be non-negative")
        if value > MAX_SECONDS:
            raise SecretValidationError(f"Expecting '{name}' to be at most {MAX_SECONDS:.0f}")


def _check_command(command: CommandInfo, what: str) -> None:
    if command.value is None:
        kind = "'shell command'" if command.shell else "'executable path'"
        raise SecretValidationError(f"{what} must contain {kind}")
    environment = command.environment
    if environment is not None and environment.secrets():
        # Mesos would set such a variable to an empty value; a secret that silently
        # is not there is a bug, so it is refused (the task's own secrets are there).
        raise SecretValidationError(
            f"{what}'s environment may not hold a SECRET variable (the check sees the "
            "task's environment, secrets included)"
        )


@attrs.frozen
class HealthCheck(JSONModel):
    """``HealthCheck``, validated as ``validateHealthCheck`` does."""

    _keeps_extra: ClassVar[bool] = True

    type: CheckType | None = None
    command: CommandInfo | None = None
    http: HTTPCheckInfo | None = None
    tcp: TCPCheckInfo | None = None
    delay_seconds: float = 15.0
    interval_seconds: float = 10.0
    timeout_seconds: float = 20.0
    consecutive_failures: int = 3
    grace_period_seconds: float = 10.0
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.type is None:
            raise SecretValidationError("HealthCheck must specify 'type'")
        if self.type is CheckType.COMMAND:
            if self.command is None:
                raise SecretValidationError(
                    "Expecting 'command' to be set for COMMAND health check"
                )
            _check_command(self.command, "Command health check")
        elif self.type is CheckType.HTTP:
            if self.http is None:
                raise SecretValidationError("Expecting 'http' to be set for HTTP health check")
            if self.http.scheme is not None and self.http.scheme not in ("http", "https"):
                raise SecretValidationError(
                    f"Unsupported HTTP health check scheme: '{self.http.scheme}'"
                )
            if self.http.path is not None and not self.http.path.startswith("/"):
                raise SecretValidationError(
                    f"The path '{self.http.path}' of HTTP health check must start with '/'"
                )
        elif self.type is CheckType.TCP:
            if self.tcp is None:
                raise SecretValidationError("Expecting 'tcp' to be set for TCP health check")
        else:
            raise SecretValidationError("'UNKNOWN' is not a valid health check type")
        _durations(
            self, ("delay_seconds", "grace_period_seconds", "interval_seconds", "timeout_seconds")
        )
        if not 0 <= self.consecutive_failures < 2**32:
            raise SecretValidationError("Expecting 'consecutive_failures' to be a uint32")

    def probe(self) -> Probe:
        if self.type is CheckType.COMMAND:
            assert self.command is not None
            return Probe(CheckType.COMMAND, command=self.command)
        if self.type is CheckType.HTTP:
            assert self.http is not None
            return Probe(
                CheckType.HTTP,
                port=self.http.port,
                path=self.http.path or "",
                scheme=self.http.scheme or "http",
                ipv6=self.http.protocol is Protocol.IPv6,
            )
        assert self.tcp is not None
        return Probe(CheckType.TCP, port=self.tcp.port, ipv6=self.tcp.protocol is Protocol.IPv6)


@attrs.frozen
class CheckInfo(JSONModel):
    """``CheckInfo``, validated as ``validateCheckInfo`` does."""

    _keeps_extra: ClassVar[bool] = True

    type: CheckType | None = None
    command: CheckCommand | None = None
    http: CheckHttp | None = None
    tcp: CheckTcp | None = None
    delay_seconds: float = 15.0
    interval_seconds: float = 10.0
    timeout_seconds: float = 20.0
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.type is None:
            raise SecretValidationError("CheckInfo must specify 'type'")
        if self.type is CheckType.COMMAND:
            if self.command is None:
                raise SecretValidationError("Expecting 'command' to be set for COMMAND check")
            _check_command(self.command.command, "Command check")
        elif self.type is CheckType.HTTP:
            if self.http is None:
                raise SecretValidationError("Expecting 'http' to be set for HTTP check")
            if self.http.path is not None and not self.http.path.startswith("/"):
                raise SecretValidationError(
                    f"The path '{self.http.path}' of HTTP check must start with '/'"
                )
        elif self.type is CheckType.TCP:
            if self.tcp is None:
                raise SecretValidationError("Expecting 'tcp' to be set for TCP check")
        else:
            raise SecretValidationError("'UNKNOWN' is not a valid check type")
        _durations(self, ("delay_seconds", "interval_seconds", "timeout_seconds"))

    def probe(self) -> Probe:
        if self.type is CheckType.COMMAND:
            assert self.command is not None
            return Probe(CheckType.COMMAND, command=self.command.command)
        if self.type is CheckType.HTTP:
            assert self.http is not None
            return Probe(CheckType.HTTP, port=self.http.port, path=self.http.path or "")
        assert self.tcp is not None
        return Probe(CheckType.TCP, port=self.tcp.port)

    def empty_status(self) -> dict[str, Any]:
        """The ``CheckStatusInfo`` of no result yet (or an error, a timeout)."""
        assert self.type is not None
        return {"type": self.type.name, self.type.name.lower(): {}}


def parse_checks(task: TaskInfo) -> tuple[HealthCheck | None, CheckInfo | None]:
    """The task's health check and check, validated; a :class:`SecretValidationError`
    worded as Mesos' master words it, at ``/health_check`` or ``/check``."""
    found: list[Any] = []
    for field, model, what in (
        ("health_check", HealthCheck, "health check"),
        ("check", CheckInfo, "check"),
    ):
        raw = task.extra.get(field)
        if raw is None:
            found.append(None)
            continue
        try:
            found.append(model.from_json(raw))
        except SecretValidationError as error:
            raise SecretValidationError(
                f"Task uses invalid {what}: {error.message}", f"/{field}{error.path}"
            ) from None
    return found[0], found[1]


# --- running one check --------------------------------------------------------------


@attrs.frozen
class Probe:
    """One kind of check, ready to run: COMMAND (in the container), HTTP or TCP."""

    type: CheckType
    command: CommandInfo | None = None
    port: int = 0
    path: str = ""
    scheme: str = "http"
    ipv6: bool = False

    def status(self, result: int | bool | None) -> dict[str, Any]:
        """The ``CheckStatusInfo`` of a result (None: none, after an error or timeout)."""
        name = self.type.name.lower()
        if result is None:
            return {"type": self.type.name, name: {}}
        field = {"command": "exit_code", "http": "status_code", "tcp": "succeeded"}[name]
        return {"type": self.type.name, name: {field: result}}


class _Run:
    """Runs probes for one checker; :meth:`stop` ends a command under way, and no
    command starts after it."""

    def __init__(self, container: Container | None, host: str | None) -> None:
        self.container = container
        self.host = host
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def __call__(self, probe: Probe, timeout: float | None) -> int | bool | None:
        """The result, or None when it could not be had (an error, the timeout)."""
        if probe.type is CheckType.COMMAND:
            return self._command(probe, timeout)
        host = self.host or (IPV6_HOST if probe.ipv6 else IPV4_HOST)
        if probe.type is CheckType.HTTP:
            return self._in_network(lambda: _http(probe, host, timeout))
        return self._in_network(lambda: _tcp(probe, host, timeout))

    def _in_network(self, probe: Callable[[], _R]) -> _R | None:
        """``probe()``, in the task's network: for a task in a namespace of its own (the
        network isolator), in a thread of ours that joins it and ends with the probe, so
        that 127.0.0.1 is the task's loopback (as Mesos' checker enters the task's
        namespace); None if it cannot be joined (the container has gone)."""
        namespace = self.container.network_namespace if self.container is not None else None
        if namespace is None:
            return probe()
        result: list[_R] = []

        def run() -> None:
            try:
                fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            try:
                linux.setns(fd, linux.CLONE_NEWNET)  # this thread's only
            except OSError:
                return
            finally:
                os.close(fd)
            result.append(probe())

        thread = threading.Thread(target=run, name="mesos-secrets-check", daemon=True)
        thread.start()
        thread.join()
        return result[0] if result else None

    def _command(self, probe: Probe, timeout: float | None) -> int | None:
        command = probe.command
        assert command is not None
        if self.container is None:
            return None
        if command.shell:
            argv, executable = ["/bin/sh", "-c", command.value or ""], "/bin/sh"
        else:
            argv, executable = list(command.arguments) or [command.value or ""], command.value or ""
        variables = command.environment.variables if command.environment else ()
        environment = {
            v.name: v.value
            for v in variables
            if v.type is VariableType.VALUE and v.value is not None
        }
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self.stopped.is_set():
                return None
            try:
                self._process = self.container.exec(argv, executable, environment)
            except LaunchError as error:
                log.warning("cannot run the check command: %s", error)
                return None
        process = self._process
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = process.wait(remaining)
        except subprocess.TimeoutExpired:
            _end(process)
            return None
        finally:
            with self._lock:
                self._process = None
        if code < 0:  # killed (the end, or the container's): no result
            return None
        return code

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            process = self._process
        if process is not None:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill a check command and what it started (its helper kills its process group on
    SIGTERM), then SIGKILL the helper if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(_KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _NoRedirectLimit(urllib.request.HTTPRedirectHandler):
    max_redirections = 50  # curl -L's default


def _http(probe: Probe, host: str, timeout: float | None) -> int | None:
    where = f"[{host}]" if ":" in host else host
    url = f"{probe.scheme}://{where}:{probe.port}{probe.path}"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as curl -k: the task's own certificate
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # never through a proxy from our environment
        urllib.request.HTTPSHandler(context=context),
        _NoRedirectLimit(),
    )
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _tcp(probe: Probe, host: str, timeout: float | None) -> bool:
    try:
        with socket.create_connection((host, probe.port), timeout=timeout):
            return True
    except OSError:
        return False


# --- checkers -------------------------------------------------------------------------


class _Loop:
    """delay, then check; wait the interval after each check ends; until stopped."""

    name = "check"

    def __init__(
        self,
        task_id: str,
        probe: Probe,
        *,
        delay: float,
        interval: float,
        timeout: float,
        run: _Run,
    ) -> None:
        self.task_id = task_id
        self.probe = probe
        self.delay = delay
        self.interval = interval
        self.timeout = timeout if timeout > 0 else None  # 0: no limit, as in Mesos
        self.run = run
        self.thread = threading.Thread(target=self._loop, daemon=True, name=self.name)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        stopped = self.run.stopped
        if stopped.wait(self.delay):
            return
        while not stopped.is_set():
            result = self.run(self.probe, self.timeout)
            if stopped.is_set():
                return
            self.result(result)
            if stopped.wait(self.interval):
                return

    def result(self, result: int | bool | None) -> None:
        raise NotImplementedError


class HealthChecker(_Loop):
    """Interprets each result; ``report(healthy, kill)`` on each failure that counts
    and on the first success (and the first after failures)."""

    def __init__(
        self,
        task_id: str,
        health_check: HealthCheck,
        run: _Run,
        report: Callable[[bool, bool], None],
    ) -> None:
        self.name = f"{health_check.type.name if health_check.type else '?'} health check"
        super().__init__(
            task_id,
            health_check.probe(),
            delay=health_check.delay_seconds,
            interval=health_check.interval_seconds,
            timeout=health_check.timeout_seconds,
            run=run,
        )
        self.grace_period = health_check.grace_period_seconds
        self.consecutive_failures = health_check.consecutive_failures
        self.report = report
        self.started = time.monotonic()
        self.initializing = True
        self.failures = 0

    def result(self, result: int | bool | None) -> None:
        if _healthy(self.probe.type, result):
            self.success()
        else:
            self.failure()

    def success(self) -> None:
        if self.initializing or self.failures > 0:
            self.report(True, False)
            self.initializing = False
        self.failures = 0

    def failure(self) -> None:
        if (
            self.initializing
            and self.grace_period > 0
            and time.monotonic() - self.started <= self.grace_period
        ):
            log.info(
                "ignoring a failure of the %s of task %s: still in its grace period",
                self.name,
                self.task_id,
            )
            return
        self.failures += 1
        log.warning(
            "%s of task %s failed %d time(s) in a row",
            self.name,
            self.task_id,
            self.failures,
        )
        self.report(False, self.failures >= self.consecutive_failures)


def _healthy(kind: CheckType, result: int | bool | None) -> bool:
    if result is None:
        return False
    if kind is CheckType.COMMAND:
        return result == 0
    if kind is CheckType.HTTP:
        return 200 <= int(result) < 400
    return bool(result)


class Checker(_Loop):
    """Reports each result (a ``CheckStatusInfo``) that differs from the one before."""

    def __init__(
        self,
        task_id: str,
        check: CheckInfo,
        run: _Run,
        report: Callable[[dict[str, Any]], None],
    ) -> None:
        self.name = f"{check.type.name if check.type else '?'} check"
        super().__init__(
            task_id,
            check.probe(),
            delay=check.delay_seconds,
            interval=check.interval_seconds,
            timeout=check.timeout_seconds,
            run=run,
        )
        self.report = report
        self.previous = check.empty_status()

    def result(self, result: int | bool | None) -> None:
        status = self.probe.status(result)
        if status != self.previous:
            self.previous = status
            self.report(status)


class TaskChecks:
    """A task's health check and check, started once it runs, stopped when it ends.

    ``update(healthy, check_status)`` sends a TASK_RUNNING update (each carries the last
    known of both, as Mesos' executors do); ``kill()`` kills the task, once, when it
    stayed unhealthy. After :meth:`stop` returns, neither is ever called again, and no
    check command of the task runs.
    """

    def __init__(
        self,
        task_id: str,
        health_check: HealthCheck | None,
        check: CheckInfo | None,
        *,
        container: Container | None,
        update: Callable[[bool | None, dict[str, Any] | None, str], None],
        kill: Callable[[], None],
        host: str | None = None,
    ) -> None:
        self.task_id = task_id
        self._update = update
        self._kill = kill
        self._lock = threading.Lock()
        self._stopped = False
        self.healthy: bool | None = None
        self.check_status: dict[str, Any] | None = check.empty_status() if check else None
        self.unhealthy_kill = False
        self._runs: list[_Run] = []
        self._loops: list[_Loop] = []
        if health_check is not None:
            run = _Run(container, host)
            self._runs.append(run)
            self._loops.append(HealthChecker(task_id, health_check, run, self._health))
        if check is not None:
            run = _Run(container, host)
            self._runs.append(run)
            self._loops.append(Checker(task_id, check, run, self._check))

    def __bool__(self) -> bool:
        return bool(self._loops)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        """No more updates; check commands under way are killed and reaped."""
        with self._lock:
            self._stopped = True
        for run in self._runs:
            run.stop()

    def _health(self, healthy: bool, kill: bool) -> None:
        with self._lock:
            if self._stopped:
                return
            log.info("task %s is %s", self.task_id, "healthy" if healthy else "not healthy")
            self.healthy = healthy
            self._update(healthy, self.check_status, REASON_HEALTH_UPDATED)
            if not kill:
                return
            # Mesos stops checking a task it kills.
            self._stopped = True
            self.unhealthy_kill = True
        for run in self._runs:
            run.stopped.set()
        log.warning("killing task %s: it stayed unhealthy", self.task_id)
        self._kill()

    def _check(self, status: dict[str, Any]) -> None:
        with self._lock:
            if self._stopped:
                return
            self.check_status = status
            self._update(self.healthy, status, REASON_CHECK_UPDATED)
