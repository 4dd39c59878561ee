"""Redacted task output: every value a task was given, replaced in what it prints.

A task that prints a secret puts it in its stdout or stderr: the terminal of ``run``,
the sandbox's ``stdout``/``stderr`` files under Mesos, which anyone allowed to browse
the sandbox reads. CI systems mask secrets in their logs; this does it for tasks. With
``run --redact-output`` (or ``redact_output = true`` in the configuration, or the
label ``mesos-secrets/redact-output: "true"`` for the executor) the task writes into
pipes, and a thread of the front end copies each to where the output belongs, with
every value the task was given replaced by ``[redacted:NAME]``. NAME is the
environment variable or the volume's path.

What is replaced: each value as it is, its base64 (standard and URL-safe alphabets,
padded or not) and its URL encoding (``%XX``, and ``+`` for spaces). Values shorter
than :data:`MIN_LENGTH` bytes are not replaced, because they would mask innocent text
everywhere; the front end logs their names.

Streaming: output passes through as it comes, in the writes it came in, except the end
of a chunk that could be the start of a value. That end is held back until the next
bytes show whether the value follows, so a value split across writes is still found.
If nothing comes for :data:`HOLD_S` seconds, what is held goes out: as
``[redacted:NAME]`` if it is at least :data:`MIN_LENGTH` bytes of a value's start,
as it is otherwise. What comes after it is still matched against the rest of that
value, and swallowed (or, after a start too short for a marker, replaced) if it is the
rest. The delay is bounded, and at most ``MIN_LENGTH - 1`` bytes of a value can show,
and only when a task stops mid-value for longer than that.

A value a task is given later (a rotation writes a new one into its secret volume) is
learned before the task can read it: the isolator hands it to the container's
:class:`OutputRedaction` first.

This is for a task that prints its secrets by accident. A task that wants to leak a
value can encode it some other way; no filter stops that.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import select
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

from .secretbytes import SecretBytes

__all__ = ["HOLD_S", "MIN_LENGTH", "OutputRedaction", "Pump", "Redactor"]

log = logging.getLogger(__name__)

#: Values shorter than this are not replaced (they would mask innocent text).
MIN_LENGTH = 4
#: How many values of one name are replaced: the newest ones (a task may still print a
#: value a rotation replaced; a secret rotated every second must not grow the filter).
KEPT_PER_NAME = 4
#: How long a possible start of a value is held back when nothing follows it.
HOLD_S = 0.1
_CHUNK = 65536


def _encodings(value: bytes) -> set[bytes]:
    """``value`` and the encodings of it a task is likely to print."""
    found = {value}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(value)
        found |= {encoded, encoded.rstrip(b"=")}
    found.add(urllib.parse.quote(value, safe="").encode())
    found.add(urllib.parse.quote_plus(value, safe="").encode())
    return found


class _Hidden:
    """Holds bytes that may be a value, or a piece of one; never shows them."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data

    def __repr__(self) -> str:
        return "<hidden>"


