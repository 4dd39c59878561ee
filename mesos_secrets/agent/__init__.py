"""The node agent: one holder of store credentials per node, serving every task on it.

- :mod:`.server`: the daemon (``mesos-secrets agent``): who asks, ACLs, holdings, the
  socket;
- :mod:`.cache`: the node's one cache, with request coalescing and stale answers;
- :mod:`.protocol`: HTTP/1.1 and JSON on the Unix socket;
- :mod:`.settings`: the ``[agent]`` table;
- :mod:`.metrics`: Prometheus metrics.

The client is the ``agent`` resolver (``resolvers/agent.py``), chosen as any resolver is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from .server import Agent

__all__ = ["build_agent"]


def build_agent(
    config: Config,
    *,
    resolver: str | None = None,
    acls: str | Path | None = None,
    runtime_dir: Path | None = None,
    **flags: Any,
) -> Agent:
    """The agent the configuration describes: its resolver (never ``agent`` itself),
    ACLs, audit trail and ``[agent]`` settings, ``flags`` overriding them."""
    from ..acls import ACLs  # noqa: PLC0415
    from ..audit import AuditLog  # noqa: PLC0415
    from ..containerizer.runtime import default_runtime_dir  # noqa: PLC0415
    from ..errors import ConfigError, ResolverUnavailableError  # noqa: PLC0415
    from ..registry import choose_resolver, get_resolver, resolvers  # noqa: PLC0415
    from ..resolver import option_types  # noqa: PLC0415
    from .server import Agent  # noqa: PLC0415
    from .settings import AgentSettings  # noqa: PLC0415

    runtime = runtime_dir or (Path(config.runtime_dir) if config.runtime_dir else None)
    settings = AgentSettings.from_table(config.agent, runtime or default_runtime_dir(), **flags)
    chosen = choose_resolver(resolver, config)
    if chosen == "agent":
        raise ConfigError(
            "the node agent cannot use the 'agent' resolver itself: configure the store it "
            'reads (resolver = "vault", "local"…) for the agent, and \'agent\' for its clients'
        )
    options = {}
    # The agent's cache is the node's: a resolver's own beneath it would only hold
    # values longer than the agent's TTL says (unless configured for the resolver).
    if "cache_ttl" in option_types(resolvers.load(chosen)) and "cache_ttl" not in (
        config.options_for(chosen)
    ):
        options["cache_ttl"] = 0
    backend = get_resolver(chosen, config=config, **options)
    audit, backend.audit = backend.audit, None  # the agent records every answer itself
    try:
        try:
            backend.check()
        except ResolverUnavailableError as error:  # an outage: serve what the cache kept
            logging.getLogger("mesos_secrets.agent").warning("%s", error)
        rules = acls or config.acls
        return Agent(
            backend,
            settings,
            acls=ACLs.load(rules) if rules else None,
            audit=audit if audit is not None else AuditLog.from_config(config.audit),
        )
    except BaseException:
        backend.close()
        raise
