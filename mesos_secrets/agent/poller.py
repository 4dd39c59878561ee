"""When the node agent reads a held secret again, to notice a new version in the store.

A task asks for its secrets to be read again every ``mesos-secrets/refresh-interval``
seconds (its front end passes the interval with each request, :mod:`.protocol`). The
agent reads each secret on the shortest interval any of its holders asked for, with
jitter (each wait drawn between :data:`JITTER` and 1 times the interval: many nodes do
not all ask the store at once), and also before a value the store gave for a while only
runs out (two thirds into a lease it does not renew, or a KV ``ttl``), whether or not
its holders asked for an interval. A dynamic secret (each read makes new credentials, on
a lease the resolver renews) is read again only then, never on an interval. Secrets no
task holds are never read again.

Each read is :meth:`.server.Agent.poll`: holders whose value changed are told
(``changed``), and when the store cannot be reached or no longer has the secret they
are told once (``stale``) and keep what they have. At most :data:`MAX_READS` reads are
under way at once; a secret's next read is planned when its last one ends, so a slow
store is never asked twice for the same secret at the same time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Agent

__all__ = ["JITTER", "MAX_READS", "Poller"]

log = logging.getLogger("mesos_secrets.agent")

#: The shortest wait, as a fraction of the interval.
JITTER = 0.8
#: Reads under way at once, at most.
MAX_READS = 8


class Poller:
    """Plans and starts the agent's reads (see the module); :meth:`tick` does one round."""

    def __init__(
        self,
        agent: Agent,
        *,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.agent = agent
        self._clock = clock
        self._draw = draw
        #: Each polled secret's next read (the clock's time), and why it is due.
        self._due: dict[str, tuple[float, str]] = {}
        self._reading: set[str] = set()
        self._lock = threading.Lock()

    def _plan(
        self,
        interval: float | None,
        now: float,
        known: tuple[float | None, bool],
    ) -> tuple[float, str] | None:
        """When a secret should next be read, and why; None: never, as things stand.
        ``known``: when its lease wants it read again, and whether it is dynamic."""
        lease, dynamic = known
        due: tuple[float, str] | None = None
        if interval is not None and not dynamic:
            due = (now + self._draw(JITTER * interval, interval), "interval")
        if lease is not None and (due is None or lease < due[0]):
            due = (max(lease, now), "lease")
        return due

    def tick(self) -> list[str]:
        """Start the reads that are due (each in a thread of its own); their names."""
        now = self._clock()
        intervals = self.agent.polled()
        held = self.agent.held_names()
        known = self.agent.cache.read_again()
        started = []
        with self._lock:
            for name in list(self._due):
                if name not in held:
                    del self._due[name]  # no one holds it: it is not read again
            for name in sorted(held):
                if name in self._reading:
                    continue
                if name not in self._due:
                    planned = self._plan(intervals.get(name), now, known.get(name, (None, False)))
                    if planned is None:
                        continue
                    self._due[name] = planned
                when, why = self._due[name]
                shorter = intervals.get(name)
                if why == "interval" and shorter is not None and when - now > shorter:
                    # a holder that wants it sooner came
                    when = now + self._draw(JITTER * shorter, shorter)
                    self._due[name] = (when, why)
                if when > now or len(self._reading) >= MAX_READS:
                    continue
                del self._due[name]
                self._reading.add(name)
                started.append(name)
                threading.Thread(
                    target=self._read, args=(name, why), name="agent-poll", daemon=True
                ).start()
        return started

    def _read(self, name: str, why: str) -> None:
        try:
            outcome = self.agent.poll(name, why)
            log.debug("secret '%s' read again (%s): %s", name, why, outcome)
        except Exception as error:  # noqa: BLE001 (a plugin's bug: the next round tries again)
            log.warning("reading secret '%s' again failed: %s", name, type(error).__name__)
        finally:
            with self._lock:
                self._reading.discard(name)

    def reading(self) -> int:
        with self._lock:
            return len(self._reading)
