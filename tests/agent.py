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
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
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
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                agent.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # --- what the test does ------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
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
        self.server.shutdown()
        self.server.server_close()

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
        if not self._authorize(request, call):
            return
        kind = call.get("type")
        if kind == "SUBSCRIBE":
            self._subscribe(request)
            return
        if kind == "UPDATE":
            status = call["update"]["status"]
            with self._changed:
                self.updates.append(status)
                self._changed.notify_all()
            self.send(
                {
                    "type": "ACKNOWLEDGED",
                    "acknowledged": {"task_id": status["task_id"], "uuid": status["uuid"]},
                }
            )
        request.send_response(202)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def _subscribe(self, request: BaseHTTPRequestHandler) -> None:
        stream: queue.Queue[dict[str, Any] | None] = queue.Queue()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.send_header("Mesos-Stream-Id", str(uuid.uuid4()))
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
        self._streams.append(stream)
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
