"""``mesos-secrets agent``: the node's one holder of store credentials, on a Unix socket.

The Mesos agent resolves secrets once per node, through its ``SecretResolver`` module;
this is that role for our front ends. It holds the configured resolver (``local``,
``vault``, a plugin), answers every caller from one cache (:mod:`.cache`), and knows who
asks: each connection's process by ``SO_PEERCRED`` (its uid names its principal,
``[agent.principals]`` or the user's name), and an executor by its Mesos executor token,
checked with the Mesos agent's key, whose claims give the framework, executor and
container ids. The ACLs are checked on every request, cache hits included, and every
decision goes to the audit trail.

What each caller holds is recorded (the inventory, ``GET /v1/status``). A holding ends
when its caller releases it (``POST /v1/release``, or the client closing) or its process
ends; a secret no one holds any more is released by the resolver (a dynamic secret's
lease revoked) and dropped from the cache.

Front ends watch their holdings (:mod:`.events`): they are told when a secret one of
their tasks holds changes in the store (``mesos-secrets agent refresh``) or is revoked
(``mesos-secrets revoke``, the break-glass: the matching tasks are stopped, their
holdings end, the cache forgets the secrets, their executor tokens are refused from
then on, and the audit trail says so).

The socket is ``0660`` (its group: ``socket_group``), in a directory that must be ours or
root's and writable by no one else; the agent refuses to start on a path that is not a
socket of ours, or on one another agent serves. It runs in the foreground, logs to
stderr, tells systemd when it is ready (``Type=notify``), and on SIGTERM or SIGINT stops
serving, closes the resolver (its leases and token revoked) and removes its socket.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import grp
import http.server
import json
import logging
import os
import pwd
import select
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from .. import tokens
from ..acls import ACLs
from ..audit import AuditLog, outcome_of
from ..containerizer.runtime import process_start_time
from ..errors import (
    ConfigError,
    ResolverError,
    SecretAccessDeniedError,
    printable,
)
from ..resolver import ResolveContext, SecretResolver
from ..secret import Reference
from . import protocol
from .cache import WAIT_FOR_READ_S, Answer, NodeCache
from .events import EventLog
from .metrics import AgentMetrics
from .poller import Poller
from .rollouts import RolloutKey, Rollouts
from .settings import AgentSettings
from .snapshot import Snapshot

__all__ = ["Agent", "Caller", "bind_socket", "serve"]

log = logging.getLogger("mesos_secrets.agent")

#: How often holders whose process ended are looked for, and stale entries dropped.
SWEEP_S = 2.0
#: How often the cache's copy is written while it changes.
KEEP_S = 1.0
#: How often the poller looks for secrets due to be read again.
POLL_TICK_S = 0.25
#: How long a stop waits for the answers under way.
STOP_WAIT_S = 5.0
#: Connections served at once, in all and per user (each front end keeps two: its
#: requests and its watch; executors on a node all run as one user).
MAX_CONNECTIONS = 1024
MAX_PER_UID = 256
#: Holders one process may have (a client per task, a task per request).
MAX_HOLDERS_PER_PROCESS = 1024
#: Revoked holders and executor containers remembered (their requests refused).
MAX_REVOKED = 65536
#: Secrets a holder may wait for that the store did not have (optional ones).
MAX_MISSING = 256
_PEERCRED = struct.Struct("3i")


@attrs.frozen
class Caller:
    """Who is on the other end of a connection: its process, user and principal, and
    the ids its executor token proves (None without one)."""

    pid: int
    uid: int
    gid: int
    principal: str | None
    start: str | None  # the process's start time: a reused pid is not the same caller
    claims: Mapping[str, str] | None = None


class _Holding(NamedTuple):
    version: str | None
    fetched_at: float
    stale: float
    digest: bytes = b""  # which value it holds (the cache's keyed digest)
    told: bytes = b""  # the newer value its holder was told of (once each)
    warned: bool = False  # told that it cannot be refreshed (once, until it can)


@attrs.define
class _Holder:
    """One task's (or one process's) secrets."""

    caller: Caller
    context: dict[str, str]
    since: float
    secrets: dict[tuple[str, str | None], _Holding] = attrs.field(factory=dict)
    #: How often it wants its secrets read again (seconds; None: only when pushed).
    refresh: float | None = None


#: The caller's pid and start time, its executor container (token), the client
#: instance within the process, and the task.
_HolderKey = tuple[int, str | None, str | None, str, str]


class _NameLocks:
    """A lock per secret name, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def acquire(self, name: str, timeout: float | None = WAIT_FOR_READ_S) -> bool:
        """Take ``name``'s lock (waiting ``timeout`` at most); whether it was taken. Each
        call is matched by one :meth:`release`, taken or not."""
        with self._lock:
            lock, users = self._locks.get(name) or (threading.Lock(), 0)
            self._locks[name] = (lock, users + 1)
        return lock.acquire(timeout=-1 if timeout is None else timeout)

    def release(self, name: str, held: bool) -> None:
        with self._lock:
            lock, users = self._locks[name]
            if held:
                lock.release()
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    @contextlib.contextmanager
    def hold(self, name: str, timeout: float | None = WAIT_FOR_READ_S) -> Iterator[bool]:
        """:meth:`acquire` and :meth:`release` around a block; yields whether held."""
        held = self.acquire(name, timeout)
        try:
            yield held
        finally:
            self.release(name, held)

    def __len__(self) -> int:
        return len(self._locks)


class TooManyHolders(protocol.ProtocolError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 429, "too_many")


