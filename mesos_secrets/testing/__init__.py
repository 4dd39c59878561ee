"""Test helpers for resolver authors: a contract suite and canary values.

Every resolver, built-in or third-party, should pass :class:`ResolverContract`::

    from mesos_secrets.testing import ResolverContract

    class TestMyResolver(ResolverContract):
        @pytest.fixture
        def resolver(self):
            with MyResolver(...) as r:
                yield r

        def store(self, resolver, name, fields):
            my_backend_put(name, fields)   # fields: dict[str, bytes]

A resolver that cannot hold references (like Mesos' default) subclasses
:class:`ValueOnlyResolverContract` instead. This module needs pytest, which is a test
dependency, not a run-time one.
"""

from __future__ import annotations

import logging
import secrets
import string

import pytest

from mesos_secrets.errors import MesosSecretsError, ResolverError, SecretNotFoundError
from mesos_secrets.resolver import ResolveContext, SecretResolver
from mesos_secrets.secret import Secret
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["ResolverContract", "ValueOnlyResolverContract", "canary", "leaks"]

_ALPHABET = string.ascii_letters + string.digits


def canary(length: int = 24) -> str:
    """A random value that cannot occur by chance, to look for in outputs."""
    return "CANARY" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def leaks(value: str | bytes, *texts: str | bytes) -> bool:
    """Whether ``value`` (or its UTF-8 text) appears in any of ``texts``."""
    needle = value.encode() if isinstance(value, str) else value
    for text in texts:
        haystack = text.encode("utf-8", "replace") if isinstance(text, str) else text
        if needle in haystack:
            return True
    return False


class _CommonContract:
    """What every resolver does, whether or not it holds references."""

    @pytest.fixture
    def resolver(self) -> SecretResolver:
        raise NotImplementedError("provide a `resolver` fixture")

    # --- VALUE secrets, which every resolver answers in process ---

    def test_value_secret_resolves_to_its_data(self, resolver: SecretResolver) -> None:
        """An inline VALUE secret resolves to its own bytes, binary-safe."""
        data = bytes(range(256))
        assert resolver.resolve(Secret.for_value(data)).reveal() == data

    def test_value_secret_with_context(self, resolver: SecretResolver) -> None:
        """A context does not change how a VALUE secret resolves."""
        context = ResolveContext(framework_id="f", task_id="t", principal="p")
        assert resolver.resolve(Secret.for_value(b"v"), context).reveal() == b"v"

    def test_resolve_returns_secret_bytes(self, resolver: SecretResolver) -> None:
        """Values come back wrapped, so printing them by mistake shows nothing."""
        assert isinstance(resolver.resolve(Secret.for_value(b"x")), SecretBytes)

    def test_resolve_refuses_what_is_not_a_secret(self, resolver: SecretResolver) -> None:
        """Passing a dict or a name instead of a Secret is a TypeError."""
        with pytest.raises(TypeError):
            resolver.resolve({"type": "VALUE"})  # type: ignore[arg-type]

    def test_check_passes(self, resolver: SecretResolver) -> None:
        """A working resolver's start-up check succeeds."""
        resolver.check()

    def test_close_is_idempotent(self, resolver: SecretResolver) -> None:
        """close() may be called twice."""
        resolver.close()
        resolver.close()


class ValueOnlyResolverContract(_CommonContract):
    """The contract of a resolver that resolves VALUE secrets only."""

    def test_references_are_refused(self, resolver: SecretResolver) -> None:
        """References are refused with a ResolverError naming them."""
        with pytest.raises(ResolverError) as caught:
            resolver.resolve(Secret.for_reference("/some/secret", "k"))
        assert "/some/secret" in str(caught.value)


class ResolverContract(_CommonContract):
    """The contract of a resolver backed by a store; see the module docstring."""

    def store(self, resolver: SecretResolver, name: str, fields: dict[str, bytes]) -> None:
        """Put a secret with these fields into the resolver's backend."""
        raise NotImplementedError("implement store() to put secrets into your backend")

    def name(self) -> str:
        """A fresh secret name, so that tests never see each other's secrets."""
        return f"/contract/{secrets.token_hex(6)}/secret"

    def test_reference_with_key(self, resolver: SecretResolver) -> None:
        """``key`` picks one field of a secret that has several."""
        name = self.name()
        self.store(resolver, name, {"username": b"app", "password": b"pw\x00\xff"})
        assert resolver.resolve(Secret.for_reference(name, "password")).reveal() == b"pw\x00\xff"
        assert resolver.resolve(Secret.for_reference(name, "username")).reveal() == b"app"

    def test_reference_without_key_to_single_field(self, resolver: SecretResolver) -> None:
        """Without a key, a secret with exactly one field yields that field."""
        name = self.name()
        self.store(resolver, name, {"only": b"value"})
        assert resolver.resolve(Secret.for_reference(name)).reveal() == b"value"

    def test_reference_without_key_to_several_fields(self, resolver: SecretResolver) -> None:
        """Without a key, a secret with several fields is an error listing their names."""
        name = self.name()
        value = canary()
        self.store(resolver, name, {"a": value.encode(), "b": b"x"})
        with pytest.raises(ResolverError) as caught:
            resolver.resolve(Secret.for_reference(name))
        assert "a, b" in str(caught.value)
        assert name in str(caught.value)
        assert not leaks(value, str(caught.value))

    def test_missing_secret(self, resolver: SecretResolver) -> None:
        """A reference to nothing is SecretNotFoundError naming the reference."""
        name = self.name()
        with pytest.raises(SecretNotFoundError) as caught:
            resolver.resolve(Secret.for_reference(name))
        assert name in str(caught.value)
        assert caught.value.reference is not None

    def test_missing_key(self, resolver: SecretResolver) -> None:
        """A key the secret lacks is SecretNotFoundError naming key and secret, not values."""
        name = self.name()
        value = canary()
        self.store(resolver, name, {"present": value.encode()})
        with pytest.raises(SecretNotFoundError) as caught:
            resolver.resolve(Secret.for_reference(name, "absent"))
        assert "absent" in str(caught.value)
        assert name in str(caught.value)
        assert not leaks(value, str(caught.value), repr(caught.value))

    def test_no_value_in_logs(
        self, resolver: SecretResolver, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Resolving, successfully or not, logs nothing of the value, at any level."""
        caplog.set_level(logging.DEBUG)
        name = self.name()
        value = canary()
        self.store(resolver, name, {"k": value.encode()})
        resolved = resolver.resolve(Secret.for_reference(name, "k"))
        with pytest.raises(MesosSecretsError):
            resolver.resolve(Secret.for_reference(name, "nope"))
        assert resolved.reveal() == value.encode()
        assert not leaks(value, caplog.text, repr(resolved), str(resolved), repr(resolver))
