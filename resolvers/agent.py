"""``agent``: secrets from the node agent (``mesos-secrets agent``), over its Unix socket.

The client side of :mod:`mesos_secrets.agent`: the front end holds no store credentials;
the agent answers from the node's cache, after checking who asks (this process's user,
and for an executor its Mesos executor token, option ``executor_token``). Every secret
of a launch goes in one request (:attr:`batched`).

Options: ``socket`` (default ``$MESOS_SECRETS_AGENT_SOCKET``, else ``agent.sock`` in the
runtime directory: ``/run/mesos-secrets`` for root), ``timeout`` (seconds for one
exchange, default 30), ``agent_uid`` (the agent's user, when it is neither root nor this
process's: the client gives its token to, and takes values from, no one else). An
agent that is not running is a clear error naming the socket.
:meth:`close` tells the agent this process's secrets are no longer needed.

:meth:`watch` asks what happened to this client's holdings (a new version, a
revocation), on a connection of its own: a watch waits for news, and no resolve waits
behind it. :meth:`refresh` and :meth:`revoke` are the administrator's (``mesos-secrets
agent refresh``, ``mesos-secrets revoke``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesos_secrets.agent import protocol
from mesos_secrets.agent.settings import SOCKET_ENV, SOCKET_NAME
from mesos_secrets.audit import note
from mesos_secrets.errors import (
    ConfigError,
    ResolverError,
    ResolverUnavailableError,
    SecretAccessDeniedError,
)
from mesos_secrets.resolver import ResolveContext, SecretResolver
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["AgentResolver"]

_PEERCRED = struct.Struct("3i")


class _Untrusted(OSError):
    """The process on the socket is not one we may give a token to or take values from."""


class _Connection(http.client.HTTPConnection):
    """HTTP/1.1 to a Unix socket (``http.client`` connects by host and port only), to
    an agent running as root, as this user, or as ``agent_uid``."""

    def __init__(self, path: str, timeout: float, agent_uid: int | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path
        self.trusted = {0, os.geteuid()} | ({agent_uid} if agent_uid is not None else set())

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            self._check_peer(sock)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _check_peer(self, sock: socket.socket) -> None:
        _, uid, _ = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid not in self.trusted:
            raise _Untrusted(
                0,
                f"the process serving it runs as uid {uid}, not root or this user "
                "(set the option 'agent_uid' if that is the agent's)",
            )


def default_socket() -> Path:
    from mesos_secrets.containerizer.runtime import default_runtime_dir  # noqa: PLC0415

    return default_runtime_dir() / SOCKET_NAME


class AgentResolver(SecretResolver):
    """Asks the node agent. Thread-safe: one connection, one exchange at a time."""

    name = "agent"
    batched = True
    watches = True

    def __init__(
        self,
        *,
        socket: str | None = None,
        timeout: float = 30.0,
        executor_token: str | None = None,
        agent_uid: int | None = None,
    ) -> None:
        where = socket or os.environ.get(SOCKET_ENV) or str(default_socket())
        self.socket = os.path.abspath(where)
        if timeout <= 0:
            raise ConfigError("option 'timeout' of resolver 'agent' must be positive")
        self.timeout = float(timeout)
        self._token = executor_token
        self.agent_uid = agent_uid
        self._connection: _Connection | None = None
        self._lock = threading.Lock()
        self._asked = False
        #: Tells this client's holdings from another's in the same process.
        self._client = secrets.token_hex(8)
        #: The connection of the watch under way (another thread may end it).
        self._watching: _Connection | None = None
        self._watch_lock = threading.Lock()
        self._closed = False
        self._stopped = False
        #: The run of the agent the last watch was answered by.
        self._epoch: str | None = None
        #: How often each task wants its secrets read again (sent with its requests).
        self._refresh: dict[ResolveContext, float] = {}

    def __repr__(self) -> str:
        return f"<AgentResolver {self.socket}>"

    # --- SecretResolver ---------------------------------------------------------------

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        (result,) = self.resolve_references([reference], context)
        if isinstance(result, ResolverError):
            raise result
        return result

    def resolve_references(
        self, references: Sequence[Reference], context: ResolveContext | None = None
    ) -> list[SecretBytes | ResolverError]:
        if not references:
            return []
        self._asked = True  # before: the agent may record holdings even if no answer comes
        body: dict[str, Any] = {
            "references": protocol.references_to_json(references),
            "context": protocol.context_to_json(context),
            "client": self._client,
        }
        refresh = self._refresh.get(context) if context is not None else None
        if refresh is not None:
            body["refresh"] = refresh
        try:
            answer = self._exchange("POST", protocol.RESOLVE, body, references[0])
        except SecretAccessDeniedError:  # refused who we are: it recorded nothing
            self._asked = False
            raise
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(references):
            raise self._failed(references[0], "its answer does not follow the protocol")
        out: list[SecretBytes | ResolverError] = []
        stale = 0.0
        for i, (raw, reference) in enumerate(zip(results, references, strict=True)):
            try:
                out.append(protocol.answer_of(raw, reference, f"/results/{i}"))
            except protocol.ProtocolError as error:
                raise self._failed(reference, f"its answer is malformed at {error}") from None
            if isinstance(raw, dict) and isinstance(raw.get("stale"), int | float):
                stale = max(stale, float(raw["stale"]))
        if stale:
            note(stale_seconds=stale)
        return out

    def check(self) -> None:
        self._exchange("GET", protocol.HEALTH, None, None)

    def status(self) -> Any:
        """The agent's inventory (root and the agent's own user only)."""
        return self._exchange("GET", protocol.STATUS, None, None)

    def release(self, reference: Reference) -> bool:
        return False  # the agent releases what its callers no longer hold

    def watch(self, after: int | None, wait: float = protocol.MAX_WAIT) -> Any:
        body: dict[str, Any] = {"client": self._client, "wait": wait}
        if after is not None:
            body["after"] = after
        if self._epoch is not None:  # another agent than this one answers at once
            body["epoch"] = self._epoch
        connection = _Connection(self.socket, wait + self.timeout, self.agent_uid)
        try:  # connected before it is shown: stop_watching always has a socket to end
            connection.connect()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise self._unreachable(None, error) from None
        with self._watch_lock:
            if self._closed or self._stopped:
                connection.close()
                raise ResolverUnavailableError("no more watching", resolver=self.name)
            self._watching = connection
        try:
            status, payload = self._send(connection, "POST", protocol.WATCH, body, None)
        finally:
            with self._watch_lock:
                self._watching = None
            connection.close()
        answer = self._answer(status, payload, None)
        if not (
            isinstance(answer, dict)
            and isinstance(answer.get("seq"), int)
            and isinstance(answer.get("events"), list)
            and isinstance(answer.get("epoch"), str)
        ):
            raise self._failed(None, "its answer to a watch does not follow the protocol")
        self._epoch = answer["epoch"]
        return answer

    def stop_watching(self) -> None:
        with self._watch_lock:
            self._stopped = True  # a watch about to start does not
            connection = self._watching
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def refresh_every(self, context: ResolveContext, seconds: float | None) -> None:
        """Sent with the task's requests from now on (the agent reads its secrets again
        on that interval: :mod:`mesos_secrets.agent.poller`)."""
        if seconds is None:
            self._refresh.pop(context, None)
        else:
            self._refresh[context] = seconds

    def rollout_begin(
        self, app: str, change: str, task_id: str, batch: int, timeout: float
    ) -> tuple[bool, str]:
        body = {
            "phase": "begin",
            "app": app,
            "change": change,
            "task": task_id,
            "batch": batch,
            "timeout": timeout,
            "wait": protocol.MAX_WAIT - 5,
        }
        while True:  # on a connection of its own: the long wait holds up no other call
            connection = _Connection(self.socket, self.timeout, self.agent_uid)
            try:
                status, payload = self._send(connection, "POST", protocol.ROLLOUT, body, None)
            finally:
                connection.close()
            answer = self._answer(status, payload, None)
            go = answer.get("go") if isinstance(answer, dict) else None
            if isinstance(go, bool):
                reason = answer.get("reason")
                return go, reason if isinstance(reason, str) else ""
            if not isinstance(answer, dict) or "go" not in answer:
                raise self._failed(None, "its answer to a rollout does not follow the protocol")

    def rollout_end(self, app: str, change: str, task_id: str, healthy: bool | None) -> None:
        body = {"phase": "end", "app": app, "change": change, "task": task_id, "healthy": healthy}
        self._exchange("POST", protocol.ROLLOUT, body, None)

    def refresh(self, name: str) -> Any:
        """Have the agent read ``name`` from the store now and tell its holders if it
        changed (root and the agent's own user only)."""
        return self._exchange("POST", protocol.REFRESH, {"name": name}, Reference(name))

    def revoke(self, scope: str, value: str = "", reason: str = "") -> Any:
        """Break-glass revocation on this node (root and the agent's own user only):
        see :mod:`mesos_secrets.agent.server`."""
        body = {"scope": scope, "value": value, "reason": reason}
        return self._exchange("POST", protocol.REVOKE, body, None)

    def task_ended(self, context: ResolveContext) -> None:
        """Tell the agent the task's secrets are no longer needed (best effort: what is
        left ends with this process)."""
        self._refresh.pop(context, None)
        if not self._asked:
            return
        self._release(protocol.context_to_json(context))

    def private_paths(self) -> tuple[Path, ...]:
        """The directory of the agent's socket: no task may reach the socket (with its
        executor's uid, it could ask for everything that user may read). The directory,
        not the socket: a socket cannot be covered, and a mount over it would go when a
        restarted agent replaces it. So the socket lives in a directory of its own (the
        runtime directory, by default)."""
        return (Path(self.socket).parent,)

    def endpoints(self) -> tuple[str, ...]:
        """Where the agent's store is (its inventory says; root and the agent's user
        only): the agent itself is a socket no task sees."""
        status = self.status()
        found = status.get("agent", {}).get("endpoints") if isinstance(status, dict) else None
        return tuple(str(one) for one in found) if isinstance(found, list) else ()

    def close(self) -> None:
        """Tell the agent this process no longer needs what it was given; disconnect."""
        with self._watch_lock:
            self._closed = True
        self.stop_watching()
        if self._asked:
            self._asked = False
            self._release({})  # all of ours
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # --- the exchange -----------------------------------------------------------------

    def _release(self, context: dict[str, str]) -> None:
        """Best effort: on failure, the agent ends our holdings itself once this process
        is gone."""
        with contextlib.suppress(ResolverError):
            self._exchange(
                "POST", protocol.RELEASE, {"context": context, "client": self._client}, None
            )

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _send(
        self,
        connection: _Connection,
        method: str,
        path: str,
        body: Any,
        reference: Reference | None,
    ) -> tuple[int, bytes]:
        """One exchange on a connection of its own: the status and the body."""
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            connection.request(method, path, body=data, headers=self._headers())
            response = connection.getresponse()
            return response.status, response.read()
        except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as error:
            raise self._unreachable(reference, error) from None

    def _exchange(self, method: str, path: str, body: Any, reference: Reference | None) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers()
        with self._lock:
            for attempt in (1, 2):  # a kept connection the agent closed: once more
                connection = self._connection
                fresh = connection is None
                if connection is None:
                    connection = self._connection = _Connection(
                        self.socket, self.timeout, self.agent_uid
                    )
                try:
                    connection.request(method, path, body=data, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    break
                except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as error:
                    connection.close()
                    self._connection = None
                    if fresh or attempt == 2 or isinstance(error, TimeoutError):
                        raise self._unreachable(reference, error) from None
        return self._answer(response.status, payload, reference)

    def _answer(self, status: int, payload: bytes, reference: Reference | None) -> Any:
        """The JSON of an answer; an error for a refusal."""
        try:
            answer = json.loads(payload)
        except ValueError:
            raise self._failed(reference, f"it answered HTTP {status}, not JSON") from None
        if status != 200:
            refusal = answer.get("error") if isinstance(answer, dict) else None
            message = refusal.get("message") if isinstance(refusal, dict) else None
            kind = refusal.get("kind") if isinstance(refusal, dict) else None
            text = f"the node agent refused the request: {message or f'HTTP {status}'}"
            if status == 503:  # stopping: another may be there soon
                raise ResolverUnavailableError(text, **self._about(reference))
            if kind == "unauthenticated" or status in (401, 403):
                raise SecretAccessDeniedError(text, **self._about(reference))
            raise ResolverError(text, **self._about(reference))
        return answer

    def _about(self, reference: Reference | None) -> dict[str, Any]:
        return {
            "reference": reference.name if reference else None,
            "key": reference.key if reference else None,
            "resolver": self.name,
        }

    def _unreachable(self, reference: Reference | None, error: BaseException) -> ResolverError:
        if isinstance(error, _Untrusted):
            why = str(error.strerror)
        elif isinstance(error, FileNotFoundError | ConnectionRefusedError):
            why = "no agent is running there (start one: mesos-secrets agent)"
        elif isinstance(error, PermissionError):
            why = "permission denied (the socket is for the agent's user and group)"
        elif isinstance(error, TimeoutError):
            why = f"no answer within {self.timeout:g}s"
        else:
            why = getattr(error, "strerror", None) or type(error).__name__
        return ResolverUnavailableError(
            f"cannot reach the node agent at '{self.socket}': {why}", **self._about(reference)
        )

    def _failed(self, reference: Reference | None, why: str) -> ResolverError:
        return ResolverError(f"the node agent at '{self.socket}': {why}", **self._about(reference))
