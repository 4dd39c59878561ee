"""The configuration file: TOML, or a Mesos ``--modules`` JSON manifest.

Found at the path given explicitly, else at ``MESOS_SECRETS_CONFIG``; without either,
the defaults apply. TOML::

    resolver = "vault"              # which resolver; MESOS_SECRETS_RESOLVER overrides

    [resolvers.vault]               # options of each resolver, by its name
    address = "https://vault.example:8200"
    mount = "secret"

A Mesos modules manifest (``reference/mesos.md`` §8) works too: each module whose name
is a known resolver contributes its ``parameters`` as that resolver's options, and
when exactly one such module is listed it is the resolver chosen, as
``--secret_resolver`` would choose it on an agent.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from ._codec import loads
from .errors import ConfigError, SecretValidationError

__all__ = ["CONFIG_ENV", "RESOLVER_ENV", "Config", "load_config"]

CONFIG_ENV = "MESOS_SECRETS_CONFIG"
RESOLVER_ENV = "MESOS_SECRETS_RESOLVER"

_TOP_LEVEL = {
    "agent",
    "resolver",
    "resolvers",
    "isolation",
    "isolators",
    "runtime_dir",
    "audit",
    "images",
    "acls",
    "containers",
    "fetcher",
}


def _frozen_sections(value: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in value.items()})


@attrs.frozen
class Config:
    """What the configuration file says; empty when there is none."""

    resolver: str | None = None
    resolvers: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_frozen_sections
    )
    #: The ordered isolator list ("environment_secret,volume_secret"), or None: default.
    isolation: str | tuple[str, ...] | None = None
    #: Options of each isolator, by name.
    isolators: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_frozen_sections
    )
    runtime_dir: str | None = None
    #: The ACL file (who may use which secret).
    acls: str | None = None
    #: The [audit] table: ``file``, ``logger``.
    audit: Mapping[str, Any] | None = None
    #: The [images] table: ``store``, ``ca_bundle``, ``insecure_registries``…
    images: Mapping[str, Any] | None = None
    #: The [containers] table: ``capabilities`` (what a root task keeps).
    containers: Mapping[str, Any] | None = None
    #: The [fetcher] table: ``cache_dir``, ``cache_size``, ``timeout``, ``ca_bundle``.
    fetcher: Mapping[str, Any] | None = None
    #: The [agent] table (the node agent): ``socket``, ``cache_ttl``, ``max_stale``…
    agent: Mapping[str, Any] | None = None
    source: str | None = None

    def options_for(self, name: str) -> dict[str, Any]:
        """The options configured for resolver ``name`` (a fresh dict)."""
        return dict(self.resolvers.get(name, {}))


def load_config(
    path: str | os.PathLike[str] | None = None, *, known: Collection[str] = ()
) -> Config:
    """Read the configuration at ``path``, else at ``$MESOS_SECRETS_CONFIG``.

    ``known`` lists the resolver names, used to pick resolvers out of a modules
    manifest. A missing or malformed file is a :class:`ConfigError` naming it.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Config()
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read configuration file '{file}': {error.strerror}") from None
    if data.lstrip().startswith(b"{"):
        return _from_modules(_loads_at(data, file), file, known)
    return _from_toml(data, file)


def _loads_at(data: bytes, file: Path) -> Any:
    try:
        return loads(data)
    except SecretValidationError as error:
        raise ConfigError(f"configuration file '{file}': {error}") from None


