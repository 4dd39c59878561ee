"""The ``Secret`` message of ``mesos.proto``: a reference to a secret store, or a value.

The wire format is Mesos' own (``include/mesos/v1/mesos.proto``)::

    {"type": "REFERENCE", "reference": {"name": "/myapp/db", "key": "password"}}
    {"type": "VALUE", "value": {"data": "aHVudGVyMg=="}}

Objects are validated when they are built, with Mesos' messages
(``src/common/validation.cpp``), plus one rule of ours: a ``Secret`` of type
``UNKNOWN`` is refused, where Mesos lets it through unchecked.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from ._codec import JSONModel
from .errors import SecretValidationError
from .secretbytes import SecretBytes

__all__ = ["Reference", "Secret", "SecretType", "Value", "check_text"]


class SecretType(enum.IntEnum):
    """``Secret.Type``. ``UNKNOWN`` (unset on the wire) is refused."""

    UNKNOWN = 0
    REFERENCE = 1
    VALUE = 2


def _check_instance(value: object, kind: type, what: str) -> None:
    """Type checks for callers without mypy; messages name the type, never the value."""
    if value is not None and not isinstance(value, kind):
        raise SecretValidationError(f"{what} must be a {kind.__qualname__}")


def check_text(value: str | None, path: str = "", what: str = "value") -> None:
    """Refuse NUL in a string that becomes a C string: a command, an argument, a user
    name, an environment value, a path or a store path. ``execve`` and ``getpwnam``
    cannot take one; the error names ``path``, never the value."""
    if value is not None and "\0" in value:
        raise SecretValidationError(f"{what} must not contain NUL", path)


def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise SecretValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise SecretValidationError(f"{what} must not be empty")
    check_text(value, what=what)


@attrs.frozen
class Reference(JSONModel):
    """``Secret.Reference``: a secret by ``name`` in a store, and one ``key`` of it.

    A name is a path such as ``/myapp/db``. ``key`` picks one field of a secret that
    holds several; without it, a secret with exactly one field yields that field.
    """

    name: str
    key: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_text(self.name, "Secret reference 'name'")
        if self.key is not None:
            _check_text(self.key, f"Secret '{self.name}' reference 'key'")

    def __str__(self) -> str:
        return self.name if self.key is None else f"{self.name}@{self.key}"


def _to_secret_bytes(data: SecretBytes | bytes | bytearray | memoryview | str) -> SecretBytes:
    return data if isinstance(data, SecretBytes) else SecretBytes(data)


@attrs.frozen
class Value(JSONModel):
    """``Secret.Value``: the secret bytes themselves, always held as :class:`SecretBytes`."""

    data: SecretBytes = attrs.field(converter=_to_secret_bytes)


# Module-level names for the nested aliases below, so that annotations inside
# ``Secret`` do not resolve to the ``Secret.Reference`` class variable.
_Reference = Reference
_Value = Value


@attrs.frozen
class Secret(JSONModel):
    """``mesos.Secret``: exactly one of ``reference`` (type REFERENCE) or ``value`` (VALUE).

    >>> Secret.for_reference("/myapp/db", key="password").to_json()
    {'type': 'REFERENCE', 'reference': {'name': '/myapp/db', 'key': 'password'}}
    """

    Type: ClassVar[type[SecretType]] = SecretType
    Reference: ClassVar[type[_Reference]] = _Reference
    Value: ClassVar[type[_Value]] = _Value

    type: SecretType = SecretType.UNKNOWN
    reference: _Reference | None = None
    value: _Value | None = None

    def __attrs_post_init__(self) -> None:
        _check_instance(self.type, SecretType, "Secret 'type'")
        _check_instance(self.reference, _Reference, "Secret 'reference'")
        _check_instance(self.value, _Value, "Secret 'value'")
        if self.type is SecretType.REFERENCE:
            if self.reference is None:
                raise SecretValidationError(
                    "Secret of type REFERENCE must have the 'reference' field set"
                )
            if self.value is not None:
                raise SecretValidationError(
                    f"Secret '{self.reference.name}' of type REFERENCE must not have "
                    "the 'value' field set"
                )
        elif self.type is SecretType.VALUE:
            if self.value is None:
                raise SecretValidationError("Secret of type VALUE must have the 'value' field set")
            if self.reference is not None:
                raise SecretValidationError(
                    "Secret of type VALUE must not have the 'reference' field set"
                )
        else:
            raise SecretValidationError(
                "Secret of type 'UNKNOWN' is not allowed: set 'type' to REFERENCE or VALUE"
            )

    @classmethod
    def for_reference(cls, name: str, key: str | None = None) -> Secret:
        """A REFERENCE secret: ``name`` in the store, optionally one ``key`` of it."""
        return cls(type=SecretType.REFERENCE, reference=_Reference(name, key))

    @classmethod
    def for_value(cls, data: SecretBytes | bytes | str) -> Secret:
        """A VALUE secret carrying ``data`` inline (``str`` is encoded as UTF-8)."""
        return cls(type=SecretType.VALUE, value=_Value(_to_secret_bytes(data)))

    @property
    def is_reference(self) -> bool:
        return self.type is SecretType.REFERENCE

    def describe(self) -> str:
        """How to name this secret in a message: its reference, never its value."""
        if self.reference is not None:
            return f"secret '{self.reference}'"
        return "an inline VALUE secret"
