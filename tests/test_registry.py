"""Choosing and configuring resolvers: entry points, register(), config files, manifests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import (
    ConfigError,
    PluginError,
    Reference,
    ResolveContext,
    ResolverError,
    Secret,
    SecretBytes,
    SecretResolver,
    get_resolver,
    register_resolver,
)
from mesos_secrets.config import load_config
from mesos_secrets.registry import resolvers
from mesos_secrets.testing import ValueOnlyResolverContract
from resolvers.local import LocalResolver
from resolvers.value import ValueResolver

from .plugins import install_entry_point


class Recording(SecretResolver):
    """A resolver that records what it was asked and built with."""

    def __init__(self, greeting: str = "hi", retries: int = 1, verify: bool = True) -> None:
        self.greeting = greeting
        self.retries = retries
        self.verify = verify
        self.asked: list[tuple[Reference, ResolveContext | None]] = []

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        self.asked.append((reference, context))
        return SecretBytes(f"{self.greeting}:{reference.name}")


@pytest.fixture
def recording() -> Iterator[type[Recording]]:
    register_resolver("recording", Recording)
    yield Recording
    resolvers.unregister("recording")


class TestValueResolver(ValueOnlyResolverContract):
    """Mesos' DefaultSecretResolver: VALUE only."""

    @pytest.fixture
    def resolver(self) -> SecretResolver:
        return ValueResolver()

    def test_mesos_message(self) -> None:
        """References fail with Mesos' own words."""
        with pytest.raises(
            ResolverError, match="Default secret resolver cannot resolve references"
        ):
            ValueResolver().resolve(Secret.for_reference("/x"))


class TestEntryPoints:
    def test_builtins_are_entry_points(self) -> None:
        """The built-ins register through the same group as any plugin."""
        group = {e.name: e.value for e in metadata.entry_points(group="mesos_secrets.resolvers")}
        assert group["local"] == "resolvers.local:LocalResolver"
        assert group["value"] == "resolvers.value:ValueResolver"

    def test_names(self) -> None:
        """names() lists what is known without importing it."""
        assert {"local", "value"} <= set(resolvers.names())

    def test_unknown_name_lists_known(self) -> None:
        """An unknown resolver is an error listing the known ones."""
        with pytest.raises(PluginError, match=r"unknown resolver 'nope' \(known: .*local.*value"):
            get_resolver("nope")

    def test_broken_plugin_fails_loudly(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A configured plugin that cannot be imported is an error, not a silent fallback."""
        install_entry_point(tmp_path / "site", "broken", "broken", "no_such_module:Thing")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        with pytest.raises(
            PluginError, match="'broken' failed to load from 'no_such_module:Thing'"
        ):
            get_resolver("broken")
        # The other plugins are unaffected.
        assert isinstance(get_resolver("value"), ValueResolver)

    def test_plugin_of_wrong_kind(self) -> None:
        """Only SecretResolver subclasses can be registered."""
        with pytest.raises(
            PluginError, match="not a subclass of mesos_secrets.resolver.SecretResolver"
        ):
            register_resolver("bad", dict)  # type: ignore[arg-type]

    def test_register_refuses_to_shadow(self) -> None:
        """register() will not silently replace a built-in."""
        with pytest.raises(PluginError, match="'local' is already registered"):
            register_resolver("local", Recording)


class TestSelection:
    """Explicit name > MESOS_SECRETS_RESOLVER > config file > local."""

    def write_config(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    def test_default_is_local(self, home: Path) -> None:
        assert isinstance(get_resolver(), LocalResolver)

    def test_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: type[Recording]
    ) -> None:
        """The config file names the resolver and its options."""
        config = self.write_config(
            tmp_path, 'resolver = "recording"\n[resolvers.recording]\ngreeting = "hello"\n'
        )
        monkeypatch.setenv("MESOS_SECRETS_CONFIG", str(config))
        resolver = get_resolver()
        assert isinstance(resolver, Recording)
        assert resolver.greeting == "hello"

    def test_environment_beats_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: type[Recording]
    ) -> None:
        """MESOS_SECRETS_RESOLVER overrides the config file's choice, keeping its options."""
        config = self.write_config(
            tmp_path, 'resolver = "value"\n[resolvers.recording]\ngreeting = "hello"\n'
        )
        monkeypatch.setenv("MESOS_SECRETS_CONFIG", str(config))
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "recording")
        resolver = get_resolver()
        assert isinstance(resolver, Recording)
        assert resolver.greeting == "hello"

    def test_explicit_beats_environment(
        self, monkeypatch: pytest.MonkeyPatch, recording: type[Recording]
    ) -> None:
        """An explicit name wins; explicit options override configured ones."""
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "value")
        resolver = get_resolver("recording", greeting="yo")
        assert isinstance(resolver, Recording)
        assert resolver.greeting == "yo"

    def test_explicit_config_path(self, tmp_path: Path, recording: type[Recording]) -> None:
        """A config path can be passed directly."""
        config = self.write_config(tmp_path, 'resolver = "recording"\n')
        assert isinstance(get_resolver(config=config), Recording)

    def test_options_are_converted(self, recording: type[Recording]) -> None:
        """Text options become the annotated types."""
        resolver = get_resolver("recording", retries="5", verify="false")
        assert isinstance(resolver, Recording)
        assert (resolver.retries, resolver.verify) == (5, False)

    def test_bad_option_value(self, recording: type[Recording]) -> None:
        """A text option that does not convert is a ConfigError naming it."""
        with pytest.raises(
            ConfigError, match="option 'retries' of resolver 'recording' must be int"
        ):
            get_resolver("recording", retries="many")

    def test_unknown_option(self, recording: type[Recording]) -> None:
        """An unknown option is an error listing the known ones."""
        with pytest.raises(
            ConfigError, match=r"unknown option 'colour' .* \(known: greeting, retries, verify\)"
        ):
            get_resolver("recording", colour="red")

    def test_value_secrets_never_reach_the_backend(self, recording: type[Recording]) -> None:
        """VALUE secrets resolve in process; the plugin sees only references."""
        resolver = get_resolver("recording")
        assert isinstance(resolver, Recording)
        assert resolver.resolve(Secret.for_value(b"inline")).reveal() == b"inline"
        context = ResolveContext(task_id="t1")
        assert resolver.resolve(Secret.for_reference("/r"), context).reveal() == b"hi:/r"
        assert resolver.asked == [(Reference("/r"), context)]


