"""What a front end hears about the secrets its tasks hold, and what it does about it.

With the node agent's resolver (:attr:`SecretResolver.watches`), a front end (``run``,
the executor) keeps one watch open on the agent (:mod:`mesos_secrets.agent.events`):

- ``revoked``: the break-glass (``mesos-secrets revoke``). The task is killed at once,
  with no grace period (its secrets may be in an attacker's hands), and its front end
  says why: ``run`` on stderr, the executor in the TASK_KILLED update.
- ``changed``: a new version of a secret the task holds is in the store. What the task
  gets of it is its policy's (:mod:`.rotation`: files rewritten in place, a signal, a
  restart); without one, a running task keeps what it was given.
- ``stale``: a secret the task holds could not be read again: it keeps the last good
  value, or is stopped, as its policy says.
- The agent restarted: the holdings it knew are gone with it, so the watcher asks the
  new one for each running task's secrets again (they are recorded as held again, and a
  revocation reaches the task again).

A watch that fails (the agent stopping, restarting) is tried again, backing off up to
:data:`MAX_BACKOFF_S`; the task runs on meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

from .errors import ResolverError, SecretAccessDeniedError
from .resolver import ResolveContext, SecretResolver

if TYPE_CHECKING:
    from .mesos import TaskInfo

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

#: The longest wait between two failed watches.
MAX_BACKOFF_S = 5.0

#: What is done with a task's context and the event's reason (revoked); names and
#: change (changed); names and reason (stale).
OnRevoked = Callable[[Mapping[str, str], str], None]
OnChanged = Callable[[Mapping[str, str], tuple[str, ...], str], None]
OnStale = Callable[[Mapping[str, str], tuple[str, ...], str], None]


class Watcher:
    """A thread watching ``resolver``'s holdings until :meth:`stop`."""

    def __init__(
        self,
        resolver: SecretResolver,
        *,
        revoked: OnRevoked,
        changed: OnChanged | None = None,
        stale: OnStale | None = None,
        resync: Callable[[Mapping[str, str], tuple[str, ...]], None] | None = None,
        held: Callable[[], Iterable[tuple[TaskInfo, ResolveContext]]] | None = None,
        wait: float = 25.0,
    ) -> None:
        self.resolver = resolver
        self._revoked = revoked
        self._changed = changed
        self._stale = stale
        self._resync = resync
        #: The running tasks, and the context each asks for its secrets with.
        self._held = held
        self._wait = wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secret-watcher", daemon=True)
        #: Set once the first watch was answered: from then on nothing is missed.
        self.watching = threading.Event()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.resolver.stop_watching()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        after: int | None = None
        epoch: str | None = None
        backoff = 0.1
        while not self._stop.is_set():
            try:
                answer = self.resolver.watch(after, self._wait)
            except ResolverError as error:
                if self._stop.is_set():
                    return
                log.debug("watching the node agent: %s", error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if answer["epoch"] != epoch:
                if epoch is not None:  # a new agent: what it knew of us is gone
                    log.warning("the node agent restarted: telling it what the tasks hold")
                    self._again()
                    after = None
                    epoch = answer["epoch"]
                    continue
                epoch = answer["epoch"]
            if after is None:
                after = answer["seq"]
                self.watching.set()
                continue
            for event in answer["events"]:
                self._handle(event)
            if answer.get("missed"):
                # What was missed may have been a revocation: asking again finds it
                # (the agent refuses a revoked task), and new versions are looked for.
                log.warning("the node agent dropped events before they were read: asking again")
                self._again()
            after = answer["seq"]

    def _again(self) -> None:
        """Ask the (new) agent again for every running task's secrets: it records them
        as held, so that a revocation reaches those tasks. It records what the store has
        now, which a task may not: a version that came while no agent watched is looked
        for (``resync``: the files compared, and rewritten if they differ)."""
        if self._held is None:
            return
        for task, context in self._held():
            references = [s.reference for s in task.secrets() if s.reference is not None]
            if not references or context.task_id is None:
                continue
            told = {"task_id": context.task_id}
            try:
                self.resolver.resolve_references(references, context)
            except SecretAccessDeniedError as error:
                why = _revocation(str(error))
                if why is not None:  # revoked while we were not listening
                    self._revoked(told, why)
                else:
                    log.warning("telling the node agent what the tasks hold failed: %s", error)
                continue
            except ResolverError as error:
                log.warning("telling the node agent what the tasks hold failed: %s", error)
                return
            if self._resync is not None:
                names = tuple(sorted({"/" + r.name.strip("/") for r in references}))
                self._resync(told, names)

    def _handle(self, event: Mapping[str, Any]) -> None:
        context = event.get("context") or {}
        names = tuple(event.get("names") or ())
        kind = event.get("kind")
        try:
            if kind == "revoked":
                self._revoked(context, str(event.get("reason") or "revoked"))
            elif kind == "stale":
                if self._stale is not None:
                    self._stale(context, names, str(event.get("reason") or "stale"))
            elif kind == "changed":
                if self._changed is not None:
                    self._changed(context, names, str(event.get("change") or ""))
                else:
                    log.info(
                        "task %s: %s changed in the store; the running task keeps what it "
                        "was given",
                        context.get("task_id", "?"),
                        ", ".join(f"'{n}'" for n in names),
                    )
        except Exception as error:  # noqa: BLE001 (one event's failure must not end the watch)
            log.error("handling a '%s' event failed: %s", kind, type(error).__name__)


#: How the agent refuses a task whose secrets were revoked (:mod:`.agent.server`).
_REVOKED = "the secrets of this task were revoked ("


def _revocation(message: str) -> str | None:
    """The reason of a revocation, from the agent's refusal of a revoked task; None
    for any other refusal."""
    start = message.find(_REVOKED)
    if start < 0:
        return None
    return message[start + len(_REVOKED) :].removesuffix(")")
