"""The node agent's protocol: HTTP/1.1 with JSON bodies on a Unix socket.

HTTP because it is what every language and tool already speaks (``curl
--unix-socket``), served by the standard library on one side and read by
:mod:`http.client` on the other; JSON as everything else here. A value travels only in a
response body, base64-encoded, and nowhere else: not in a path, a header or a log line.

``POST /v1/resolve``::

    {"references": [{"name": "/myapp/db", "key": "password"}, ...],
     "context": {"task_id": "web.1", "framework_id": "...", "executor_id": "...",
                 "container_id": "...", "principal": "..."}}

    200 {"results": [{"value": "<base64>", "age": 1.5, "stale": 0.0, "version": "3"},
                     {"error": {"kind": "denied", "message": "Secret /x is not ..."}}]}

Each result is in its reference's place; ``age`` is how long ago the store gave the
value (seconds), ``stale`` how far past its freshness it is when the store could not be
reached (0 when fresh), ``version`` the store's version of it when the store says.
``kind`` is ``not_found``, ``denied``, ``unavailable`` or ``error``.

An executor sends its Mesos executor token, ``Authorization: Bearer <token>``: the
agent checks it with the Mesos agent's key and takes the framework, executor and
container ids from its claims instead of the body's, and the principal the body states
(its framework's). Every other caller is known by its process's user
(``SO_PEERCRED``), which names its principal; a principal it states is ignored.

Both may carry ``"client"``: an id the client chose for itself (its holdings are its
own, apart from another client's in the same process); and ``"refresh"``: how often (in
seconds, 1 to 86400) the task wants its secrets read again, to be told of new versions
(:mod:`.poller`).

``POST /v1/release`` (``{"context": {...}, "client": "..."}``): the client's task (its
``container_id``, else its ``task_id``, else everything the client holds) no longer
needs its secrets. ``GET /v1/status``: the inventory, for the agent's own user and root only.
``GET /v1/health``: ``{"ok": true}`` once the agent serves.

``POST /v1/watch`` (``{"client": "...", "after": 12, "wait": 20, "epoch": "..."}``): what
happened to the secrets the client's tasks hold since event ``after``, waiting up to
``wait`` seconds (at most 25) for something to happen; without ``after``, or when
``epoch`` (the agent's run, as the last watch was answered) is not this agent's, at once,
the last event's number::

    200 {"epoch": "...", "seq": 14,
         "events": [{"seq": 13, "kind": "revoked", "names": ["/myapp/db"],
                     "reason": "...", "context": {"task_id": "web.1"}}, ...]}

``kind`` is ``changed`` (a new version is in the store: ask again; ``change`` names it,
the same for every task told), ``stale`` (it could not be read again: ``reason`` says
why; the task keeps what it has, or stops, as its policy says) or ``revoked`` (stop the
task: its secrets were revoked; ``reason`` says by whom and why). Events name secrets,
never values.

``POST /v1/rollout``: a front end restarting a task for a new version asks its turn
(``{"phase": "begin", "app": "/web", "change": "...", "task": "web.1", "batch": 1,
"timeout": 60, "wait": 20}`` -> ``{"go": true}``, ``{"go": false, "reason": "..."}`` or,
after ``wait`` seconds, ``{"go": null}``: ask again), then says how it went (``{"phase":
"end", ..., "healthy": true}``): :mod:`.rollouts`.

For root and the agent's own user: ``POST /v1/refresh`` (``{"name": "/myapp/db"}``):
read the secret from the store now; if its version or value changed, its holders are
told (``changed``). ``POST /v1/revoke`` (``{"scope": "secret", "value": "/myapp/db",
"reason": "..."}``, scope ``secret``, ``prefix``, ``task``, ``framework`` or ``all``):
break-glass: the matching holders are told to stop their tasks, their holdings end
(leases revoked), the cache forgets the secrets, and their executor tokens are refused
from then on.

A request the agent refuses as a whole is answered ``4xx`` with ``{"error": {"kind":
..., "message": ...}}``: ``bad_request`` (400), ``unauthenticated`` (401), ``forbidden``
(403), ``not_found`` (404), ``method`` (405), ``too_large`` (413).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import (
    ResolverError,
    ResolverUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    SecretValidationError,
)
from ..resolver import ResolveContext
from ..secret import Reference
from ..secretbytes import SecretBytes

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_BODY",
    "MAX_REFERENCES",
    "ProtocolError",
    "answer_of",
    "client_from_json",
    "context_from_json",
    "context_to_json",
    "error_kind",
    "error_of",
    "references_from_json",
    "references_to_json",
]

VERSION = "v1"
RESOLVE = f"/{VERSION}/resolve"
RELEASE = f"/{VERSION}/release"
STATUS = f"/{VERSION}/status"
HEALTH = f"/{VERSION}/health"
WATCH = f"/{VERSION}/watch"
REFRESH = f"/{VERSION}/refresh"
REVOKE = f"/{VERSION}/revoke"
ROLLOUT = f"/{VERSION}/rollout"
#: The longest a watch waits for an event (below the agent's 30 s idle timeout).
MAX_WAIT = 25.0
#: What a revocation may be scoped to.
SCOPES = ("secret", "prefix", "task", "framework", "all")
#: The largest request body the agent reads (bytes).
MAX_BODY = 1 << 20
#: The most references one request may ask for.
MAX_REFERENCES = 4096
#: The ResolveContext ids a request may carry.
CONTEXT_FIELDS = ("framework_id", "executor_id", "task_id", "container_id")
#: And the principal, which the agent takes only from an executor with a valid token.
_STATED = (*CONTEXT_FIELDS, "principal")

_KINDS: tuple[tuple[type[ResolverError], str], ...] = (
    (SecretNotFoundError, "not_found"),
    (SecretAccessDeniedError, "denied"),
    (ResolverUnavailableError, "unavailable"),
)
_ERRORS = {kind: cls for cls, kind in _KINDS}


class ProtocolError(Exception):
    """A request or an answer that does not follow the protocol; names where, never
    what was sent."""

    def __init__(self, message: str, status: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def error_kind(error: ResolverError) -> str:
    for cls, kind in _KINDS:
        if isinstance(error, cls):
            return kind
    return "error"


def error_of(kind: str, message: str, reference: Reference) -> ResolverError:
    """The exception an answer's ``{"error": ...}`` stands for."""
    cls = _ERRORS.get(kind, ResolverError)
    return cls(message, reference=reference.name, key=reference.key, resolver="agent")


