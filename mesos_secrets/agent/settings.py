"""The node agent's settings: the ``[agent]`` table, overridden by command-line flags.

::

    [agent]
    socket = "/run/mesos-secrets/agent.sock"   # default: <runtime_dir>/agent.sock
    socket_group = "mesos"          # who may connect besides the agent's user (mode 0660)
    cache_ttl = 5                   # seconds a value is served without asking the store
    max_stale = 0                   # seconds past that it may be served while the store
                                    # cannot be reached (0: fail closed)
    executor_secret_key = "/etc/mesos/executor-secret-key"   # the Mesos agent's JWT key
    require_token = false           # true: only executors (with their token), root, the
                                    # agent's user and the users [agent.principals] names
    executor_principals = ["marathon"]   # principals an executor with a valid token may
                                    # state as its framework's (default none: its uid's)
    metrics_address = "127.0.0.1:9273"

    [agent.cache_ttls]              # per path, first match wins (ACL patterns: * and **)
    "/db/**" = 60

    [agent.principals]              # callers' users (by uid) to principals; default:
    "0" = "ops"                     # the user's name
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["SOCKET_ENV", "AgentSettings", "parse_address"]

#: Where clients look for the agent's socket when no ``socket`` option says.
SOCKET_ENV = "MESOS_SECRETS_AGENT_SOCKET"
SOCKET_NAME = "agent.sock"
_KNOWN = (
    "socket",
    "socket_group",
    "cache_ttl",
    "cache_ttls",
    "max_stale",
    "executor_secret_key",
    "require_token",
    "executor_principals",
    "metrics_address",
    "principals",
)


def parse_address(text: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) for the metrics endpoint."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where} must be HOST:PORT, as 127.0.0.1:9273")
    return host, int(port)


def _seconds(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -sys.float_info.max <= value <= sys.float_info.max  # an int past a double too
    ):
        raise ConfigError(f"{where} must be a number of seconds")
    if value < 0:
        raise ConfigError(f"{where} must not be negative")
    return float(value)


@attrs.frozen
class AgentSettings:
    """What the agent runs with (see the module's documentation)."""

    socket: Path
    socket_group: str | None = None
    cache_ttl: float = 5.0
    #: (pattern, seconds): the first whose pattern matches a secret's name sets its TTL.
    cache_ttls: tuple[tuple[str, float], ...] = ()
    max_stale: float = 0.0
    executor_secret_key: Path | None = None
    require_token: bool = False
    #: Principals an executor with a valid token may state (its framework's).
    executor_principals: frozenset[str] = frozenset()
    metrics_address: tuple[str, int] | None = None
    #: uid: principal.
    principals: Mapping[int, str] = attrs.field(factory=dict)

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any] | None, runtime_dir: Path, **flags: Any
    ) -> AgentSettings:
        """From the configuration's ``[agent]`` table; ``flags`` that are not None win."""
        table = dict(table or {})
        unknown = sorted(set(table) - set(_KNOWN))
        if unknown:
            raise ConfigError(
                f"unknown [agent] setting {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(_KNOWN)})"
            )
        table.update({name: value for name, value in flags.items() if value is not None})
        socket = table.get("socket", runtime_dir / SOCKET_NAME)
        group = table.get("socket_group")
        key = table.get("executor_secret_key")
        for name, value in (("socket", socket), ("executor_secret_key", key)):
            if value is not None and not isinstance(value, str | Path):
                raise ConfigError(f"[agent] '{name}' must be a path")
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigError("[agent] 'socket_group' must be a group name")
        require = table.get("require_token", False)
        if not isinstance(require, bool):
            raise ConfigError("[agent] 'require_token' must be true or false")
        stated = table.get("executor_principals", [])
        if not isinstance(stated, list) or not all(isinstance(p, str) and p for p in stated):
            raise ConfigError("[agent] 'executor_principals' must be a list of principal names")
        address = table.get("metrics_address")
        if address is not None and not isinstance(address, str):
            raise ConfigError("[agent] 'metrics_address' must be HOST:PORT")
        ttls = table.get("cache_ttls", {})
        if not isinstance(ttls, Mapping):
            raise ConfigError("[agent.cache_ttls] must be a table of path patterns to seconds")
        principals = table.get("principals", {})
        if not isinstance(principals, Mapping):
            raise ConfigError("[agent.principals] must be a table of uids to principal names")
        by_uid = {}
        for uid, principal in principals.items():
            if not str(uid).isdigit():
                raise ConfigError(f"[agent.principals] key '{uid}' is not a uid (a number)")
            if not isinstance(principal, str) or not principal or not principal.isprintable():
                raise ConfigError(f"[agent.principals] '{uid}' must name a principal")
            by_uid[int(uid)] = principal
        return cls(
            socket=Path(socket),
            socket_group=group,
            cache_ttl=_seconds(table.get("cache_ttl", 5.0), "[agent] 'cache_ttl'"),
            cache_ttls=tuple(
                (str(pattern), _seconds(value, f"[agent.cache_ttls] '{pattern}'"))
                for pattern, value in ttls.items()
            ),
            max_stale=_seconds(table.get("max_stale", 0.0), "[agent] 'max_stale'"),
            executor_secret_key=Path(key) if key is not None else None,
            require_token=require,
            executor_principals=frozenset(stated),
            metrics_address=(
                parse_address(address, "[agent] 'metrics_address'") if address else None
            ),
            principals=by_uid,
        )