class Agent:
    """The agent's logic, without the socket: answers, releases, the inventory."""

    def __init__(
        self,
        resolver: SecretResolver,
        settings: AgentSettings,
        *,
        acls: ACLs | None = None,
        audit: AuditLog | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.resolver = resolver
        self.settings = settings
        self.acls = acls
        self.audit = audit
        self.metrics = metrics or AgentMetrics()
        self.cache = NodeCache(
            resolver,
            ttl=settings.cache_ttl,
            ttls=settings.cache_ttls,
            max_stale=settings.max_stale,
        )
        self.cache.on_event = self.metrics.event
        self.metrics.watch(resolver)
        #: The cache's copy that survives a restart (None: not kept).
        self.snapshot: Snapshot | None = None
        self._key = _read_key(settings.executor_secret_key)
        self._holders: dict[_HolderKey, _Holder] = {}
        self._lock = threading.Lock()
        self._users: dict[int, tuple[str | None, float]] = {}
        #: A secret's name: held while it is answered and recorded, or given up.
        self._names = _NameLocks()
        self.started = time.time()
        #: What the front ends are told about their holdings.
        self.events = EventLog()
        #: Holders whose secrets were revoked, and executor containers whose tokens
        #: are refused from then on (Mesos' executor tokens never expire): why.
        self._revoked: dict[_HolderKey, str] = {}
        self._revoked_containers: dict[str, str] = {}
        #: Revoked holders whose task has not stopped yet (its front end releases it
        #: once it has, or its process ends): the revocation's number, its task's ids,
        #: since when.
        self._stopping: dict[_HolderKey, tuple[int, dict[str, str], float]] = {}
        self._revocations = 0
        #: Secrets that could not be refreshed: since when (wall clock), and why.
        self._failing: dict[str, tuple[float, str]] = {}
        self._closing = False
        #: Restarts for new versions, a few tasks of an app at a time.
        self.rollouts = Rollouts(stopped=self._rollout_stopped)

    # --- who asks ---------------------------------------------------------------------

    def caller(self, pid: int, uid: int, gid: int, token: str | None) -> Caller:
        """The caller of a connection; a bad token is :class:`SecretAccessDeniedError`."""
        claims = None
        if token is not None:
            if self._key is None:
                raise SecretAccessDeniedError(
                    "this agent checks no executor tokens (no [agent] executor_secret_key)"
                )
            claims = tokens.verify(token, self._key)
            missing = [c for c in ("fid", "eid", "cid") if not claims.get(c)]
            if missing:
                raise SecretAccessDeniedError(f"JWT claims missing: {', '.join(missing)}")
            why = self._revoked_containers.get(claims["cid"])
            if why is not None:
                raise SecretAccessDeniedError(
                    f"the executor token of container '{claims['cid']}' was revoked ({why})"
                )
        elif (
            self.settings.require_token
            and uid not in self.settings.principals
            and uid not in (0, os.geteuid())
        ):
            raise SecretAccessDeniedError(
                f"uid {uid} has no executor token: this agent answers executors, and the "
                "users [agent.principals] names"
            )
        return Caller(pid, uid, gid, self.principal_of(uid), process_start_time(pid), claims)

    def principal_of(self, uid: int) -> str | None:
        principal = self.settings.principals.get(uid)
        if principal is not None:
            return principal
        now = time.monotonic()
        known = self._users.get(uid)
        if known is None or known[1] < now:  # user names looked up again after a minute
            try:
                name: str | None = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = None
            known = self._users[uid] = (name, now + 60.0)
        return known[0]

    def context_of(self, caller: Caller, claimed: Mapping[str, str]) -> ResolveContext:
        """Who asks, for the ACLs and the audit trail: the request's ids, those an
        executor token proves replacing what it says. The principal is the caller's
        user's, except for an executor with a valid token stating its framework's, when
        it is one of ``executor_principals`` (a token never expires and names no
        principal: whoever holds one may state any of those)."""
        trusted = self.settings.executor_principals
        ids = {name: value for name, value in claimed.items() if name != "principal"}
        principal = caller.principal
        if caller.claims is not None:
            ids.update(
                framework_id=caller.claims["fid"],
                executor_id=caller.claims["eid"],
                container_id=caller.claims["cid"],
            )
            stated = claimed.get("principal")
            if stated is not None and stated in trusted:
                principal = stated
        return ResolveContext(principal=principal, **ids)

    @staticmethod
    def proven(caller: Caller, context: ResolveContext) -> ResolveContext:
        """What the resolver is told: the principal, and ids only when a token proves
        them (a resolver's policy must not rest on what a caller merely says)."""
        if caller.claims is None:
            return ResolveContext(principal=context.principal)
        return context

    # --- answers ----------------------------------------------------------------------

    def resolve(
        self,
        caller: Caller,
        references: Iterable[Reference],
        claimed: Mapping[str, str],
        client: str = "",
        refresh: float | None = None,
    ) -> list[Answer | ResolverError]:
        """Every reference for ``caller``: checked against the ACLs, then from the cache.
        ``client`` tells apart several clients in one process (their holdings);
        ``refresh``, how often the task wants its secrets read again (:mod:`.poller`).

        The keys asked of one secret are answered together, from one read, and held in
        the same step, which giving the secret up waits for."""
        context = self.context_of(caller, claimed)
        told = self.proven(caller, context)
        holder = self._holder_key(caller, context, client)
        why = self._revoked.get(holder)
        if why is not None:
            raise protocol.ProtocolError(
                f"the secrets of this task were revoked ({why})", 403, "forbidden"
            )
        self._check_room(caller, holder)
        started = time.monotonic()
        wanted = list(references)
        results: list[Answer | ResolverError | None] = [None] * len(wanted)
        outcomes: dict[str, int] = {}
        by_name: dict[str, list[int]] = {}
        for index, reference in enumerate(wanted):
            refusal = self._refusal(caller, context, reference)
            if refusal is not None:
                results[index] = refusal
                outcome = self._record(caller, context, reference, refusal, 0.0)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            else:
                by_name.setdefault(reference.name, []).append(index)
        for indexes in by_name.values():
            begun = time.monotonic()
            group = [wanted[i] for i in indexes]
            answers = self._answer_group(holder, caller, context, group, told=told, refresh=refresh)
            seconds = time.monotonic() - begun
            for index, reference, answer in zip(indexes, group, answers, strict=True):
                results[index] = answer
                outcome = self._record(caller, context, reference, answer, seconds)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.metrics.resolved(self.resolver.name, outcomes)
        self.metrics.latency.labels(self.resolver.name).observe(time.monotonic() - started)
        return [result for result in results if result is not None]

    def _answer_group(
        self,
        holder: _HolderKey,
        caller: Caller,
        context: ResolveContext,
        group: list[Reference],
        *,
        told: ResolveContext,
        refresh: float | None = None,
    ) -> list[Answer | ResolverError]:
        name = group[0].name
        held = self._names.acquire(name)
        try:
            if not held:  # another caller's read of it has not ended in time
                return [self.cache.not_in_time(reference) for reference in group]
            for _ in range(2):  # a read between two keys' answers: once more, all of them
                answers = [self._one(told, reference) for reference in group]
                reads = {a.read for a in answers if isinstance(a, Answer)}
                if len(reads) <= 1:
                    break
            # A secret the store could not give is held too, with no value: a task that
            # may start without it (optional) is told once the store has it.
            answered = list(zip(group, answers, strict=True))
            self._hold(holder, caller, context, answered, refresh)
            return answers
        finally:
            self._names.release(name, held)

    def _refusal(
        self, caller: Caller, context: ResolveContext, reference: Reference
    ) -> ResolverError | None:
        principal = context.principal
        if self.acls is None or self.acls.allows(principal, reference.name):
            return None
        who = f"principal '{principal}'" if principal else f"uid {caller.uid}"
        self.metrics.denied.inc()
        return SecretAccessDeniedError(
            f"Secret {reference.name} is not accessible to {who}",
            reference=reference.name,
            key=reference.key,
            resolver="agent",
        )

    def _one(self, told: ResolveContext, reference: Reference) -> Answer | ResolverError:
        try:
            return self.cache.get(reference, told)
        except Exception as error:  # noqa: BLE001 (a plugin's bug: named by type only)
            log.error("resolver '%s' failed: %s", self.resolver.name, type(error).__name__)
            return ResolverError(
                f"secret '{reference.name}': the resolver failed ({type(error).__name__})",
                reference=reference.name,
                key=reference.key,
                resolver=self.resolver.name,
            )

    def _record(
        self,
        caller: Caller,
        context: ResolveContext,
        reference: Reference,
        result: Answer | ResolverError,
        seconds: float,
    ) -> str:
        """Audit one answer; its outcome (the metrics count them per request)."""
        error = result if isinstance(result, ResolverError) else None
        outcome = outcome_of(error)
        if self.audit is None:
            return outcome
        answer = result if isinstance(result, Answer) else None
        self.audit.write(
            "resolve",
            resolver=self.resolver.name,
            via="agent",
            reference=reference.name,
            key=reference.key,
            framework_id=context.framework_id,
            executor_id=context.executor_id,
            task_id=context.task_id,
            container_id=context.container_id,
            principal=context.principal,
            uid=caller.uid,
            pid=caller.pid,
            token=caller.claims is not None,
            outcome=outcome,
            error=str(error) if error is not None else None,
            cache_hit=answer.hit if answer else None,
            coalesced=answer.coalesced if answer and answer.coalesced else None,
            stale_seconds=round(answer.stale, 3) if answer and answer.stale else None,
            version=answer.version if answer else None,
            duration_ms=round(seconds * 1000, 3),
        )
        return outcome

    # --- holdings ---------------------------------------------------------------------

    @staticmethod
    def _holder_key(caller: Caller, context: ResolveContext, client: str) -> _HolderKey:
        task = context.container_id if caller.claims is None else None
        return (
            caller.pid,
            caller.start,
            caller.claims["cid"] if caller.claims else None,
            client,
            task or context.task_id or "",
        )

    def _check_room(self, caller: Caller, key: _HolderKey) -> None:
        """Refuse, before anything is read, a process holding too many tasks already."""
        with self._lock:
            if key in self._holders:
                return
            held = sum(1 for k in self._holders if k[:2] == key[:2])
        if held >= MAX_HOLDERS_PER_PROCESS:
            raise TooManyHolders(
                f"process {caller.pid} holds secrets for {held} tasks already: release some first"
            )

    def _hold(
        self,
        key: _HolderKey,
        caller: Caller,
        context: ResolveContext,
        answered: list[tuple[Reference, Answer | ResolverError]],
        refresh: float | None = None,
    ) -> None:
        now = time.time()
        with self._lock:
            holder = self._holders.get(key)
            if holder is None:
                ids = protocol.context_to_json(context)
                holder = self._holders[key] = _Holder(caller, ids, now)
                self.metrics.containers.set(len(self._holders))
            if refresh is not None:
                holder.refresh = refresh
            for reference, answer in answered:
                where = (reference.name, reference.key)
                if isinstance(answer, Answer):
                    holder.secrets[where] = _Holding(
                        answer.version, now - answer.age, answer.stale, answer.digest
                    )
                elif where not in holder.secrets and (  # it keeps what it had, if any
                    sum(1 for h in holder.secrets.values() if not h.digest) < MAX_MISSING
                ):
                    holder.secrets[where] = _Holding(None, now, 0.0)

    def release(self, caller: Caller, claimed: Mapping[str, str], client: str = "") -> int:
        """End the client's holdings: of the task the context names, else all of them.
        How many holders ended."""
        context = self.context_of(caller, claimed)
        wanted = self._holder_key(caller, context, client)
        with self._lock:
            ended = [key for key in self._holders if _within(key, wanted)]
            for key in [k for k in self._stopping if _within(k, wanted)]:
                del self._stopping[key]  # its task stopped: its front end says so
        self._end(ended)
        return len(ended)

    # --- what holders are told ------------------------------------------------------

    def watch(
        self,
        caller: Caller,
        client: str,
        after: int | None,
        wait: float,
        epoch: str | None = None,
        *,
        gone: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """The events for the caller's (and its ``client``'s) holdings after ``after``
        (:class:`.events.EventLog`); without ``after``, or for a watcher of another
        agent's run (``epoch``), at once, the last event's number."""
        mine = (caller.pid, caller.start, caller.claims["cid"] if caller.claims else None, client)
        answer: dict[str, Any] = {"epoch": self.events.epoch}
        if after is None or (epoch is not None and epoch != self.events.epoch):
            return {**answer, "seq": self.events.seq, "events": []}
        seq, found, missed = self.events.wait(lambda key: key[:4] == mine, after, wait, gone=gone)
        answer.update(seq=seq, events=[event.to_json() for event in found])
        if missed:
            answer["missed"] = True
        return answer

    def refresh(self, caller: Caller, name: str) -> dict[str, Any]:
        """Read ``name`` from the store now (``mesos-secrets agent refresh``: a push from
        outside); the holders whose value it changed are told. When the store cannot
        be reached, the value kept stays, and so do the tasks' own."""
        before = {key: entry for key, entry in self.cache.entries() if key[0] == name}
        reread = self._reread(name)
        assert reread is not None  # not held_only: always read
        answer, told = reread
        after = {key: entry for key, entry in self.cache.entries() if key[0] == name}
        if isinstance(answer, ResolverError):
            self._audit_admin("refresh", caller, reference=name, outcome=outcome_of(answer))
            raise protocol.ProtocolError(str(answer), 502, protocol.error_kind(answer))
        changed = bool(told) or (
            not before
            or set(before) != set(after)
            or any(before[key].digest != entry.digest for key, entry in after.items())
        )
        version = next((entry.version for entry in after.values()), None)
        self._audit_admin(
            "refresh",
            caller,
            reference=name,
            outcome="ok",
            changed=changed,
            holders=told,
            version=version,
        )
        return {"changed": changed, "version": version, "told": told}

    def poll(self, name: str, why: str = "interval") -> str:
        """Read a held secret again (:mod:`.poller`: its holders' interval, or its lease
        ending): ``changed`` (holders told), ``same``, or ``failed`` (the holders were
        told it is stale once, when it began to fail: they keep their value, or stop
        their task, as each task's policy says)."""
        reread = self._reread(name, held_only=True)
        if reread is None or self._closing:
            return "same"
        answer, told = reread
        if isinstance(answer, ResolverError):
            if self.audit is not None:
                self.audit.write(
                    "refresh",
                    via="agent",
                    reference=name,
                    by=why,
                    outcome=outcome_of(answer),
                    error=str(answer),
                )
            return "failed"
        if told and self.audit is not None:
            self.audit.write(
                "refresh",
                via="agent",
                reference=name,
                by=why,
                outcome="ok",
                changed=True,
                holders=told,
                version=answer.version,
            )
        return "changed" if told else "same"

    def _reread(
        self, name: str, *, held_only: bool = False
    ) -> tuple[Answer | ResolverError, int] | None:
        """Read ``name`` from the store now; tell its holders what changed for them (a
        new value, or that it can no longer be refreshed). The answer, and how many
        holders were told of a new value. ``held_only`` (a poll): None, and no read, if
        no one holds it any more (it was given up: a read would make a lease no one
        holds)."""
        reference = Reference(name)
        with self._names.hold(name, timeout=None):
            if held_only and name not in self.held_names():
                return None
            answer = self.cache.reread(reference)
        if isinstance(answer, ResolverError):
            self._failed_refresh(name, answer)
            return answer, 0
        with self._lock:
            self._failing.pop(name, None)
            for holder in self._holders.values():  # told again should it fail again
                for held, holding in list(holder.secrets.items()):
                    if held[0] == name and holding.warned:
                        holder.secrets[held] = holding._replace(warned=False)
        return answer, self._tell_changed(name, answer.version)

    def _tell_changed(self, name: str, version: str | None) -> int:
        """Tell each holder of ``name`` whose value is no longer the store's (its
        ``version`` now; once per new value). How many were told."""
        digests = {key: entry.digest for key, entry in self.cache.entries() if key[0] == name}
        told = []
        with self._lock:
            for key, holder in self._holders.items():
                newer = False
                for held, holding in list(holder.secrets.items()):
                    if held[0] != name:
                        continue
                    new = digests.get(held)
                    if new is None or new in (holding.digest, holding.told):
                        continue
                    holder.secrets[held] = holding._replace(told=new)
                    newer = True
                if newer:
                    told.append((key, holder.context, [name]))
        change = f"{name}@{version or ''}:{next(iter(digests.values()), b'').hex()[:12]}"
        return self.events.add(
            "changed", told, f"secret '{name}' changed in the store", change=change
        )

    def rollout(self, caller: Caller, request: Mapping[str, Any]) -> dict[str, Any]:
        """A front end's turn to restart a task for a new version, or how it went
        (:mod:`.rollouts`); rollouts are the caller's principal's (else its uid's)."""
        key = (caller.principal or f"uid {caller.uid}", request["app"], request["change"])
        mine = (caller.pid, caller.start, caller.claims["cid"] if caller.claims else None)
        with self._lock:
            holds = any(
                k[:3] == mine and holder.context.get("task_id") == request["task"]
                for k, holder in self._holders.items()
            )
        if not holds:
            raise protocol.ProtocolError(
                f"task '{printable(request['task'])}' holds no secrets of this caller's: "
                "only a task's own front end takes part in its rollout",
                403,
                "forbidden",
            )
        if request["phase"] == "end":
            self.rollouts.end(key, request["task"], request["healthy"])
            return {"ok": True}
        go, why = self.rollouts.begin(
            key, request["task"], request["batch"], request["timeout"], request["wait"]
        )
        return {"go": go, **({"reason": why} if why else {})}

    def _rollout_stopped(self, key: RolloutKey, why: str) -> None:
        log.warning("the restarts of app %s for %s stopped: %s", key[1], key[2], why)
        if self.audit is not None:
            self.audit.write(
                "rollout",
                via="agent",
                principal=key[0],
                app=key[1],
                change=key[2],
                outcome="stopped",
                error=why,
            )

    def _failed_refresh(self, name: str, error: ResolverError) -> None:
        """The store did not give ``name`` again: each of its holders is told once
        (until it is read again; a holder that came during the outage at the next
        failure), and the inventory says since when."""
        with self._lock:
            first = name not in self._failing
            self._failing[name] = (self._failing.get(name, (time.time(), ""))[0], str(error))
            told = []
            for key, holder in self._holders.items():
                warned = False
                for held, holding in list(holder.secrets.items()):
                    if held[0] == name and not holding.warned:
                        holder.secrets[held] = holding._replace(warned=True)
                        warned = True
                if warned:
                    told.append((key, holder.context, [name]))
        if self._closing:
            return
        if first:
            log.warning("secret '%s' could not be refreshed: %s", name, error)
        self.events.add("stale", told, f"secret '{name}' could not be refreshed: {error}")

    def polled(self) -> dict[str, float]:
        """The secrets held by a task that wants them read again, and the shortest
        interval any of their holders asked for (seconds)."""
        wanted: dict[str, float] = {}
        with self._lock:
            for holder in self._holders.values():
                if holder.refresh is None:
                    continue
                for name, _ in holder.secrets:
                    wanted[name] = min(wanted.get(name, holder.refresh), holder.refresh)
        return wanted

    def held_names(self) -> set[str]:
        with self._lock:
            return {name for holder in self._holders.values() for name, _ in holder.secrets}

    def revoke(self, caller: Caller, scope: str, value: str, reason: str = "") -> dict[str, Any]:
        """Break-glass (see the module): every holder ``scope`` and ``value`` match is
        told to stop its task and refused from then on (its executor token too), its
        holdings end (their leases revoked), and the secrets concerned leave the cache.
        What was revoked."""
        who = caller.principal or f"uid {caller.uid}"
        what = "every secret" if scope == "all" else f"{scope} '{value}'"
        why = f"revoked by {who}: {what}" + (f" ({reason})" if reason else "")
        prefix = value.rstrip("/") + "/"

        def named(name: str) -> bool:
            if scope == "secret":
                return name == value
            if scope == "prefix":
                return name == value or name.startswith(prefix)
            return True

        with self._lock:
            matched = {
                key: holder
                for key, holder in self._holders.items()
                if (
                    holder.context.get("task_id") == value
                    if scope == "task"
                    else holder.context.get("framework_id") == value
                    if scope == "framework"
                    else any(named(name) for name, _ in holder.secrets)
                )
            }
            told = [
                (key, dict(holder.context), {n for n, _ in holder.secrets if named(n)})
                for key, holder in matched.items()
            ]
            self._revocations += 1
            number = self._revocations
            now = time.time()
            for key, holder in matched.items():
                self._remember(self._revoked, key, why)
                if key[2] is not None:  # an executor's container: its token goes too
                    self._remember(self._revoked_containers, key[2], why)
                if key[1] is not None:  # told to stop, until it says it has
                    self._stopping[key] = (number, dict(holder.context), now)
        names = {name for _, _, held in told for name in held}
        if scope in ("secret", "prefix", "all"):  # what no one holds but the cache has
            names |= {key[0] for key, _ in self.cache.entries() if named(key[0])}
        self.events.add("revoked", told, why)
        self._end(list(matched))  # leases revoked once no one else holds them
        for name in sorted(names):
            with self._names.hold(name, timeout=None):
                self.cache.forget(Reference(name))
        tasks = [protocol.context_to_json(ResolveContext(**_ids(c))) for _, c, _ in told]
        self._audit_admin(
            "revoke",
            caller,
            scope=scope,
            value=value or None,
            reason=reason or None,
            outcome="ok",
            names=sorted(names),
            holders=len(told),
        )
        log.warning(
            "%s: %d task(s) told to stop, %d secret(s) forgotten", why, len(told), len(names)
        )
        return {
            "revocation": number,
            "holders": len(told),
            "names": sorted(names),
            "tasks": tasks,
            "reason": why,
        }

    @staticmethod
    def _remember(where: dict[Any, str], key: Any, why: str) -> None:
        if len(where) >= MAX_REVOKED:
            del where[next(iter(where))]  # the oldest
        where[key] = why

    def _audit_admin(self, event: str, caller: Caller, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.write(
                event,
                via="agent",
                principal=caller.principal,
                uid=caller.uid,
                pid=caller.pid,
                **fields,
            )

    def close(self) -> None:
        """Stop: every holding ends, what may still be served is kept for the next
        agent, the resolver closes (its leases and token revoked)."""
        self._closing = True  # a refresh failing from now on is the agent's stop
        self.events.close()
        with self._lock:
            everyone = list(self._holders)
        self._end(everyone)
        self.cache.expire()
        self.keep()
        self.cache.clear()
        self.resolver.close()
        self.metrics.close()

    def keep_in(self, snapshot: Snapshot | None) -> None:
        """Keep the cache in ``snapshot`` from now on, first taking what it holds."""
        self.snapshot = snapshot
        if snapshot is not None:
            restored = self.cache.restore(snapshot.load())
            if restored:
                log.info("%d cached value(s) kept from the last agent", restored)

    def keep(self) -> None:
        """Write the cache's copy, if it changed (:mod:`.snapshot`)."""
        if self.snapshot is None or not self.cache.changed:
            return
        try:
            self.snapshot.save(self.cache.kept())
        except OSError as error:
            self.cache.unkept()
            log.warning("keeping the cache failed: %s", error.strerror or type(error).__name__)

    def sweep(self) -> None:
        """End the holdings of processes that are gone; drop what can no longer be served."""
        with self._lock:
            gone = [key for key in self._holders if _gone(key)]
        if gone:
            self._end(gone)
        with self._lock:  # a revoked holder whose process ended asks nothing more
            for where in (self._revoked, self._stopping):
                for key in [k for k in where if _gone(k)]:
                    del where[key]
            held = {name for holder in self._holders.values() for name, _ in holder.secrets}
            for name in [n for n in self._failing if n not in held]:
                del self._failing[name]
        self.cache.expire()

    def _end(self, keys: list[_HolderKey]) -> None:
        with self._lock:
            ended = [self._holders.pop(key) for key in keys if key in self._holders]
            still = {ref for holder in self._holders.values() for ref in holder.secrets}
            self.metrics.containers.set(len(self._holders))
        # A secret is given up as a whole (a dynamic secret's lease covers all its keys):
        # only once no one holds any key of it.
        released = {name for holder in ended for name, _ in holder.secrets} - {
            name for name, _ in still
        }
        for name in sorted(released):
            # No one may be handed the secret while it is given up (revoked credentials
            # served from the cache in between): answers for it wait for the name's lock.
            with self._names.hold(name, timeout=None):
                with self._lock:
                    if any(n == name for h in self._holders.values() for n, _ in h.secrets):
                        continue  # held again meanwhile: it stays
                reference = Reference(name)
                try:
                    if self.resolver.release(reference):
                        self.cache.forget(reference)
                        self.metrics.releases.inc()
                except Exception as error:  # noqa: BLE001 (best effort; named by type only)
                    self.metrics.release_failures.inc()
                    log.warning("releasing secret '%s' failed: %s", name, type(error).__name__)

    # --- the inventory ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            holders = list(self._holders.values())
            stopping = sorted(self._stopping.items(), key=lambda item: item[1][2])
        containers = []
        for holder in sorted(holders, key=lambda h: h.since):
            containers.append(
                {
                    "principal": holder.context.get("principal"),
                    "uid": holder.caller.uid,
                    "pid": holder.caller.pid,
                    "token": holder.caller.claims is not None,
                    **holder.context,
                    "since": _iso(holder.since),
                    **({"refresh": holder.refresh} if holder.refresh is not None else {}),
                    "secrets": [
                        {
                            "name": name,
                            "key": key,
                            "version": holding.version,
                            "age": round(now - holding.fetched_at, 3),
                            "stale": round(holding.stale, 3),
                            **self._refresh_status(name, holding),
                        }
                        for (name, key), holding in sorted(
                            holder.secrets.items(), key=lambda item: (item[0][0], item[0][1] or "")
                        )
                    ],
                }
            )
        return {
            "agent": {
                "pid": os.getpid(),
                "resolver": self.resolver.name,
                "endpoints": list(self.resolver.endpoints()),
                "socket": str(self.settings.socket),
                "cache_ttl": self.settings.cache_ttl,
                "max_stale": self.settings.max_stale,
                "started": _iso(self.started),
                "uptime": round(now - self.started, 3),
                "cached": sum(1 for _ in self.cache.entries()),
            },
            "containers": containers,
            "stopping": [
                {"revocation": number, **context, "pid": key[0], "since": _iso(since)}
                for key, (number, context, since) in stopping
            ],
            "rollouts": self.rollouts.status(),
        }

    def _refresh_status(self, name: str, holding: _Holding) -> dict[str, Any]:
        """What the inventory says of a holding's freshness: a newer value it was told of
        and has not taken (``outdated``), and since when its secret cannot be refreshed."""
        out: dict[str, Any] = {}
        if not holding.digest:
            out["missing"] = True  # the store did not give it (an optional secret)
        if holding.told:
            out["outdated"] = True
        failing = self._failing.get(name)
        if failing is not None:
            out["refresh_failing_since"] = _iso(failing[0])
            out["refresh_error"] = failing[1]
        return out


def _gone(key: _HolderKey) -> bool:
    """Whether the holder's process ended. A caller whose start time cannot be read
    (another PID namespace, a hidden /proc) cannot be told from its pid's next owner:
    it is never taken to be gone (its holdings end when it releases them, and when the
    agent stops)."""
    return key[1] is not None and process_start_time(key[0]) != key[1]


def _within(key: _HolderKey, wanted: _HolderKey) -> bool:
    """Whether ``key`` is among what a release for ``wanted`` ends: the same process
    and client, and its task, or every task when ``wanted`` names none."""
    return key[:4] == wanted[:4] and (not wanted[4] or key[4] == wanted[4])


def _ids(context: Mapping[str, str]) -> dict[str, str]:
    return {name: context[name] for name in protocol.CONTEXT_FIELDS if name in context}


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _read_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as error:
        raise ConfigError(
            f"cannot read the executor secret key '{path}': {error.strerror}"
        ) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise ConfigError(
                f"the executor secret key '{path}' must be a regular file only its owner "
                "can read (mode 0600 or 0400)"
            )
        key = file.read()
    if not key:
        raise ConfigError(f"the executor secret key '{path}' is empty")
    return key


# --- the socket ------------------------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One thread per connection, within caps: :data:`MAX_CONNECTIONS` in all and
    :data:`MAX_PER_UID` per user (one user cannot take every thread)."""

    daemon_threads = True
    block_on_close = False
    agent: Agent

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closing = False
        self._open: dict[int, int] = {}  # a connection's fd: its uid
        self._count_lock = threading.Lock()
        #: Requests being answered (a stop lets them end before it gives anything up).
        self.busy = 0
        self.idle = threading.Condition(self._count_lock)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        with self._count_lock:
            self.busy += 1
        try:
            yield
        finally:
            with self._count_lock:
                self.busy -= 1
                self.idle.notify_all()

    def server_bind(self) -> None:  # bound already (bind_socket)
        pass

    def verify_request(self, request: Any, client_address: Any) -> bool:
        uid = client_address[1]
        with self._count_lock:
            if self.closing or len(self._open) >= MAX_CONNECTIONS:
                return False
            if sum(1 for u in self._open.values() if u == uid) >= MAX_PER_UID:
                log.warning("uid %d has %d connections open: refusing more", uid, MAX_PER_UID)
                return False
            self._open[id(request)] = uid
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._count_lock:
            self._open.pop(id(request), None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback per client that went away."""
        error = sys.exception()
        if isinstance(error, ConnectionError | TimeoutError):
            return
        log.error("serving a request failed: %s", type(error).__name__)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, _ = self.socket.accept()
        try:
            raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        except OSError:
            connection.close()
            raise
        return connection, _PEERCRED.unpack(raw)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mesos-secrets-agent"
    sys_version = ""
    server: _Server
    client_address: tuple[int, int, int]  # type: ignore[assignment]
    #: A connection idle this long, or a request this slow to arrive between two
    #: reads, is closed (a client reconnects by itself).
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: the audit trail says who asked for what

    def log_error(self, format: str, *args: Any) -> None:
        log.info("a client's request: %s", printable(format % args, 200))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        with self.server.answering():
            self._answer(self.server.agent, method)

    def _answer(self, agent: Agent, method: str) -> None:
        read = method != "POST"  # whether the request's body is read
        try:
            route = self._route(method)
            body = self._body() if method == "POST" else None
            read = True
            if self.path == protocol.HEALTH:  # says nothing: asks no one who they are
                self._send(200, {"ok": True})
                return
            pid, uid, gid = self.client_address
            try:
                caller = self._caller(agent, pid, uid, gid, self._token())
            except SecretAccessDeniedError as error:
                agent.metrics.unauthenticated.inc()
                if agent.audit is not None:
                    agent.audit.write(
                        "authenticate", uid=uid, pid=pid, outcome="denied", error=str(error)
                    )
                raise protocol.ProtocolError(str(error), 401, "unauthenticated") from None
            status, answer = route(self, caller, body)
        except protocol.ProtocolError as error:
            status, answer = error.status, {"error": {"kind": error.kind, "message": str(error)}}
            if not read:  # refused unread (stopping, no such path): its body is no request
                self.close_connection = True
        self._send(status, answer)

    def _caller(self, agent: Agent, pid: int, uid: int, gid: int, token: str | None) -> Caller:
        """Who this connection's process is: worked out once per connection and token."""
        known = getattr(self, "_known", None)
        if known is not None and known[0] == token:
            return known[1]  # type: ignore[no-any-return]
        caller = agent.caller(pid, uid, gid, token)
        self._known = (token, caller)
        return caller

    def _route(self, method: str) -> Callable[[_Handler, Caller, Any], tuple[int, Any]]:
        if self.server.closing:
            raise protocol.ProtocolError("the agent is stopping", 503, "unavailable")
        route = _ROUTES.get(self.path)
        if route is None:
            raise protocol.ProtocolError(f"no such path: {self.path}", 404, "not_found")
        if route[0] != method:
            raise protocol.ProtocolError(f"{self.path} takes {route[0]}", 405, "method")
        return route[1]

    def _token(self) -> str | None:
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise protocol.ProtocolError(
                "Authorization: expected 'Bearer <token>'", 401, "unauthenticated"
            )
        return token.strip()

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        # isdigit() alone lets "²" through, which int() refuses; ASCII digits only.
        if length is None or not (length.isascii() and length.isdigit()):
            # Where its body ends is unknown: what follows must not be read as a request.
            self.close_connection = True
            raise protocol.ProtocolError("a request body needs a Content-Length", 411, "length")
        if int(length) > protocol.MAX_BODY:
            self.close_connection = True
            raise protocol.ProtocolError(
                f"request body over {protocol.MAX_BODY} bytes", 413, "too_large"
            )
        data = self.rfile.read(int(length))
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise protocol.ProtocolError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise protocol.ProtocolError("the request body must be an object")
        return body

    def _resolve(self, caller: Caller, body: Any) -> tuple[int, Any]:
        unknown = sorted(set(body) - {"references", "context", "client", "refresh"})
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        references = protocol.references_from_json(body.get("references"))
        claimed = protocol.context_from_json(body.get("context"))
        client = protocol.client_from_json(body.get("client"))
        refresh = protocol.refresh_from_json(body.get("refresh"))
        results = self.server.agent.resolve(caller, references, claimed, client, refresh)
        return 200, {"results": [_result_json(result) for result in results]}

    def _release(self, caller: Caller, body: Any) -> tuple[int, Any]:
        unknown = sorted(set(body) - {"context", "client"})
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        claimed = protocol.context_from_json(body.get("context"))
        client = protocol.client_from_json(body.get("client"))
        return 200, {"released": self.server.agent.release(caller, claimed, client)}

    def _status(self, caller: Caller, body: Any) -> tuple[int, Any]:
        if caller.uid not in (0, os.geteuid()):
            raise protocol.ProtocolError(
                "the inventory is for root and the agent's own user", 403, "forbidden"
            )
        return 200, self.server.agent.status()

    def _watch(self, caller: Caller, body: Any) -> tuple[int, Any]:
        unknown = sorted(set(body) - {"client", "after", "wait", "epoch"})
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        client = protocol.client_from_json(body.get("client"))
        after, wait, epoch = protocol.watch_from_json(body)
        return 200, self.server.agent.watch(
            caller, client, after, wait, epoch, gone=lambda: _hung_up(self.connection)
        )

    def _refresh(self, caller: Caller, body: Any) -> tuple[int, Any]:
        _administrator(caller, "refreshing a secret")
        unknown = sorted(set(body) - {"name"})
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        name = protocol.name_from_json(body.get("name"), "/name")
        return 200, self.server.agent.refresh(caller, name)

    def _rollout(self, caller: Caller, body: Any) -> tuple[int, Any]:
        known = {"phase", "app", "change", "task", "batch", "timeout", "wait", "healthy"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        return 200, self.server.agent.rollout(caller, protocol.rollout_from_json(body))

    def _revoke(self, caller: Caller, body: Any) -> tuple[int, Any]:
        _administrator(caller, "revoking")
        unknown = sorted(set(body) - {"scope", "value", "reason"})
        if unknown:
            raise protocol.ProtocolError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        scope, value, reason = protocol.scope_from_json(body)
        return 200, self.server.agent.revoke(caller, scope, value, reason)

    def _send(self, status: int, answer: Any) -> None:
        data = json.dumps(answer, separators=(",", ":")).encode("utf-8")
        self.send_response_only(status)  # no Date, no Server: nothing a client needs
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


#: A path: its method, and what answers it (health is answered before anyone is asked
#: who they are).
_ROUTES: dict[str, tuple[str, Callable[[_Handler, Caller, Any], tuple[int, Any]]]] = {
    protocol.RESOLVE: ("POST", _Handler._resolve),
    protocol.RELEASE: ("POST", _Handler._release),
    protocol.STATUS: ("GET", _Handler._status),
    protocol.WATCH: ("POST", _Handler._watch),
    protocol.REFRESH: ("POST", _Handler._refresh),
    protocol.REVOKE: ("POST", _Handler._revoke),
    protocol.ROLLOUT: ("POST", _Handler._rollout),
    protocol.HEALTH: ("GET", lambda handler, caller, body: (200, {"ok": True})),
}


def _hung_up(connection: socket.socket) -> bool:
    """Whether the client closed its end (a watcher that went away: its wait need not
    go on, holding a connection of its user's)."""
    try:
        ready, _, _ = select.select([connection], [], [], 0)
        return bool(ready) and connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return True


def _administrator(caller: Caller, what: str) -> None:
    """Only root and the agent's own user (and never through an executor's token)."""
    if caller.uid not in (0, os.geteuid()) or caller.claims is not None:
        raise protocol.ProtocolError(
            f"{what} is for root and the agent's own user", 403, "forbidden"
        )


def _result_json(result: Answer | ResolverError) -> dict[str, Any]:
    if isinstance(result, ResolverError):
        return {"error": {"kind": protocol.error_kind(result), "message": str(result)}}
    out: dict[str, Any] = {
        "value": protocol.value_to_json(result.value),
        "age": round(result.age, 3),
        "stale": round(result.stale, 3),
    }
    if result.version is not None:
        out["version"] = result.version
    return out


def _check_directory(path: Path) -> None:
    try:
        parent = os.stat(path.parent)
    except OSError as error:
        raise ConfigError(
            f"cannot use socket '{path}': {error.strerror} ('{path.parent}')"
        ) from None
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"cannot use socket '{path}': its directory belongs to uid {parent.st_uid}"
        )
    if parent.st_mode & 0o022:
        raise ConfigError(f"cannot use socket '{path}': others can write to its directory")


@attrs.define
class Bound:
    """The agent's listening socket, and the lock that makes it the only agent there."""

    path: Path
    listener: socket.socket
    lock: int
    inode: tuple[int, int]

    def remove(self) -> None:
        """Close; remove the socket if it is still the one bound (not a later agent's)."""
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self.inode:
                os.unlink(self.path)
        os.close(self.lock)


def bind_socket(path: Path, group: str | None = None) -> Bound:
    """A listening socket at ``path``, mode ``0660`` (group ``group``): refused when its
    directory is not ours or root's or others can write to it, when something that is
    not a socket of ours is there, or when another agent serves on it (it holds the lock
    ``PATH.lock``)."""
    path = Path(os.path.abspath(path))
    _check_directory(path)
    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"[agent] 'socket_group': no group '{group}'") from None
    lock = _lock(path)
    try:
        _remove_stale(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # no moment when others may connect
        try:
            listener.bind(str(path))
        except OSError as error:
            listener.close()
            raise ConfigError(f"cannot bind socket '{path}': {error.strerror}") from None
        finally:
            os.umask(old)
    except BaseException:
        os.close(lock)
        raise
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    listener.listen(128)
    info = os.lstat(path)
    return Bound(path, listener, lock, (info.st_dev, info.st_ino))


def _remove_stale(path: Path) -> None:
    """A socket of ours left by an agent that is gone (it no longer holds the lock)."""
    me = os.geteuid()
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != me:
        raise ConfigError(
            f"cannot use socket '{path}': something else is there (not a socket of uid {me})"
        )
    os.unlink(path)


def _lock(path: Path) -> int:
    where = f"{path}.lock"
    try:
        fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot use socket '{path}': {error.strerror} ('{where}')") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise ConfigError(f"cannot use socket '{path}': '{where}' is not the agent's lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another agent serves on '{path}'") from None
    return fd


def _notify(message: str) -> None:
    """Tell systemd (``Type=notify``): one datagram to ``$NOTIFY_SOCKET``. Written out
    rather than a dependency for it: the protocol is exactly this."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return
    address = "\0" + where[1:] if where.startswith("@") else where
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
        out.connect(address)
        out.sendall(message.encode("utf-8"))


class Running:
    """An agent serving on its socket, in threads (:func:`serve` runs one to its end)."""

    def __init__(self, agent: Agent, bound: Bound) -> None:
        self.agent = agent
        self.path = agent.settings.socket
        self._socket = bound
        self._server = _Server(str(self.path), _Handler, bind_and_activate=False)
        self._server.socket.close()
        self._server.socket = bound.listener
        self._server.agent = agent
        self._stop = threading.Event()
        self.poller = Poller(agent)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="agent-serve", daemon=True),
            threading.Thread(target=self._sweep, name="agent-sweep", daemon=True),
            threading.Thread(target=self._poll, name="agent-poller", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _sweep(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(KEEP_S):
            try:
                self.agent.keep()
                if time.monotonic() - last >= SWEEP_S:
                    last = time.monotonic()
                    self.agent.sweep()
            except Exception as error:  # noqa: BLE001 (the next round tries again)
                log.warning("sweeping holders failed: %s", type(error).__name__)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_TICK_S):
            try:
                self.poller.tick()
            except Exception as error:  # noqa: BLE001 (the next round tries again)
                log.warning("planning refreshes failed: %s", type(error).__name__)

    def stop(self) -> None:
        """Stop serving, remove the socket, release everything, close the resolver."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._server.closing = True  # requests on kept connections: 503 from now on
        self.agent.events.close()  # watches waiting for news answer now
        self._server.shutdown()
        self._server.server_close()
        with self._server.idle:  # the answers under way end first (a few seconds at most)
            self._server.idle.wait_for(lambda: self._server.busy == 0, timeout=STOP_WAIT_S)
        self._threads[1].join()  # the last keep() is stop's own
        self._socket.remove()
        self.agent.close()


#: The signals that stop the agent.
_STOPPING = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def _threads_ignore_stopping() -> Iterator[None]:
    """The threads started in the block (and theirs) never take SIGTERM or SIGINT: the
    main thread does, at once, rather than only when its wait next wakes."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)


def serve(agent: Agent, *, ready: Callable[[Running], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    bound = bind_socket(agent.settings.socket, agent.settings.socket_group)
    try:  # once the socket is ours: its directory is the agent's
        agent.keep_in(Snapshot.open(agent.settings.socket))
    except BaseException:
        bound.remove()
        raise
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in _STOPPING}
    with _threads_ignore_stopping():
        running = Running(agent, bound)
    try:
        if agent.settings.metrics_address is not None:
            with _threads_ignore_stopping():
                host, port = agent.metrics.serve(*agent.settings.metrics_address)
            log.info("metrics on http://%s:%d/metrics", host, port)
        if agent.acls is None:
            log.warning(
                "no ACLs: every caller that can reach %s may read every secret the "
                "resolver can (set 'acls')",
                agent.settings.socket,
            )
        log.info(
            "serving on %s with resolver '%s' (cache %gs, max stale %gs)",
            agent.settings.socket,
            agent.resolver.name,
            agent.settings.cache_ttl,
            agent.settings.max_stale,
        )
        _notify("READY=1")
        if ready is not None:
            ready(running)
        while not stop.wait(1.0):  # a signal another thread took: seen within a second
            pass
        _notify("STOPPING=1")
        log.info("stopping")
    finally:
        running.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