def _from_toml(data: bytes, file: Path) -> Config:
    import tomllib  # noqa: PLC0415 (its regular expressions cost 3 ms: only with a file)

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"configuration file '{file}' is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"configuration file '{file}' is nested too deeply") from None
    except ValueError:  # a number beyond Python's 4300-digit limit
        raise ConfigError(f"configuration file '{file}' holds a number too long to read") from None
    unknown = sorted(set(doc) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"configuration file '{file}': unknown setting {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(_TOP_LEVEL))})"
        )
    resolver = doc.get("resolver")
    if resolver is not None and (not isinstance(resolver, str) or not resolver):
        raise ConfigError(f"configuration file '{file}': 'resolver' must be a non-empty string")
    tables = {key: _tables(doc, key, file) for key in ("resolvers", "isolators")}
    isolation = doc.get("isolation")
    if isinstance(isolation, list) and all(isinstance(i, str) for i in isolation):
        isolation = tuple(isolation)
    elif isolation is not None and not isinstance(isolation, str):
        raise ConfigError(
            f"configuration file '{file}': 'isolation' must be a string "
            '("environment_secret,volume_secret") or a list of names'
        )
    tables_of = {
        name: doc.get(name) for name in ("audit", "images", "containers", "fetcher", "agent")
    }
    for name, table in tables_of.items():
        if table is not None and not isinstance(table, dict):
            raise ConfigError(f"configuration file '{file}': '{name}' must be a table, as [{name}]")
    runtime_dir, acls = doc.get("runtime_dir"), doc.get("acls")
    for name, value in (("runtime_dir", runtime_dir), ("acls", acls)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"configuration file '{file}': '{name}' must be a path")
    return Config(
        resolver=resolver,
        resolvers=tables["resolvers"],
        isolation=isolation,
        isolators=tables["isolators"],
        runtime_dir=runtime_dir,
        acls=acls,
        audit=tables_of["audit"],
        images=tables_of["images"],
        containers=tables_of["containers"],
        fetcher=tables_of["fetcher"],
        agent=tables_of["agent"],
        source=str(file),
    )


def _tables(doc: Mapping[str, Any], key: str, file: Path) -> dict[str, dict[str, Any]]:
    sections = doc.get(key, {})
    if not isinstance(sections, dict) or not all(isinstance(v, dict) for v in sections.values()):
        raise ConfigError(f"configuration file '{file}': '{key}' must be tables, as [{key}.NAME]")
    return sections


def _from_modules(doc: Any, file: Path, known: Collection[str]) -> Config:
    """A Mesos ``Modules`` manifest, with Mesos' own error messages."""

    def fail(message: str, path: str) -> ConfigError:
        return ConfigError(f"modules manifest '{file}': {message}", path)

    if not isinstance(doc, dict) or not isinstance(doc.get("libraries", []), list):
        raise fail("expected an object with a 'libraries' array", "/libraries")
    resolvers: dict[str, dict[str, Any]] = {}
    for i, library in enumerate(doc.get("libraries", [])):
        where = f"/libraries/{i}"
        if not isinstance(library, dict):
            raise fail("expected an object", where)
        lib = library.get("file") or library.get("name")
        if not isinstance(lib, str) or not lib:
            raise fail("Library name or path not provided", where)
        modules = library.get("modules", [])
        if not isinstance(modules, list):
            raise fail("'modules' must be an array", f"{where}/modules")
        for j, module in enumerate(modules):
            mwhere = f"{where}/modules/{j}"
            name = module.get("name") if isinstance(module, dict) else None
            if not isinstance(name, str) or not name:
                raise fail(f"Error: module name not provided with library '{lib}'", mwhere)
            parameters = _parameters(module.get("parameters", []), f"{mwhere}/parameters", fail)
            if name not in known:
                continue  # another kind of Mesos module (an isolator, a hook…)
            if name in resolvers and resolvers[name] != parameters:
                raise fail(
                    f"Error loading module '{name}'; this is potentially due to duplicate "
                    "module names",
                    mwhere,
                )
            resolvers[name] = parameters
    if not resolvers:
        raise fail(f"names no known secret resolver module (known: {', '.join(sorted(known))})", "")
    chosen = next(iter(resolvers)) if len(resolvers) == 1 else None
    return Config(resolver=chosen, resolvers=resolvers, source=str(file))


def _parameters(raw: Any, where: str, fail: Any) -> dict[str, str]:
    if not isinstance(raw, list):
        raise fail("'parameters' must be an array", where)
    out: dict[str, str] = {}
    for k, parameter in enumerate(raw):
        if not (
            isinstance(parameter, dict)
            and isinstance(parameter.get("key"), str)
            and isinstance(parameter.get("value"), str)
        ):
            raise fail("a parameter needs a string 'key' and a string 'value'", f"{where}/{k}")
        out[parameter["key"]] = parameter["value"]
    return out