class TestConfigFiles:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read configuration file .*No such file"):
            load_config(tmp_path / "absent.toml")

    def test_bad_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "c.toml"
        path.write_text("resolver = \n")
        with pytest.raises(ConfigError, match="is not valid TOML"):
            load_config(path)

    def test_unknown_setting(self, tmp_path: Path) -> None:
        """A typo in a setting is caught, not ignored."""
        path = tmp_path / "c.toml"
        path.write_text('resolvr = "local"\n')
        with pytest.raises(ConfigError, match="unknown setting 'resolvr'"):
            load_config(path)

    def test_resolvers_must_be_tables(self, tmp_path: Path) -> None:
        path = tmp_path / "c.toml"
        path.write_text('resolvers = "local"\n')
        with pytest.raises(ConfigError, match=r"as \[resolvers.NAME\]"):
            load_config(path)


class TestModulesManifest:
    """A Mesos --modules JSON manifest, as an agent would be given."""

    def manifest(self, tmp_path: Path, doc: Any) -> Path:
        path = tmp_path / "modules.json"
        path.write_text(json.dumps(doc))
        return path

    def test_parameters_become_options(self, tmp_path: Path) -> None:
        """The one resolver module is chosen; its parameters are its options."""
        path = self.manifest(
            tmp_path,
            {
                "libraries": [
                    {
                        "file": "/usr/lib/libisolators.so",
                        "modules": [{"name": "org_apache_mesos_X"}],
                    },
                    {
                        "name": "mesos_secrets",
                        "modules": [
                            {
                                "name": "local",
                                "parameters": [
                                    {"key": "home", "value": str(tmp_path / "s")},
                                    {"key": "max_versions", "value": "4"},
                                ],
                            }
                        ],
                    },
                ]
            },
        )
        resolver = get_resolver(config=path)
        assert isinstance(resolver, LocalResolver)
        assert resolver.store.home == tmp_path / "s"
        assert resolver.store.max_versions == 4

    def test_environment_picks_among_several(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With several resolver modules, MESOS_SECRETS_RESOLVER picks (like --secret_resolver)."""
        path = self.manifest(
            tmp_path,
            {"libraries": [{"name": "x", "modules": [{"name": "local"}, {"name": "value"}]}]},
        )
        monkeypatch.setenv("MESOS_SECRETS_CONFIG", str(path))
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "value")
        assert isinstance(get_resolver(), ValueResolver)

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            (
                {"libraries": [{"modules": [{"name": "local"}]}]},
                "Library name or path not provided",
            ),
            (
                {"libraries": [{"file": "/l.so", "modules": [{}]}]},
                "Error: module name not provided with library '/l.so'",
            ),
            (
                {
                    "libraries": [
                        {
                            "name": "l",
                            "modules": [{"name": "local", "parameters": [{"key": "home"}]}],
                        }
                    ]
                },
                "a parameter needs a string 'key' and a string 'value'",
            ),
            (
                {"libraries": [{"name": "l", "modules": [{"name": "org_apache_mesos_Other"}]}]},
                "names no known secret resolver module",
            ),
            (
                {
                    "libraries": [
                        {"name": "a", "modules": [{"name": "local"}]},
                        {
                            "name": "b",
                            "modules": [
                                {"name": "local", "parameters": [{"key": "home", "value": "/x"}]}
                            ],
                        },
                    ]
                },
                "duplicate module names",
            ),
        ],
    )
    def test_errors(self, tmp_path: Path, doc: Any, message: str) -> None:
        """Malformed manifests get Mesos' messages, with the JSON path."""
        with pytest.raises(ConfigError, match=message):
            get_resolver(config=self.manifest(tmp_path, doc))

    def test_invalid_json(self, tmp_path: Path) -> None:
        path = tmp_path / "modules.json"
        path.write_text('{"libraries": [')
        with pytest.raises(ConfigError, match="modules.json': Invalid JSON"):
            load_config(path)
