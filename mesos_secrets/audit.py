"""The audit trail: one JSON line per resolution or refusal, never a value.

Each record says when, who asked (framework, task, executor, container ids and
principal), through which resolver, for which reference name and key, the outcome,
how long it took and whether the cache answered::

    {"time": "2026-11-23T01:02:03.456Z", "event": "resolve", "resolver": "vault",
     "reference": "/myapp/db", "key": "password", "task_id": "web.1", "principal": "ops",
     "outcome": "ok", "duration_ms": 3.2, "cache_hit": false}

Records go to a file (appended, ``0600``, one line each), to the
``mesos_secrets.audit`` logger, or both, as the ``[audit]`` table of the configuration
says. Writing is serialized, so concurrent resolutions never interleave a line.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import (
    ConfigError,
    ResolverUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
)

__all__ = ["AuditLog", "note", "outcome_of"]

LOGGER = logging.getLogger("mesos_secrets.audit")

#: What a resolver tells the audit trail about the resolution under way (cache hits…).
_NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mesos_secrets_audit_notes", default=None
)


def note(**facts: Any) -> None:
    """Add facts (``cache_hit=True``) to the audit record of the current resolution."""
    notes = _NOTES.get()
    if notes is not None:
        notes.update(facts)


def start_notes() -> contextvars.Token[dict[str, Any] | None]:
    return _NOTES.set({})


def finish_notes(token: contextvars.Token[dict[str, Any] | None]) -> dict[str, Any]:
    notes = _NOTES.get() or {}
    _NOTES.reset(token)
    return notes


def outcome_of(error: BaseException | None) -> str:
    """A short, stable word for how a resolution ended."""
    if error is None:
        return "ok"
    if isinstance(error, SecretNotFoundError):
        return "not_found"
    if isinstance(error, SecretAccessDeniedError):
        return "denied"
    if isinstance(error, ResolverUnavailableError):
        return "unavailable"
    return "error"


class AuditLog:
    """Where audit records go: a file, the ``mesos_secrets.audit`` logger, or both."""

    def __init__(self, file: str | os.PathLike[str] | None = None, *, logger: bool = False) -> None:
        self.file = Path(file) if file is not None else None
        self.logger = logger
        self._lock = threading.Lock()
        if self.file is not None:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            except OSError as error:
                raise ConfigError(
                    f"cannot open the audit file '{self.file}': {error.strerror}"
                ) from None

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> AuditLog | None:
        """From the ``[audit]`` table: ``file = "/path"``, ``logger = true``."""
        if not table:
            return None
        unknown = sorted(set(table) - {"file", "logger"})
        if unknown:
            raise ConfigError(
                f"unknown [audit] setting {', '.join(map(repr, unknown))} (known: file, logger)"
            )
        file, logger = table.get("file"), table.get("logger", False)
        if file is not None and not isinstance(file, str):
            raise ConfigError("[audit] 'file' must be a path")
        if not isinstance(logger, bool):
            raise ConfigError("[audit] 'logger' must be true or false")
        return cls(file, logger=logger)

    def write(self, event: str, **fields: Any) -> None:
        """Append one record. Fields that are None are left out."""
        now = datetime.datetime.now(datetime.UTC)
        record = {
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": event,
        }
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, separators=(",", ":"), sort_keys=False)
        with self._lock:
            if self.file is not None:
                fd = os.open(
                    self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    os.write(fd, line.encode() + b"\n")
                finally:
                    os.close(fd)
            if self.logger:
                LOGGER.info("%s", line)
