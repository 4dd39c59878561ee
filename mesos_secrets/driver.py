"""The executor's connection to its agent: pymesos' executor driver, extended.

pymesos (0.3.15) speaks the v1 executor HTTP API, but where the agent restarts or
refuses a call it departs from Mesos' own executor library (``src/executor/
executor.cpp``) and executors (``src/launcher/executor.cpp``,
``default_executor.cpp``). :class:`AgentDriver` subclasses
``pymesos.MesosExecutorDriver``: it keeps pymesos' event dispatch (``on_event``,
``on_subscribed``, ``on_launch``…, hence the ``Executor`` callbacks) and its
``SHUTDOWN`` handling, and replaces:

- the connection loop (``Process._run`` with pymesos' ``Connection``). pymesos backs off
  2, 4, 8… 15 s whatever ``MESOS_SUBSCRIPTION_BACKOFF_MAX`` says, retries for a day
  whatever ``MESOS_RECOVERY_TIMEOUT`` says, reconnects at once after a 503 (a busy
  loop) and ends on any other status. Ours does what the library does: without
  checkpointing a lost connection shuts the executor down; with it, the executor
  subscribes again at once, then after a random delay up to
  ``MESOS_SUBSCRIPTION_BACKOFF_MAX`` each time, and shuts down when
  ``MESOS_RECOVERY_TIMEOUT`` passes without a connection. A 503 or 404 to SUBSCRIBE
  (an agent still recovering, its routes not yet set up) is retried every second, as
  Mesos' executors re-send SUBSCRIBE; any other status is reported to the executor's
  ``error`` and retried the same way — except 401 and 403, which end the executor
  with the agent's reason (a token the agent refuses once it will refuse again).
- ``checkpoint``: on only for ``MESOS_CHECKPOINT=1``, as the library reads it; pymesos
  takes any value, "0" included, for on.
- ``sendStatusUpdate``, ``on_acknowledged``, ``gen_request``: pymesos records no update
  it sends, so its re-SUBSCRIBE never lists any and an update sent while the agent is
  away is lost. Here every update is kept until the agent's ACKNOWLEDGED names its
  uuid, and every SUBSCRIBE carries them (``unacknowledged_updates``) with the tasks no
  update of which was acknowledged yet (``unacknowledged_tasks``), as the command and
  default executors do; the agent forwards them and acknowledges them on the new
  stream. One made while a SUBSCRIBE is on its way goes as an UPDATE once it is
  answered (the library drops the call and holds the update until the next
  SUBSCRIBE, which may never come). An update is stamped with the executor's ID and a
  float ``timestamp`` (``TaskStatus.timestamp`` is a double; pymesos sends an integer).
- ``_send``: pymesos raises one ``RuntimeError`` for any status and cannot send while
  disconnected. Here a call made while not subscribed is kept (an update) or dropped
  (a framework message), as the library drops it; a 503 or 404 is logged, any other
  status reported to the executor's ``error`` once per subscription — the update
  stays kept either way, for the next SUBSCRIBE.
- ``Authorization: Bearer`` on every call, from ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``
  (pymesos has no executor authentication).
- ``on_kill``: pymesos drops the KILL event's ``kill_policy``; it is passed on to the
  executor's ``killTask``.

pymesos logs an event it cannot handle verbatim, and a LAUNCH holds VALUE secrets: a
filter on its loggers withholds what its records are about.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import pymesos  # type: ignore[import-untyped,unused-ignore]
from pymesos.process import HttpParser  # type: ignore[import-untyped,unused-ignore]

from .errors import ConfigError, printable

__all__ = ["AgentDriver", "Reconnection", "parse_duration"]

log = logging.getLogger("mesos_secrets.driver")

CHECKPOINT_ENV = "MESOS_CHECKPOINT"
RECOVERY_TIMEOUT_ENV = "MESOS_RECOVERY_TIMEOUT"
BACKOFF_MAX_ENV = "MESOS_SUBSCRIPTION_BACKOFF_MAX"
API_PATH = "/api/v1/executor"
#: Mesos' executors send SUBSCRIBE again every second until subscribed.
SUBSCRIBE_RETRY_S = 1.0
_READ_SIZE = 65536
#: stout's ``Duration::parse`` units.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 604800.0,
}
_DURATION = re.compile(r"([0-9.]+)([a-z]+)")
_RECORD_LENGTH = re.compile(rb"(\d+)\n")


def parse_duration(text: str, name: str) -> float:
    """Seconds in a Mesos duration (stout's ``Duration::parse``: ``500ms``, ``2secs``)."""
    match = _DURATION.fullmatch(text)
    try:
        value = float(match.group(1)) if match else None
    except ValueError:
        value = None
    unit = _UNITS.get(match.group(2)) if match else None
    if value is None or unit is None:
        raise ConfigError(
            f"{name}: {printable(text, 40)!r} is not a duration (a number and one of "
            "'ns', 'us', 'ms', 'secs', 'mins', 'hrs', 'days', 'weeks')"
        )
    return value * unit


@dataclass(frozen=True)
class Reconnection:
    """What the agent tells its executor about reconnecting, read as the library reads it."""

    checkpoint: bool
    recovery_timeout: float = 0.0
    backoff_max: float = 0.0
    recovery_timeout_text: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Reconnection:
        if environ.get(CHECKPOINT_ENV) != "1":
            return cls(checkpoint=False)
        texts = []
        for name in (RECOVERY_TIMEOUT_ENV, BACKOFF_MAX_ENV):
            text = environ.get(name)
            if text is None:
                raise ConfigError(f"{name} is not set (an agent sets it with {CHECKPOINT_ENV}=1)")
            texts.append(text)
        return cls(
            checkpoint=True,
            recovery_timeout=parse_duration(texts[0], RECOVERY_TIMEOUT_ENV),
            backoff_max=parse_duration(texts[1], BACKOFF_MAX_ENV),
            recovery_timeout_text=texts[0],
        )


@dataclass(frozen=True)
class _Response:
    """A status the agent answered a call with, and what it said about it."""

    code: int
    challenge: str | None
    body: str

    def describe(self, call: str) -> str:
        """The library's wording: ``Received '503 Service Unavailable' (…) for UPDATE``."""
        try:
            status = f"{self.code} {HTTPStatus(self.code).phrase}"
        except ValueError:
            status = str(self.code)
        return f"Received '{status}' ({self.body}) for {call}"


def _response(code: int, headers: Mapping[str, str], body: bytes) -> _Response:
    lowered = {name.lower(): value for name, value in headers.items()}
    return _Response(
        code=code,
        challenge=lowered.get("www-authenticate"),
        body=printable(body.decode("utf-8", "replace").strip(), 300),
    )


class _EventStream:
    """One SUBSCRIBE and its response on a non-blocking socket: a refusal is read whole;
    a 200 is a stream of RecordIO records, returned as events as they arrive."""

    def __init__(self, address: tuple[str, int], request: bytes) -> None:
        family, kind, proto, _, target = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0]
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        self.connected = False
        self.status: int | None = None
        self.refusal: _Response | None = None
        self.ended: str | None = None
        self._error = self.sock.connect_ex(target)
        self._unsent = request
        self._parser = HttpParser()
        self._records = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def writing(self) -> bool:
        return bool(self._unsent)

    def finish_connect(self) -> str | None:
        """None once connected, else why not."""
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if self._error not in (0, errno.EINPROGRESS) and not code:
            code = self._error
        if code:
            return os.strerror(code)
        self.connected = True
        return None

    def write(self) -> None:
        try:
            sent = self.sock.send(self._unsent)
        except BlockingIOError:
            return
        except OSError as error:
            self.ended = f"the connection to the agent failed: {error.strerror}"
            return
        self._unsent = self._unsent[sent:]

    def read(self) -> list[Any]:
        """The events that arrived whole; sets ``status``, then ``refusal`` or ``ended``."""
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return []
        except OSError as error:
            self.ended = f"the connection to the agent failed: {error.strerror}"
            return []
        parser = self._parser
        parsed = parser.execute(data, len(data))
        if data and parsed != len(data):
            self.ended = "the agent's response could not be parsed"
            return []
        if self.status is None and parser.is_headers_complete():
            self.status = parser.get_status_code()
        events: list[Any] = []
        if self.status == HTTPStatus.OK:
            self._records += parser.recv_body()
            events = self._events()
        elif self.status is not None and (parser.is_message_complete() or not data):
            headers = dict(parser.get_headers())
            self.refusal = _response(self.status, headers, parser.recv_body())
            return []
        if self.ended is None and (parser.is_message_complete() or not data):
            self.ended = (
                "the agent closed the event stream"
                if self.status is not None
                else "the agent closed the connection before answering SUBSCRIBE"
            )
        return events

    def _events(self) -> list[Any]:
        events = []
        while match := _RECORD_LENGTH.match(self._records):
            end = match.end() + int(match.group(1))
            if len(self._records) < end:
                break
            record, self._records = self._records[match.end() : end], self._records[end:]
            try:
                events.append(json.loads(record))
            except ValueError:
                events.append(None)  # the library reports it as an ERROR and reads on
        return events

    def close(self) -> None:
        self.sock.close()