def references_to_json(references: Sequence[Reference]) -> list[dict[str, str]]:
    return [
        {"name": r.name} if r.key is None else {"name": r.name, "key": r.key} for r in references
    ]


def references_from_json(raw: Any) -> list[Reference]:
    if not isinstance(raw, list):
        raise ProtocolError("/references: expected an array")
    if len(raw) > MAX_REFERENCES:
        raise ProtocolError(f"/references: at most {MAX_REFERENCES} in one request")
    references = []
    for i, item in enumerate(raw):
        where = f"/references/{i}"
        if not isinstance(item, dict) or not set(item) <= {"name", "key"}:
            raise ProtocolError(f"{where}: expected an object with 'name' and optional 'key'")
        name, key = item.get("name"), item.get("key")
        if not isinstance(name, str) or not (key is None or isinstance(key, str)):
            raise ProtocolError(f"{where}: 'name' and 'key' must be strings")
        if not name.strip("/"):
            raise ProtocolError(f"{where}/name: a secret's name must not be empty")
        try:  # one name for one secret: "db/x" and "/db/x/" are "/db/x"
            references.append(Reference("/" + name.strip("/"), key))
        except SecretValidationError as error:
            raise ProtocolError(f"{where}: {error}") from None
    return references


def context_to_json(context: ResolveContext | None) -> dict[str, str]:
    if context is None:
        return {}
    return {name: value for name in _STATED if (value := getattr(context, name)) is not None}


def context_from_json(raw: Any) -> dict[str, str]:
    """The ids a request says it is for (not yet trusted: see the agent)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError("/context: expected an object")
    unknown = sorted(set(raw) - set(_STATED))
    if unknown:
        raise ProtocolError(
            f"/context: unknown field(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(_STATED)})"
        )
    for name, value in raw.items():
        if not isinstance(value, str) or not value.isprintable() or len(value) > 1024:
            raise ProtocolError(f"/context/{name}: expected a printable string")
    return dict(raw)


def client_from_json(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > 64 or not raw.isprintable():
        raise ProtocolError("/client: expected a printable string of at most 64 characters")
    return raw


def name_from_json(raw: Any, where: str) -> str:
    """A secret's name, as the agent keeps it (``/a/b``)."""
    if not isinstance(raw, str) or not raw.strip("/") or len(raw) > 1024:
        raise ProtocolError(f"{where}: expected a secret's name")
    try:
        return Reference("/" + raw.strip("/")).name
    except SecretValidationError as error:
        raise ProtocolError(f"{where}: {error}") from None