class Redactor:
    """Replaces the values it is given, in a stream fed to it in chunks (see the
    module). Never shows the values: its repr says how many it has."""

    def __init__(self, values: Iterable[tuple[str, SecretBytes]]) -> None:
        #: The names of values too short to replace.
        self.too_short: list[str] = []
        self._hidden = _Hidden([])
        #: The values by name, oldest first, at most :data:`KEPT_PER_NAME` of each.
        self._values = _Hidden({})
        self.add(values)
        #: Bytes not let out yet, that may be (or continue) a value.
        self._held = _Hidden(b"")
        #: Bytes let out already (after the hold) that may begin a value: what follows
        #: them is matched against the rest of it. ``_marked``: they went as a marker.
        self._carry = _Hidden(b"")
        self._marked = False

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._patterns)} pattern(s)>"

    @property
    def _patterns(self) -> list[tuple[bytes, str]]:
        patterns: list[tuple[bytes, str]] = self._hidden.data
        return patterns

    def add(self, values: Iterable[tuple[str, SecretBytes]]) -> list[str]:
        """Replace ``values`` too, from the next bytes on, here and in every redactor
        :meth:`fresh` made of this one (they share their values; a pump may be reading
        them meanwhile: the list is swapped whole). One writer at a time (the
        container's :class:`OutputRedaction` holds its lock). Of one name, the newest
        :data:`KEPT_PER_NAME` values are kept. Returns the names of those too short to
        replace."""
        kept: dict[str, list[bytes]] = {k: list(v) for k, v in self._values.data.items()}
        short = []
        for name, value in values:
            raw = value.reveal()
            if len(raw) < MIN_LENGTH:
                short.append(name)
                continue
            history = kept.setdefault(name, [])
            if raw in history:
                history.remove(raw)
            history.append(raw)
            del history[:-KEPT_PER_NAME]
        patterns: dict[bytes, str] = {}
        for name, history in kept.items():
            for raw in reversed(history):  # the newest first
                for pattern in _encodings(raw):
                    patterns.setdefault(pattern, name)
        self.too_short += [name for name in dict.fromkeys(short) if name not in self.too_short]
        self._values.data = kept
        # Longest first: of two matches at one place, the longer one is replaced.
        self._hidden.data = sorted(patterns.items(), key=lambda item: -len(item[0]))
        return short

    def fresh(self) -> Redactor:
        """One with the same values (shared: see :meth:`add`) and nothing held: for
        another stream."""
        other = Redactor(())
        other._hidden = self._hidden
        other._values = self._values
        other.too_short = self.too_short
        return other

    @property
    def active(self) -> bool:
        return bool(self._patterns)

    @property
    def holding(self) -> bool:
        return bool(self._held.data)

    def feed(self, data: bytes) -> bytes:
        """What can go out now, of what was held and ``data``."""
        out = b""
        pending: bytes = self._held.data + data
        self._held.data = b""
        if self._carry.data:
            decided = self._continued(pending)
            if decided is None:  # still possibly the rest of the value let out before
                self._held.data = pending
                return b""
            out, pending = decided
        replaced, rest = self._replace(pending)
        keep = self._possible_start(rest)
        self._held.data = rest[len(rest) - keep :] if keep else b""
        return out + replaced + (rest[: len(rest) - keep] if keep else rest)

    def flush(self) -> bytes:
        """What is held, let out (nothing came for a while): a value's start of
        :data:`MIN_LENGTH` bytes or more as its marker, a shorter one as it is. What
        follows it is still matched against the rest of the value (:meth:`feed`), so
        at most ``MIN_LENGTH - 1`` bytes of a value ever show."""
        held: bytes = self._held.data
        self._held.data = b""
        if not held:
            return b""
        carry: bytes = self._carry.data + held
        names = [name for pattern, name in self._patterns if pattern.startswith(carry)]
        self._carry.data = carry if names else b""
        if not names:
            return held
        if self._marked:
            return b""  # the rest of a value whose marker went out already
        if len(carry) >= MIN_LENGTH:
            self._marked = True
            return _marker(names[0])
        return held

    def _continued(self, pending: bytes) -> tuple[bytes, bytes] | None:
        """After a flush: does ``pending`` finish a value the carry began? (what goes
        out for it, the rest of ``pending``); None while it may still."""
        carry: bytes = self._carry.data
        undecided = False
        for pattern, name in self._patterns:  # longest first
            if not pattern.startswith(carry):
                continue
            need = pattern[len(carry) :]
            if pending.startswith(need):
                if undecided:
                    return None  # a longer one may still be under way
                self._carry.data, marked, self._marked = b"", self._marked, False
                return (b"" if marked else _marker(name)), pending[len(need) :]
            if need.startswith(pending):
                undecided = True
        if undecided:
            return None
        self._carry.data, self._marked = b"", False
        return b"", pending

    def _replace(self, buffer: bytes) -> tuple[bytes, bytes]:
        """(``buffer`` up to its last replacement, with the values replaced; the rest).
        A match at or after the start of a value that may be under way at the end of
        ``buffer`` waits: the next bytes tell which is replaced, as one write would."""
        limit = len(buffer) - self._possible_start(buffer)
        pieces = []
        start = 0
        while True:
            best = None
            for pattern, name in self._patterns:
                at = buffer.find(pattern, start)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, pattern, name)
            if best is None:
                break
            at, pattern, name = best
            if at >= limit:
                break
            pieces += [buffer[start:at], _marker(name)]
            start = at + len(pattern)
        return b"".join(pieces), buffer[start:]

    def _possible_start(self, rest: bytes) -> int:
        """The length of the longest end of ``rest`` that begins some value (and is not
        all of it). Only places where a value's first byte is are tried."""
        longest = 0
        for pattern, _ in self._patterns:
            window = rest[len(rest) - min(len(pattern) - 1, len(rest)) :]
            at = window.find(pattern[:1])
            while at != -1 and len(window) - at > longest:
                if pattern.startswith(window[at:]):
                    longest = len(window) - at
                    break
                at = window.find(pattern[:1], at + 1)
        return longest


