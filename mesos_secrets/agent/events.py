"""What the node agent tells the front ends about the secrets their tasks hold.

A front end (``run``, the executor) watches its own holdings (``POST /v1/watch``,
:mod:`.protocol`): it is told when a secret one of its tasks holds has a new version in
the store (``changed``: ask again; ``change`` names the new version, the same for every
holder told of it), could not be read again (``stale``: the task keeps what it has, or
stops, as its policy says) or was revoked (``revoked``: stop the task, for the reason
given). Events are numbered; a watcher asks for those after the last it saw, and
waits for the next when there is none. The last :data:`KEPT` events are kept: a watcher
that falls further behind has missed some, and is told so (``missed``).

An event names secrets and a task, never a value.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import attrs

__all__ = ["KEPT", "Event", "EventLog"]

#: How many events are kept for watchers that are behind.
KEPT = 4096


@attrs.frozen
class Event:
    """One thing a holder is told."""

    seq: int
    #: The holder it is for (the agent's key of a task's holdings).
    holder: Hashable
    kind: str  # "changed", "stale" or "revoked"
    names: tuple[str, ...]
    reason: str
    #: The task's ids, as it stated them when it asked (task_id, container_id…).
    context: Mapping[str, str]
    #: Which new version (``changed``): the same for every holder told of it.
    change: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "names": list(self.names),
            "reason": self.reason,
            "context": dict(self.context),
            **({"change": self.change} if self.change else {}),
        }


class EventLog:
    """The agent's numbered events, and the watchers waiting for them."""

    def __init__(self, kept: int = KEPT) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=kept)
        self._seq = 0
        self._changed = threading.Condition()
        self._closed = False
        #: This agent's run: a watcher that sees another knows the numbers began again
        #: (and that the holdings it knew of are gone with the agent that had them).
        self.epoch = secrets.token_hex(8)

    @property
    def seq(self) -> int:
        with self._changed:
            return self._seq

    def add(
        self,
        kind: str,
        told: Iterable[tuple[Hashable, Mapping[str, str], Iterable[str]]],
        reason: str = "",
        *,
        change: str = "",
    ) -> int:
        """Tell each (holder, its context, the names concerned) ``kind``; how many."""
        count = 0
        with self._changed:
            for holder, context, names in told:
                self._seq += 1
                count += 1
                self._events.append(
                    Event(
                        self._seq,
                        holder,
                        kind,
                        tuple(sorted(names)),
                        reason,
                        dict(context),
                        change,
                    )
                )
            if count:
                self._changed.notify_all()
        return count

    def wait(
        self,
        mine: Any,
        after: int,
        wait: float,
        *,
        gone: Any = None,
        clock: Any = time.monotonic,
    ) -> tuple[int, list[Event], bool]:
        """The events after ``after`` for the holders ``mine(holder)`` accepts, waiting up
        to ``wait`` seconds for one: (the last number, those events, whether some were
        missed, having been dropped before they were asked for). ``gone()``, asked each
        second, ends the wait early: the watcher went away (its connection closed)."""
        deadline = clock() + wait
        with self._changed:
            while True:
                missed = bool(self._events) and self._events[0].seq > after + 1
                found = [e for e in self._events if e.seq > after and mine(e.holder)]
                remaining = deadline - clock()
                if found or self._closed or remaining <= 0:
                    return self._seq, found, missed
                self._changed.wait(min(remaining, 1.0))
                if gone is not None and gone():
                    return self._seq, [], missed

    def close(self) -> None:
        """Wake every watcher: the agent stops."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