#: The intervals a task may ask its secrets to be read again at (seconds).
MIN_REFRESH, MAX_REFRESH = 1.0, 86400.0


def refresh_from_json(raw: Any) -> float | None:
    """A resolve request's ``refresh``: how often the task wants its secrets read again."""
    if raw is None:
        return None
    if (
        not isinstance(raw, int | float)
        or isinstance(raw, bool)
        or not MIN_REFRESH <= raw <= MAX_REFRESH
    ):
        raise ProtocolError(f"/refresh: expected seconds, from {MIN_REFRESH:g} to {MAX_REFRESH:g}")
    return float(raw)


def rollout_from_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout request's fields, checked (see the module)."""
    phase = body.get("phase")
    if phase not in ("begin", "end"):
        raise ProtocolError("/phase: expected 'begin' or 'end'")
    out: dict[str, Any] = {"phase": phase}
    for name in ("app", "change", "task"):
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > 1024 or not value.isprintable():
            raise ProtocolError(f"/{name}: expected a printable string")
        out[name] = value
    if phase == "end":
        if "healthy" not in body or not isinstance(body["healthy"], bool | None):
            raise ProtocolError("/healthy: expected true, false or null (not restarted)")
        out["healthy"] = body["healthy"]
        return out
    batch, timeout, wait = body.get("batch", 1), body.get("timeout", 60), body.get("wait", 20)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 1000:
        raise ProtocolError("/batch: expected a number of tasks from 1 to 1000")
    for name, value, high in (("timeout", timeout, 86400.0), ("wait", wait, MAX_WAIT)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
            raise ProtocolError(f"/{name}: expected seconds, from 0 to {high:g}")
    out.update(batch=batch, timeout=float(timeout), wait=float(wait))
    return out


def watch_from_json(body: Mapping[str, Any]) -> tuple[int | None, float, str | None]:
    """A watch request's ``after``, ``wait`` and ``epoch``."""
    after, wait, epoch = body.get("after"), body.get("wait", MAX_WAIT), body.get("epoch")
    if after is not None and (
        not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 1 << 62
    ):
        raise ProtocolError("/after: expected an event's number")
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise ProtocolError(f"/wait: expected seconds, from 0 to {MAX_WAIT:g}")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
        raise ProtocolError("/epoch: expected the agent's run, as a watch was answered")
    return after, float(wait), epoch


def scope_from_json(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """A revocation's scope, what it names, and why (``reason``, optional)."""
    scope, value, reason = body.get("scope"), body.get("value"), body.get("reason", "")
    if scope not in SCOPES:
        raise ProtocolError(f"/scope: expected one of {', '.join(SCOPES)}")
    if not isinstance(reason, str) or len(reason) > 1024 or not reason.isprintable():
        raise ProtocolError("/reason: expected a printable string of at most 1024 characters")
    if scope == "all":
        if value not in (None, ""):
            raise ProtocolError("/value: scope 'all' takes no value")
        return scope, "", reason
    if scope in ("secret", "prefix"):
        return scope, name_from_json(value, "/value"), reason
    if not isinstance(value, str) or not value or len(value) > 1024 or not value.isprintable():
        raise ProtocolError(f"/value: expected the {scope}'s id")
    return scope, value, reason


def value_to_json(value: SecretBytes) -> str:
    return base64.b64encode(value.reveal()).decode("ascii")


def answer_of(raw: Any, reference: Reference, where: str) -> SecretBytes | ResolverError:
    """One result of a resolve answer, as the client returns it."""
    if isinstance(raw, dict) and isinstance(raw.get("value"), str):
        try:
            return SecretBytes(base64.b64decode(raw["value"], validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{where}/value: not base64") from None
    if isinstance(raw, dict) and isinstance(raw.get("error"), Mapping):
        error = raw["error"]
        kind, message = error.get("kind"), error.get("message")
        if isinstance(kind, str) and isinstance(message, str):
            return error_of(kind, message, reference)
    raise ProtocolError(f"{where}: expected 'value' or 'error'")