def _marker(name: str) -> bytes:
    return f"[redacted:{name}]".encode()


class OutputRedaction:
    """The redaction of one container's output, as its isolators see it: a value they
    give the task while it runs is :meth:`learn`-ed before the task can read it. The
    front end :meth:`attach`-es the redactor once the task's output runs through it;
    what was learned before is added then."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self._lock = threading.Lock()
        self._redactor: Redactor | None = None
        self._pending: list[tuple[str, SecretBytes]] = []

    def __repr__(self) -> str:
        return f"<OutputRedaction of container {self.container_id}>"

    def attach(self, redactor: Redactor) -> None:
        with self._lock:
            self._redactor = redactor
            pending, self._pending = self._pending, []
        if pending:
            self.learn(pending)

    def learn(self, values: Iterable[tuple[str, SecretBytes]]) -> None:
        """Replace ``values`` (name, value) in the task's output from now on."""
        with self._lock:
            if self._redactor is None:
                self._pending += values
                return
            short = self._redactor.add(values)
        if short:
            log.warning(
                "container %s: new value(s) of %s too short to redact in its output "
                "(under %d bytes)",
                self.container_id, ", ".join(short), MIN_LENGTH,
            )  # fmt: skip


class Pump:
    """Copies a pipe's bytes to ``destination`` through a :class:`Redactor`, in a thread
    of its own, until every writer has closed the pipe; the ends given are closed by it
    when done (``destination``'s only if ``close_destination``)."""

    def __init__(
        self,
        source: int,
        destination: int,
        redactor: Redactor,
        name: str,
        *,
        close_destination: bool = False,
    ) -> None:
        self.source = source
        self.destination = destination
        self.redactor = redactor
        self.close_destination = close_destination
        self._thread = threading.Thread(target=self._run, name=f"redact-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Close its ends, for a pump never started (the launch failed)."""
        os.close(self.source)
        if self.close_destination:
            os.close(self.destination)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of the output; False if it did not come in time."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        writing = True
        try:
            while True:
                timeout = HOLD_S if self.redactor.holding else None
                ready, _, _ = select.select([self.source], [], [], timeout)
                if not ready:
                    writing = self._write(self.redactor.flush(), writing)
                    continue
                try:
                    data = os.read(self.source, _CHUNK)
                except InterruptedError:
                    continue
                if not data:
                    self._write(self.redactor.flush(), writing)
                    return
                writing = self._write(self.redactor.feed(data), writing)
        except OSError as error:
            log.error("redacting task output failed: %s", os.strerror(error.errno or 0))
        finally:
            os.close(self.source)
            if self.close_destination:
                with contextlib.suppress(OSError):
                    os.close(self.destination)

    def _write(self, data: bytes, writing: bool) -> bool:
        """Write all of ``data``; False once the destination is gone (the output is
        then read and dropped, so that the task is not blocked or killed by SIGPIPE)."""
        view = memoryview(data)
        while writing and view:
            try:
                view = view[os.write(self.destination, view) :]
            except InterruptedError:
                continue
            except OSError as error:
                if error.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                return False
        return writing
