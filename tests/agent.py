"""A test double for the agent side of the Mesos v1 executor HTTP API.

Mesos cannot run here, so this follows the documented protocol
(apache/mesos docs/executor-http-api.md and the agent's executor authentication,
reference/mesos.md §9):

- POST /api/v1/executor, ``Content-Type: application/json``;
- SUBSCRIBE opens a streaming response (200, ``Transfer-Encoding: chunked``,
  ``Mesos-Stream-Id``) of RecordIO records (``<length>\\n<json>``): SUBSCRIBED first,
  then LAUNCH, LAUNCH_GROUP, KILL, ACKNOWLEDGED, SHUTDOWN as the test sends them;
- other calls (UPDATE, MESSAGE) get 202 Accepted; each UPDATE is acknowledged on the
  stream with its task id and uuid;
- with authentication on, as ``--authenticate_http_executors``: no or a bad
  ``Authorization: Bearer`` JWT is 401 with ``WWW-Authenticate``; claims that do not
  match the call's framework and executor ids or the active container are 403.

Restarts, as the agent restarts (``src/slave/slave.cpp``, ``src/slave/http.cpp``):
``crash`` drops every connection and the listener; ``recover`` listens on the same
port again, answering 503 "Agent has not finished recovery" (or 404, routes not yet
set up) for a while if asked. A SUBSCRIBE's ``unacknowledged_updates`` are handled as
UPDATEs (a duplicate uuid is acknowledged again, not recorded twice) and acknowledged
on the new stream; a launched task that no update ever came for and that is not among
its ``unacknowledged_tasks`` becomes TASK_LOST, as ``Slave::subscribe`` does. An
update is acknowledged only while a stream is open, and not at all while
``acknowledging`` is off. ``executor_environment`` holds what the agent sets for
checkpointing: ``MESOS_CHECKPOINT``, ``MESOS_RECOVERY_TIMEOUT``,
``MESOS_SUBSCRIPTION_BACKOFF_MAX``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mesos_secrets.errors import SecretAccessDeniedError
from mesos_secrets.tokens import check_claims, verify

REALM = "mesos-agent-executor"


class Agent:
    def __init__(
        self,
        *,
        key: bytes,
        framework_id: str,
        executor_id: str,
        container_id: str,
        executor_info: dict[str, Any],
        authenticate: bool = True,
        capabilities: tuple[str, ...] = (),
        checkpoint: bool = False,
        recovery_timeout: str = "15mins",
        backoff_max: str = "2secs",
    ) -> None:
        self.key = key
        self.framework_id = framework_id
        self.executor_id = executor_id
        self.container_id = container_id
        self.executor_info = executor_info
        self.authenticate = authenticate
        #: The framework's capabilities (``FrameworkInfo.Capability.Type``), e.g.
        #: TASK_KILLING_STATE, as the agent passes them on in SUBSCRIBED.
        self.capabilities = capabilities
        self.calls: list[tuple[str, str | None]] = []  # (type, Authorization header)
        self.updates: list[dict[str, Any]] = []
        self.refusals: list[int] = []
        self.subscribed = threading.Event()
        self._streams: list[queue.Queue[dict[str, Any] | None]] = []
        self._changed = threading.Condition()
        self._init_restarts(checkpoint, recovery_timeout, backoff_max)
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                agent._connections.add(self.connection)

            def finish(self) -> None:
                agent._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                agent.handle(self)

        self._handler = Handler
        self._listen(0)

    # --- what the test does ------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        self._staged(event)
        for stream in list(self._streams):
            stream.put(event)

    def launch(self, task: dict[str, Any]) -> None:
        self.send({"type": "LAUNCH", "launch": {"task": task}})

    def launch_group(self, tasks: list[dict[str, Any]]) -> None:
        self.send({"type": "LAUNCH_GROUP", "launch_group": {"task_group": {"tasks": tasks}}})

    def kill(self, task_id: str, grace_period: float | None = None) -> None:
        """A KILL, with a ``kill_policy`` when ``grace_period`` (seconds) is given."""
        kill: dict[str, Any] = {"task_id": {"value": task_id}}
        if grace_period is not None:
            kill["kill_policy"] = {"grace_period": {"nanoseconds": int(grace_period * 1e9)}}
        self.send({"type": "KILL", "kill": kill})

    def shutdown(self) -> None:
        self.send({"type": "SHUTDOWN"})

    def states(self, task_id: str) -> list[str]:
        with self._changed:
            return [u["state"] for u in self.updates if u["task_id"]["value"] == task_id]

    def wait_for(self, task_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for update in self.updates:
                    if update["task_id"]["value"] == task_id and update["state"] == state:
                        return update
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {state} for {task_id}; got {self.states(task_id)}")
                self._changed.wait(remaining)

    def stop(self) -> None:
        for stream in list(self._streams):
            stream.put(None)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # --- the protocol ----------------------------------------------------------------

    def _authorize(self, request: BaseHTTPRequestHandler, call: dict[str, Any]) -> bool:
        header = request.headers.get("Authorization")
        self.calls.append((str(call.get("type")), header))
        if not self.authenticate:
            return True
        challenge = f'Bearer realm="{REALM}"'
        if header is None:
            return self._refuse(request, 401, challenge)
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return self._refuse(
                request,
                401,
                f'{challenge}, error="invalid_token", error_description="Scheme \'{scheme}\' unsupported"',
            )
        try:
            claims = verify(token, self.key)
        except SecretAccessDeniedError as error:
            return self._refuse(
                request, 401, f'{challenge}, error="invalid_token", error_description="{error}"'
            )
        try:
            check_claims(
                claims,
                framework_id=(call.get("framework_id") or {}).get("value", ""),
                executor_id=(call.get("executor_id") or {}).get("value", ""),
                container_id=self.container_id,
            )
        except SecretAccessDeniedError as error:
            return self._refuse(request, 403, None, str(error))
        return True

    def _refuse(
        self, request: BaseHTTPRequestHandler, code: int, challenge: str | None, body: str = ""
    ) -> bool:
        self.refusals.append(code)
        data = body.encode()
        request.send_response(code)
        if challenge:
            request.send_header("WWW-Authenticate", challenge)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
        return False

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        call = json.loads(request.rfile.read(length) or b"{}")
        if self._not_found(request, call):
            return
        if not self._authorize(request, call):
            return
        if self._unavailable(request, call):
            return
        kind = call.get("type")
        if kind == "SUBSCRIBE":
            self._subscribe(request, call)
            return
        if kind == "UPDATE":
            self._status_update(call["update"]["status"])
        request.send_response(202)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def _subscribe(self, request: BaseHTTPRequestHandler, call: dict[str, Any]) -> None:
        stream: queue.Queue[dict[str, Any] | None] = queue.Queue()
        acknowledgements = self._resubscribed(call.get("subscribe") or {})
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        self._write(
            request,
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": self.executor_info,
                    "framework_info": {
                        "id": {"value": self.framework_id},
                        "user": "root",
                        "name": "test framework",
                        "principal": "test-principal",
                        "capabilities": [{"type": c} for c in self.capabilities],
                    },
                    "agent_info": {"hostname": "localhost", "id": {"value": "agent-1"}},
                    "container_id": {"value": self.container_id},
                },
            },
        )
        for event in acknowledgements:
            stream.put(event)
        self._streams.append(stream)
        with self._changed:  # once the events the test sends next reach the executor
            self.subscriptions.append((time.monotonic(), call))
            self._changed.notify_all()
        self.subscribed.set()
        try:
            while True:
                try:
                    event = stream.get(timeout=5)
                except queue.Empty:
                    event = {"type": "HEARTBEAT"}
                if event is None:
                    break
                self._write(request, event)
        except OSError:
            pass  # the executor went away
        finally:
            self._streams.remove(stream)
            with contextlib.suppress(OSError):
                request.wfile.write(b"0\r\n\r\n")
            request.close_connection = True

    @staticmethod
    def _write(request: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
        record = json.dumps(event).encode()
        framed = str(len(record)).encode() + b"\n" + record
        request.wfile.write(f"{len(framed):x}\r\n".encode() + framed + b"\r\n")
        request.wfile.flush()

    # --- restarts, refusals, acknowledgements ---------------------------------------------

    def _init_restarts(self, checkpoint: bool, recovery_timeout: str, backoff_max: str) -> None:
        self.checkpoint = checkpoint
        self.recovery_timeout = recovery_timeout
        self.backoff_max = backoff_max
        self.acknowledging = True
        self.subscriptions: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, call)
        self.up_since = time.monotonic()
        self.server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._refusing: dict[str, int] = {}  # call type -> status, until told otherwise
        self._unavailable_until = 0.0
        self._unavailable_code = 503
        self._staging: set[str] = set()  # launched, no update received yet
        self._uuids: set[str] = set()

    def executor_environment(self) -> dict[str, str]:
        """What the agent puts in its executor's environment about reconnecting."""
        if not self.checkpoint:
            return {}
        return {
            "MESOS_CHECKPOINT": "1",
            "MESOS_RECOVERY_TIMEOUT": self.recovery_timeout,
            "MESOS_SUBSCRIPTION_BACKOFF_MAX": self.backoff_max,
        }

    def _listen(self, port: int) -> None:
        self.server = _Server(("127.0.0.1", port), self._handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.up_since = time.monotonic()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def crash(self) -> None:
        """The agent process dies: the listener and every connection go, streams unended."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for stream in list(self._streams):
            stream.put(None)

    def recover(self, *, unavailable: float = 0.0, code: int = 503) -> None:
        """The agent is back on the same port, answering ``code`` for ``unavailable`` s:
        503 before it finished recovering, 404 before its routes are set up."""
        self._unavailable_until = time.monotonic() + unavailable
        self._unavailable_code = code
        self._listen(int(self.address.rpartition(":")[2]))

    def restart(self, down: float, *, unavailable: float = 0.0, code: int = 503) -> None:
        self.crash()
        time.sleep(down)
        self.recover(unavailable=unavailable, code=code)

    def refuse(self, call: str, code: int | None) -> None:
        """Answer every ``call`` (UPDATE, MESSAGE…) with ``code``; None stops refusing."""
        if code is None:
            self._refusing.pop(call, None)
        else:
            self._refusing[call] = code

    def subscriptions_since(self, since: float) -> list[dict[str, Any]]:
        with self._changed:
            return [call for at, call in self.subscriptions if at >= since]

    def wait_for_subscription(self, since: float, timeout: float = 30) -> float:
        """When the first SUBSCRIBE after ``since`` came (monotonic time)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, _ in self.subscriptions:
                    if at >= since:
                        return at
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no SUBSCRIBE came")
                self._changed.wait(remaining)

    def _not_found(self, request: BaseHTTPRequestHandler, call: dict[str, Any]) -> bool:
        """Before its routes are set up, libprocess answers 404 for any path."""
        if self._unavailable_code != 404 or time.monotonic() >= self._unavailable_until:
            return False
        self.calls.append((str(call.get("type")), request.headers.get("Authorization")))
        self._refuse(request, 404, None)
        return True

    def _unavailable(self, request: BaseHTTPRequestHandler, call: dict[str, Any]) -> bool:
        kind = str(call.get("type"))
        if kind in self._refusing:
            code = self._refusing[kind]
            challenge = 'Bearer realm="mesos-agent-executor", error="invalid_token"'
            self._refuse(request, code, challenge if code == 401 else None)
            return True
        if self._unavailable_code == 503 and time.monotonic() < self._unavailable_until:
            self._refuse(request, 503, None, "Agent has not finished recovery")
            return True
        return False

    def _status_update(self, status: dict[str, Any]) -> dict[str, Any] | None:
        """The agent's statusUpdate: recorded once per uuid; the ACKNOWLEDGED event for it
        (sent on the open streams), unless acknowledgements are withheld."""
        with self._changed:
            if status["uuid"] not in self._uuids:
                self._uuids.add(status["uuid"])
                self.updates.append(status)
                self._staging.discard(status["task_id"]["value"])
                self._changed.notify_all()
        if not self.acknowledging:
            return None
        event = {
            "type": "ACKNOWLEDGED",
            "acknowledged": {"task_id": status["task_id"], "uuid": status["uuid"]},
        }
        self.send(event)
        return event

    def _resubscribed(self, subscribe: dict[str, Any]) -> list[dict[str, Any]]:
        """Slave::subscribe: the executor's unacknowledged updates, then its staged tasks.
        Returns the acknowledgements due on the new stream."""
        acknowledgements = []
        for update in subscribe.get("unacknowledged_updates") or []:
            event = self._status_update(update["status"])
            if event is not None:
                acknowledgements.append(event)
        known = {task["task_id"]["value"] for task in subscribe.get("unacknowledged_tasks") or []}
        with self._changed:
            for task_id in sorted(self._staging - known):
                self._staging.discard(task_id)
                self.updates.append(
                    {
                        "task_id": {"value": task_id},
                        "state": "TASK_LOST",
                        "source": "SOURCE_AGENT",
                        "reason": "REASON_AGENT_RESTARTED",
                        "message": "Task launched during agent restart",
                    }
                )
            self._changed.notify_all()
        return acknowledgements

    def _staged(self, event: dict[str, Any]) -> None:
        """A task sent to the executor stays STAGING until an update for it comes.
        (Tests send malformed events too: those stage nothing.)"""
        tasks = []
        with contextlib.suppress(KeyError, TypeError):
            if event["type"] == "LAUNCH":
                tasks = [event["launch"]["task"]["task_id"]["value"]]
            elif event["type"] == "LAUNCH_GROUP":
                tasks = [
                    t["task_id"]["value"] for t in event["launch_group"]["task_group"]["tasks"]
                ]
        with self._changed:
            self._staging.update(tasks)


class _Server(ThreadingHTTPServer):
    """An executor that goes away mid-request (killed, as tests do) is no error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)