@dataclass
class _Attempt:
    """What became of one SUBSCRIBE."""

    connected: bool = False
    subscribed: bool = False
    refusal: _Response | None = None
    failure: str = "the driver stopped"


class AgentDriver(pymesos.MesosExecutorDriver):  # type: ignore[misc]
    """pymesos' executor driver, connecting and reconnecting as Mesos' executor library.

    After :meth:`run` returns, :attr:`lost` says why the executor gave up on its agent
    (None when the agent shut it down).
    """

    _wakeup_fds: tuple[int, int] | None  # pymesos' pipe that wakes its IO thread

    def __init__(
        self,
        executor: Any,
        token: str | None,
        reconnection: Reconnection | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(executor, **kwargs)
        self._authorization = f"Bearer {token}" if token else None
        self.reconnection = reconnection or Reconnection.from_environment(os.environ)
        self.checkpoint = self.reconnection.checkpoint
        self.lost: str | None = None
        # Sent and not acknowledged, oldest first; guarded by _pending_lock with
        # _subscribed, so an update is either sent by its sender or by the flush after
        # a SUBSCRIBE, never lost between the two.
        self.updates: dict[bytes, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._subscribed = False
        self._in_subscribe: set[bytes] = set()
        self._reported: set[tuple[str, int]] = set()
        self._calls: http.client.HTTPConnection | None = None
        self._calls_lock = threading.Lock()

    def on_kill(self, event: Any) -> None:
        """pymesos drops the Kill event's ``kill_policy``; the executor needs it."""
        self.executor.killTask(self, self._dict_cls(event["task_id"]), event.get("kill_policy"))

    # --- status updates, kept until acknowledged ---------------------------------------

    def sendStatusUpdate(self, status: Mapping[str, Any]) -> None:
        sent = dict(status)
        sent.setdefault("uuid", pymesos.encode_data(uuid.uuid4().bytes))
        sent.setdefault("source", "SOURCE_EXECUTOR")
        sent.setdefault("executor_id", dict(self.executor_id))
        sent["timestamp"] = float(sent.get("timestamp", time.time()))
        update = {"status": sent}
        with self._pending_lock:
            self.updates[pymesos.decode_data(sent["uuid"])] = update
            subscribed = self._subscribed
        if subscribed:
            self._update(update)
        else:
            log.info(
                "not subscribed: %s for task %s is kept for the next SUBSCRIBE",
                sent.get("state"),
                (sent.get("task_id") or {}).get("value"),
            )

    def on_acknowledged(self, event: Mapping[str, Any]) -> None:
        with self._pending_lock:
            if self.updates.pop(pymesos.decode_data(event["uuid"]), None) is None:
                log.warning("the agent acknowledged a status update this executor never sent")
                return
            # A task is acknowledged once one of its updates is.
            self.tasks.pop(event["task_id"]["value"], None)

    def gen_request(self) -> bytes:
        """SUBSCRIBE, with every unacknowledged update and task (Call.Subscribe)."""
        with self._pending_lock:
            self._in_subscribe = set(self.updates)
            call = {
                "type": "SUBSCRIBE",
                "framework_id": self.framework_id,
                "executor_id": self.executor_id,
                "subscribe": {
                    "unacknowledged_tasks": list(self.tasks.values()),
                    "unacknowledged_updates": list(self.updates.values()),
                },
            }
        body = json.dumps(call).encode()
        head = [
            f"POST {API_PATH} HTTP/1.1",
            f"Host: {self._master}",
            "Content-Type: application/json",
            "Accept: application/json",
            "Connection: close",
            f"Content-Length: {len(body)}",
        ]
        if self._authorization is not None:
            head.append(f"Authorization: {self._authorization}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def _update(self, update: dict[str, Any]) -> None:
        call = {
            "type": "UPDATE",
            "framework_id": self.framework_id,
            "executor_id": self.executor_id,
            "update": update,
        }
        self._call("UPDATE", call, kept=True)

    def _flush(self) -> None:
        """Subscribed: send the updates made while the SUBSCRIBE was on its way."""
        with self._pending_lock:
            self._subscribed = True
            self._reported.clear()
            late = [u for key, u in self.updates.items() if key not in self._in_subscribe]
        for update in late:
            self._update(update)

    # --- calls -------------------------------------------------------------------------

    def _send(
        self,
        body: Any,
        path: str = API_PATH,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> _Response | None:
        """One call on the persistent call connection; None if it could not be made."""
        with self._pending_lock:
            if not self._subscribed:
                return None
        sent = {"Content-Type": "application/json", "Accept": "application/json"}
        sent.update(headers or {})
        if self._authorization is not None:
            sent["Authorization"] = self._authorization
        data = json.dumps(body).encode()
        with self._calls_lock:
            for reused in (self._calls is not None, False):
                if self._calls is None:
                    host, _, port = str(self.master).rpartition(":")
                    self._calls = http.client.HTTPConnection(
                        host, int(port), timeout=self._http_timeout
                    )
                try:
                    self._calls.request(method, path, body=data, headers=sent)
                    response = self._calls.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as error:
                    self._calls.close()
                    self._calls = None
                    if reused:
                        continue  # the agent closed an idle connection: once more, afresh
                    log.warning("could not reach the agent: %s", type(error).__name__)
                    return None
                if response.will_close:
                    self._calls.close()
                    self._calls = None
                return _response(response.status, dict(response.getheaders()), answer)
        return None

    def _call(self, kind: str, body: Any, *, kept: bool) -> None:
        """A call and its answer, handled as the library handles it."""
        response = self._send(body)
        if response is None:
            if not kept:
                log.warning("dropping %s: not subscribed to the agent", kind)
            return
        if HTTPStatus.OK <= response.code < HTTPStatus.MULTIPLE_CHOICES:
            return
        with self._pending_lock:
            reported = (kind, response.code) in self._reported
            self._reported.add((kind, response.code))
        if reported:
            return
        if response.code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            message = self._refused(response, kind)
        else:
            message = response.describe(kind)
        if kept:
            message += "; the update is kept and sent again with the next SUBSCRIBE"
        if response.code in (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.NOT_FOUND):
            log.warning("%s", message)
        else:
            self.executor.error(self, message)

    def sendFrameworkMessage(self, data: str) -> None:
        call = {
            "type": "MESSAGE",
            "executor_id": self.executor_id,
            "framework_id": self.framework_id,
            "message": {"data": data},
        }
        self._call("MESSAGE", call, kept=False)

    def _refused(self, response: _Response, kind: str) -> str:
        detail = response.challenge or response.body
        if response.code == HTTPStatus.UNAUTHORIZED:
            given = "its token" if self._authorization else "no token"
            subject = "the executor" if kind == "SUBSCRIBE" else f"the executor's {kind}"
            return f"the agent refused {subject} (401 Unauthorized; it sent {given}): {detail}"
        call = "" if kind == "SUBSCRIBE" else f" for {kind}"
        return f"the agent refused the executor's token{call} (403 Forbidden): {detail}"

    # --- the connection ----------------------------------------------------------------

    def _run(self) -> None:
        """Replaces pymesos' connection loop (see the module's docstring)."""
        try:
            self._connect()
        except Exception as error:  # noqa: BLE001 (an event handler's bug; its text may quote an event)
            self._give_up(f"handling the agent's events failed ({type(error).__name__})")
        finally:
            with self._pending_lock:
                self._subscribed = False
            with self._lock:
                fds, self._wakeup_fds = self._wakeup_fds, None
            for fd in fds or ():
                os.close(fd)

    def _connect(self) -> None:
        with self._lock:
            self._master = self._new_master
        host, _, port = str(self._master).rpartition(":")
        address = (host, int(port))
        reconnection = self.reconnection
        connected_once = False  # the library's "connected": its connection outlives a 503
        deadline: float | None = None  # the library's recovery timer
        while not self.aborted:
            if deadline is None:
                within = float(self._http_timeout)
            else:
                within = min(max(reconnection.backoff_max, 1.0), deadline - time.monotonic())
            attempt = self._attempt(address, within)
            if self.aborted:
                return
            if attempt.connected:
                connected_once = True
                deadline = None
            if attempt.refusal is not None:
                if not self._subscribe_refused(attempt.refusal):
                    return
                continue
            if attempt.subscribed:
                self.executor.disconnected(self)
            if deadline is None:
                if not (reconnection.checkpoint and connected_once):
                    if connected_once:
                        attempt.failure += (
                            f"; framework checkpointing is off ({CHECKPOINT_ENV} is not 1)"
                        )
                    self._give_up(attempt.failure)
                    return
                log.warning(
                    "%s; subscribing again for up to %s",
                    attempt.failure,
                    reconnection.recovery_timeout_text,
                )
                deadline = time.monotonic() + reconnection.recovery_timeout
                continue  # at once, then after a backoff each time
            if not self._back_off(deadline, attempt.failure):
                return

    def _back_off(self, deadline: float, failure: str) -> bool:
        """Wait up to MESOS_SUBSCRIPTION_BACKOFF_MAX; False once the recovery timeout passed."""
        backoff = random.uniform(0, self.reconnection.backoff_max)  # noqa: S311 (a jitter)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._pause(min(backoff, remaining))
        if time.monotonic() < deadline:
            return True
        self._give_up(
            f"not subscribed again within {RECOVERY_TIMEOUT_ENV} "
            f"({self.reconnection.recovery_timeout_text}): {failure}"
        )
        return False

    def _subscribe_refused(self, response: _Response) -> bool:
        """As the library: retry in a second, unless the agent refused the executor's token."""
        if response.code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            self._give_up(self._refused(response, "SUBSCRIBE"))
            return False
        message = response.describe("SUBSCRIBE")
        if response.code in (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.NOT_FOUND):
            with self._pending_lock:
                reported = ("SUBSCRIBE", response.code) in self._reported
                self._reported.add(("SUBSCRIBE", response.code))
            if not reported:
                log.warning("%s; subscribing again every %.0f s", message, SUBSCRIBE_RETRY_S)
        else:
            self.executor.error(self, message)
        self._pause(SUBSCRIBE_RETRY_S)
        return True

    def _attempt(self, address: tuple[str, int], within: float) -> _Attempt:
        """One SUBSCRIBE, and its events until the stream ends or the driver stops."""
        attempt = _Attempt()
        try:
            stream = _EventStream(address, self.gen_request())
        except OSError as error:
            attempt.failure = self._unreachable(error.strerror or "")
            return attempt
        try:
            if self._connect_stream(stream, attempt, time.monotonic() + within):
                self._follow(stream, attempt)
        finally:
            stream.close()
            if attempt.subscribed:
                with self._pending_lock:
                    self._subscribed = False
        return attempt

    def _unreachable(self, why: str) -> str:
        return f"cannot connect to the agent at {self._master}: {why}"

    def _connect_stream(self, stream: _EventStream, attempt: _Attempt, give_up_at: float) -> bool:
        """Wait for the connection; False if it failed or the driver stopped."""
        while not self.aborted:
            timeout = give_up_at - time.monotonic()
            if timeout <= 0:
                attempt.failure = self._unreachable("timed out")
                return False
            ready = self._wait(stream, timeout, write=True)
            if ready is None or not ready[1]:
                continue
            problem = stream.finish_connect()
            if problem is not None:
                attempt.failure = self._unreachable(problem)
                return False
            attempt.connected = True
            return True
        return False

    def _follow(self, stream: _EventStream, attempt: _Attempt) -> None:
        """Send SUBSCRIBE, then read its answer: a refusal, or events until the stream ends."""
        while not self.aborted:
            ready = self._wait(stream, None, write=stream.writing)
            if ready is None:
                continue
            readable, writable = ready
            if writable:
                stream.write()
            if readable:
                self._receive(stream, attempt)
            if stream.refusal is not None:
                attempt.refusal = stream.refusal
                return
            if stream.ended is not None:
                attempt.failure = stream.ended
                return

    def _wait(
        self, stream: _EventStream, timeout: float | None, *, write: bool
    ) -> tuple[bool, bool] | None:
        """Whether the stream can be read, written; None when woken up (or stopped)."""
        with self._lock:
            fds = self._wakeup_fds
        if fds is None:
            return None
        reading = [fds[0]] + ([stream] if stream.connected else [])
        readable, writable, _ = select.select(reading, [stream] if write else [], [], timeout)
        if fds[0] in readable:
            os.read(fds[0], 512)
            return None
        return stream in readable, stream in writable

    def _receive(self, stream: _EventStream, attempt: _Attempt) -> None:
        events = stream.read()
        if stream.status == HTTPStatus.OK and not attempt.subscribed:
            attempt.subscribed = True
            self._flush()
        for event in events:
            if self.aborted:
                return
            if event is None:
                self.executor.error(self, "Failed to de-serialize an event from the agent")
            else:
                self.process_event(event)

    def _pause(self, seconds: float) -> None:
        """Sleep, unless the driver is stopped meanwhile."""
        with self._lock:
            wakeup = self._wakeup_fds[0] if self._wakeup_fds else None
        if wakeup is None:
            return
        readable, _, _ = select.select([wakeup], [], [], max(seconds, 0.0))
        if readable:
            os.read(wakeup, 512)

    def _give_up(self, reason: str) -> None:
        """As the library does: the executor shuts its tasks down, and the driver stops."""
        self.lost = reason
        log.info("giving up on the agent: shutting down")
        if not self.local and self.grace_shutdown_period > 0:
            self._delay_kill()  # the library's safety net, should shutting down hang
        try:
            self.executor.shutdown(self)
        finally:
            self.stop()


class _WithholdDetails(logging.Filter):
    """pymesos logs an event it cannot handle verbatim, and a LAUNCH holds VALUE secrets
    (base64): its records keep what happened and lose what it was about.

    Records whose template only names an address pass as they are; the others become
    one line naming pymesos' function, and an exception is named by its type (its text
    and traceback may quote the event).
    """

    SAFE: ClassVar[frozenset[str]] = frozenset(
        {
            "Failed to send to %s",
            "Remote %s closed",
            "Try to redirect to new master: %s",
            "Master is not available, retry.",
            "Event stream ended",
            "Failed to recv from %s",
            "Thread abort:",
            "Process already started!",
            "Failed to force kill executor",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg in self.SAFE):
            record.msg = f"{record.funcName}: details withheld (agent events may hold secrets)"
            record.args = ()
        if record.exc_info:
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "an exception"
            record.msg = f"{record.msg} ({kind})"
            record.exc_info = None
            record.exc_text = None
        return True


def _withhold_pymesos_details() -> None:
    """Filter every pymesos logger (filters do not pass down to child loggers)."""
    withhold = _WithholdDetails()
    for name in list(logging.root.manager.loggerDict):
        if name == "pymesos" or name.startswith("pymesos."):
            logging.getLogger(name).addFilter(withhold)


_withhold_pymesos_details()
