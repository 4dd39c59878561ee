"""Registries of resolvers and isolators: entry points plus explicit registration.

Built-ins register through the same entry-point groups as third-party plugins
(``mesos_secrets.resolvers``, ``mesos_secrets.isolators``), the way keyring does. Unlike
keyring there is no automatic fallback: the resolver asked for is the one used, and if
it cannot be loaded that is an error. Plugins are imported only when asked for, so one
broken plugin does not break the others. The entry points come from an index
(:mod:`.plugin_index`) that is scanned again only when the installed distributions change.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Generic, TypeVar

from . import plugin_index
from .audit import AuditLog
from .config import RESOLVER_ENV, Config, load_config
from .errors import ConfigError, PluginError
from .plugin_index import ISOLATOR_GROUP, RESOLVER_GROUP, EntryPoint
from .resolver import SecretResolver

__all__ = [
    "DEFAULT_RESOLVER",
    "ISOLATOR_GROUP",
    "RESOLVER_GROUP",
    "Registry",
    "get_resolver",
    "register",
    "resolvers",
]

log = logging.getLogger(__name__)

DEFAULT_RESOLVER = "local"

P = TypeVar("P")


class Registry(Generic[P]):
    """Named plugin classes of one kind, from an entry-point group and ``register()``."""

    def __init__(self, group: str, kind: str, base: type[Any]) -> None:
        self.group = group
        self.kind = kind
        self.base = base
        self._explicit: dict[str, type[P]] = {}
        self._loaded: dict[str, type[P]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, plugin: type[P], *, replace: bool = False) -> None:
        """Register ``plugin`` under ``name``; refuses to shadow a name unless ``replace``."""
        checked = self._check_class(name, plugin, origin="register()")
        with self._lock:
            if not replace and (name in self._explicit or name in self._entry_points()):
                raise PluginError(f"{self.kind} '{name}' is already registered")
            self._explicit[name] = self._named(checked, name)
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget a plugin registered with :meth:`register` (entry points stay)."""
        with self._lock:
            self._explicit.pop(name, None)
            self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Every known name, sorted, without importing anything."""
        return sorted(set(self._explicit) | set(self._entry_points()))

    def load(self, name: str) -> type[P]:
        """The plugin class registered under ``name``; imports its module if needed."""
        with self._lock:
            if name in self._explicit:
                return self._explicit[name]
            if name in self._loaded:
                return self._loaded[name]
        entry = self._entry_points().get(name)
        if entry is None:
            raise PluginError(
                f"unknown {self.kind} '{name}' (known: {', '.join(self.names()) or 'none'})"
            )
        try:
            plugin = entry.load()
        except Exception as error:
            raise PluginError(
                f"{self.kind} '{name}' failed to load from '{entry.value}': "
                f"{type(error).__name__}: {error}"
            ) from error
        checked = self._check_class(name, plugin, origin=entry.value)
        with self._lock:
            self._loaded[name] = self._named(checked, name)
        return checked

    def _check_class(self, name: str, plugin: Any, origin: str) -> type[P]:
        if not (isinstance(plugin, type) and issubclass(plugin, self.base)):
            raise PluginError(
                f"{self.kind} '{name}' from '{origin}' is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        return plugin

    @staticmethod
    def _named(plugin: type[P], name: str) -> type[P]:
        """Give a plugin class that does not name itself the name it is registered under."""
        if not vars(plugin).get("name"):
            plugin.name = name  # type: ignore[attr-defined]
        return plugin

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for entry in plugin_index.entry_points(self.group):
            if entry.name in found and found[entry.name].value != entry.value:
                log.warning(
                    "%s '%s' is provided twice (%s, %s); using the first",
                    self.kind,
                    entry.name,
                    found[entry.name].value,
                    entry.value,
                )
                continue
            found.setdefault(entry.name, entry)
        return found


resolvers: Registry[SecretResolver] = Registry(RESOLVER_GROUP, "resolver", SecretResolver)


def register(name: str, resolver: type[SecretResolver], *, replace: bool = False) -> None:
    """Register a resolver class under ``name``, as an entry point would."""
    resolvers.register(name, resolver, replace=replace)


def choose_resolver(name: str | None, config: Config) -> str:
    """Explicit name > ``$MESOS_SECRETS_RESOLVER`` > the configuration file > ``local``."""
    return name or os.environ.get(RESOLVER_ENV) or config.resolver or DEFAULT_RESOLVER


def get_resolver(
    name: str | None = None,
    *,
    config: Config | str | os.PathLike[str] | None = None,
    **options: Any,
) -> SecretResolver:
    """Return a configured resolver.

    ``name`` chooses it (else ``$MESOS_SECRETS_RESOLVER``, else the configuration file,
    else ``local``). Options come from the configuration file's section for that
    resolver, overridden by ``options``. ``config`` is a :class:`Config` or a path;
    by default ``$MESOS_SECRETS_CONFIG`` is read.
    """
    if not isinstance(config, Config):
        config = load_config(config, known=resolvers.names())
    chosen = choose_resolver(name, config)
    plugin = resolvers.load(chosen)
    merged = {**config.options_for(chosen), **options}
    audit = AuditLog.from_config(config.audit)
    try:
        resolver = plugin.from_options(**merged)
    except (ConfigError, PluginError):
        raise
    except TypeError as error:  # a plugin whose __init__ rejects the options
        raise PluginError(f"resolver '{chosen}' cannot be built: {error}") from None
    if audit is not None:
        resolver.audit = audit
    return resolver
