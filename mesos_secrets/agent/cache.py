"""One cache for the node: every caller's answers, one store read per secret at a time.

A value is fresh for its TTL (``cache_ttl``, or the first ``cache_ttls`` pattern that
matches its name) after the store gave it; while fresh it is served from memory. Callers
that want a secret being read already wait for that read instead of making their own
(request coalescing): for the same key they share its outcome; for another key of the same
secret they go next, answered by the resolver's own cache of the secret's fields, so a
secret is read once whichever of its keys are asked for.

When the store cannot be reached (the resolver raises
:class:`~mesos_secrets.errors.ResolverUnavailableError`) a value that was good is served
up to ``max_stale`` seconds past its freshness, saying by how much. Any other failure (not
found, denied by the store) is final and nothing stale is served for it. Past
``ttl + max_stale`` an entry is dropped.

Who may see an answer is not this module's concern: the agent checks every caller
before it asks (:mod:`.server`), cache hits included. Values are kept as
:class:`~mesos_secrets.secretbytes.SecretBytes`, in this process's memory only.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import NamedTuple

from .. import audit as _audit
from ..errors import ResolverError, ResolverUnavailableError
from ..resolver import ResolveContext, SecretResolver, select_field
from ..secret import Reference
from ..secretbytes import SecretBytes

__all__ = ["Answer", "Entry", "Kept", "NodeCache"]

#: How long a caller waits for a read another caller has under way, at most (the
#: resolver's own deadline ends the read sooner).
WAIT_FOR_READ_S = 60.0
#: After the store could not be reached, for this long a value that may be served stale
#: is served at once, rather than after another attempt's full deadline.
BREAKER_S = 5.0


#: An entry as kept across a restart: (name, key), value, age and freshness (seconds),
#: version.
Kept = tuple[tuple[str, str | None], SecretBytes, float, float, str | None]


class Entry(NamedTuple):
    """A value the store gave, and when."""

    value: SecretBytes
    fetched: float  # the clock's time of the read
    fetched_at: float  # the wall clock's (for the inventory)
    fresh_until: float
    version: str | None
    read: int = 0  # which store read gave it: the keys of one secret share it
    digest: bytes = b""  # of the value (keyed, this process's): tells values apart
    lease: float | None = None  # seconds the store gave it for, when it must be read again
    dynamic: bool = False  # each read makes new credentials (a lease): read only as due


class Answer(NamedTuple):
    """What a caller gets: the value and how it came."""

    value: SecretBytes
    age: float
    stale: float  # seconds past freshness (0: fresh)
    version: str | None
    hit: bool  # no store read of this caller's own
    coalesced: bool  # waited for another caller's read
    read: int = 0  # which store read gave it
    digest: bytes = b""  # of the value: which value a holder has, without keeping it


class NodeCache:
    """Values by ``(name, key)`` for every caller of the node (see the module)."""

    def __init__(
        self,
        resolver: SecretResolver,
        *,
        ttl: float,
        ttls: tuple[tuple[str, float], ...] = (),
        max_stale: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from ..acls import secret_pattern  # noqa: PLC0415 (the agent loads it anyway)

        self.resolver = resolver
        self.ttl = ttl
        self.max_stale = max_stale
        self._ttls = tuple((secret_pattern(glob), seconds) for glob, seconds in ttls)
        self._clock = clock
        self._entries: dict[tuple[str, str | None], Entry] = {}
        #: A secret's name: the read under way for it, and which key it is for.
        self._reads: dict[str, tuple[Future[Answer], str | None]] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._read_count = 0
        self._digest_key = secrets.token_bytes(32)
        #: Each secret's last read: when, the lease it came with, whether dynamic.
        self._reads_of: dict[str, tuple[float, float | None, bool]] = {}
        #: Counters for the metrics: store reads, hits, misses, coalesced, stale.
        self.on_event: Callable[[str], None] = lambda event: None
        #: Whether entries changed since :meth:`kept` last said what they are.
        self.changed = False

    def ttl_for(self, name: str) -> float:
        path = "/" + name.lstrip("/")
        for pattern, seconds in self._ttls:
            if pattern.fullmatch(path):
                return seconds
        return self.ttl

    def get(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> Answer | ResolverError:
        """The value of ``reference``, from memory while fresh, else from the resolver."""
        key = (reference.name, reference.key)
        coalesced = False
        deadline = self._clock() + WAIT_FOR_READ_S
        while True:
            with self._lock:
                now = self._clock()
                entry = self._entries.get(key)
                if entry is not None and now < entry.fresh_until:
                    self.on_event("hit")
                    return Answer(
                        entry.value,
                        now - entry.fetched,
                        0.0,
                        entry.version,
                        True,
                        coalesced,
                        entry.read,
                        entry.digest,
                    )
                reading = self._reads.get(reference.name)
                if reading is None:
                    future: Future[Answer] = Future()
                    self._reads[reference.name] = (future, reference.key)
                    break
            future, for_key = reading
            self.on_event("coalesced")
            coalesced = True
            try:
                outcome = future.result(timeout=max(0.0, deadline - self._clock()))
            except ResolverError as error:
                if for_key == reference.key:
                    return error
                continue  # another key of the secret failed: ours may not
            except TimeoutError:
                return self.not_in_time(reference)
            if for_key == reference.key:
                return outcome._replace(hit=True, coalesced=True)
            # Another key of the same secret was read: ours now comes from the
            # resolver's own cache of its fields, or is read next.
        self.on_event("miss")
        try:
            answer = self._read(reference, context, key, coalesced)
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self._lock:
                self._reads.pop(reference.name, None)
        if isinstance(answer, ResolverError):
            future.set_exception(answer)
        else:
            future.set_result(answer)
        return answer

    def _read(
        self,
        reference: Reference,
        context: ResolveContext | None,
        key: tuple[str, str | None],
        coalesced: bool,
        *,
        force: bool = False,
    ) -> Answer | ResolverError:
        """One store read: every field of the secret when the resolver gives them all
        (kept together: the keys served of one secret come from one read), else the
        key asked for. ``force`` (:meth:`reread`): the store is asked even while it was
        just down, and its silence is returned rather than a stale value."""
        if not force and self._down_until > self._clock():  # the store just failed
            stale = self._stale(key, coalesced)
            if stale is not None:
                return stale
        token = _audit.start_notes()
        scope: str | tuple[str, str | None] = reference.name  # what a final error spoils
        try:
            self.on_event("store_read")
            fields = self.resolver.resolve_fields(reference.name, context)
            if fields is None:
                scope = key
                values = {key: self.resolver.resolve_reference(reference, context)}
            else:
                values = {(reference.name, k): v for k, v in fields.items()}
                if len(fields) == 1:
                    values[(reference.name, None)] = next(iter(fields.values()))
        except ResolverUnavailableError as error:
            self._down_until = self._clock() + BREAKER_S
            return error if force else self._stale(key, coalesced) or error
        except ResolverError as error:  # final: what was kept of it is no longer good
            self._drop(scope)
            return error
        finally:
            notes = _audit.finish_notes(token)
        self._down_until = 0.0
        version = notes.get("version")
        kept = None if version is None else str(version)
        lease = notes.get("lease_seconds")
        lease = float(lease) if isinstance(lease, int | float) and lease > 0 else None
        read = self._store(
            reference.name,
            values,
            whole=fields is not None,
            version=kept,
            lease=lease,
            dynamic=bool(notes.get("dynamic")),
        )
        if key not in values and force and values:  # a refresh: the read, not a key, is what counts
            key = next(iter(values))
        if key not in values:  # not a key of the secret: the resolver's own words
            assert fields is not None
            try:
                select_field(reference, fields, resolver=self.resolver.name)
            except ResolverError as error:
                return error
        return Answer(values[key], 0.0, 0.0, kept, False, coalesced, read, self.digest(values[key]))

    def reread(self, reference: Reference) -> Answer | ResolverError:
        """Read ``reference``'s secret from the store now, fresh or not (a refresh: the
        caller holds the secret's name, so no other read of it is under way). A new
        value replaces what is kept; when the store cannot be reached, what is kept stays
        (the last good value) and the store's silence is returned."""
        if self._down_until > self._clock():  # it just failed: no wait for it again
            return ResolverUnavailableError(
                f"secret '{reference.name}': the store could not be reached moments ago",
                reference=reference.name,
                resolver=self.resolver.name,
            )
        self.on_event("refresh")
        self.resolver.uncache(reference.name)
        return self._read(reference, None, (reference.name, reference.key), False, force=True)

    def digest(self, value: SecretBytes) -> bytes:
        """A keyed digest of ``value`` (the key is this process's, in memory only): which
        value a holder has, without keeping the value."""
        return hashlib.blake2b(value.reveal(), key=self._digest_key, digest_size=16).digest()

    def read_again(self) -> dict[str, tuple[float | None, bool]]:
        """For each secret read: when (the clock's time) it should be read again because
        the store gave it for a while only (two thirds into a lease that is not renewed,
        or a ``ttl``; None: no such end), and whether it is dynamic (each read makes new
        credentials). Kept apart from the values, which expire sooner."""
        with self._lock:
            return {
                name: (None if lease is None else fetched + lease * 2 / 3, dynamic)
                for name, (fetched, lease, dynamic) in self._reads_of.items()
            }

    def _store(
        self,
        name: str,
        values: dict[tuple[str, str | None], SecretBytes],
        *,
        whole: bool,
        version: str | None,
        lease: float | None = None,
        dynamic: bool = False,
    ) -> int:
        """Keep what one read gave; ``whole``: every field of the secret, which replace
        whatever was kept of it. The read's number."""
        now = self._clock()
        fresh = now + self.ttl_for(name)
        with self._lock:
            self._read_count += 1
            if whole:
                for old in [k for k in self._entries if k[0] == name]:
                    del self._entries[old]
            self._reads_of[name] = (now, lease, dynamic)
            for where, value in values.items():
                self._entries[where] = Entry(
                    value,
                    now,
                    time.time(),
                    fresh,
                    version,
                    self._read_count,
                    self.digest(value),
                    lease,
                    dynamic,
                )
            self.changed = True
            return self._read_count

    def _drop(self, what: str | tuple[str, str | None]) -> None:
        with self._lock:
            for old in [
                k for k in self._entries if (k[0] == what if isinstance(what, str) else k == what)
            ]:
                del self._entries[old]
                self.changed = True

    def _stale(self, key: tuple[str, str | None], coalesced: bool) -> Answer | None:
        """The last good value, if it is no more than ``max_stale`` past its freshness."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is None or now - entry.fresh_until > self.max_stale:
                return None
        self.on_event("stale")
        stale = max(0.0, now - entry.fresh_until)
        return Answer(
            entry.value,
            now - entry.fetched,
            stale,
            entry.version,
            True,
            coalesced,
            entry.read,
            entry.digest,
        )

    def not_in_time(self, reference: Reference) -> Answer | ResolverError:
        """For a caller that waited for another's read of ``reference`` as long as it
        may: a value that may still be served stale, else the store's silence."""
        stale = self._stale((reference.name, reference.key), True)
        if stale is not None:
            return stale
        return ResolverUnavailableError(
            f"secret '{reference.name}': the store's answer did not come within "
            f"{WAIT_FOR_READ_S:.0f}s",
            reference=reference.name,
            key=reference.key,
            resolver=self.resolver.name,
        )

    def forget(self, reference: Reference) -> None:
        """Drop every cached key of ``reference``'s secret (its lease was revoked)."""
        with self._lock:
            self._reads_of.pop(reference.name, None)
            for key in [k for k in self._entries if k[0] == reference.name]:
                del self._entries[key]
                self.changed = True

    def expire(self) -> None:
        """Drop entries past ``ttl + max_stale``: they can no longer be served."""
        with self._lock:
            now = self._clock()
            for key in [
                k for k, e in self._entries.items() if now - e.fresh_until > self.max_stale
            ]:
                del self._entries[key]
                self.changed = True

    def kept(self) -> list[Kept]:
        """Every entry that may still be served, as (key, value, age, freshness, version),
        for the copy that survives a restart; clears :attr:`changed`."""
        with self._lock:
            now = self._clock()
            self.changed = False
            return [
                (key, e.value, now - e.fetched, e.fresh_until - e.fetched, e.version)
                for key, e in self._entries.items()
                if now - e.fresh_until <= self.max_stale
            ]

    def unkept(self) -> None:
        """The copy was not written: write it again next time."""
        self.changed = True

    def restore(self, entries: list[Kept]) -> int:
        """Entries kept by an earlier agent (ages as of now); those that may still be
        served are taken. How many."""
        taken = 0
        with self._lock:
            now = self._clock()
            wall = time.time()
            reads: dict[tuple[str, float], int] = {}  # a kept read: its keys, one number
            for key, value, age, fresh, version in entries:
                fetched = now - age
                if now - (fetched + fresh) > self.max_stale or key in self._entries:
                    continue
                read = reads.get((key[0], round(age, 3)))
                if read is None:
                    self._read_count += 1
                    read = reads[(key[0], round(age, 3))] = self._read_count
                self._entries[key] = Entry(
                    value, fetched, wall - age, fetched + fresh, version, read, self.digest(value)
                )
                taken += 1
        return taken

    def entries(self) -> Iterator[tuple[tuple[str, str | None], Entry]]:
        with self._lock:
            return iter(list(self._entries.items()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._reads_of.clear()
            self.changed = True
