"""Mesos v1 JSON <-> attrs models, driven by the models' type annotations.

The mapping follows what Mesos itself reads and writes (``JSON::protobuf`` and
``protobuf::parse`` in stout): field names as in ``mesos.proto``, enums by name,
``bytes`` as base64, repeated fields as arrays, ``{"value": ...}`` for ID messages.
Every error is a :class:`SecretValidationError` with the JSON pointer of the bad
field and never quotes the input, which may hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import functools
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import attrs

from .errors import SecretValidationError
from .secretbytes import SecretBytes

__all__ = ["MAX_DEPTH", "JSONModel", "frozen_mapping", "id_field", "loads", "pointer", "required"]

T = TypeVar("T", bound="JSONModel")

_ID = "mesos_id"  # field metadata: the field is an ID message, {"value": "..."} in JSON
_REQUIRED = "json_required"  # field metadata: required in JSON although Python has a default


def id_field(**kwargs: Any) -> Any:
    """An attrs field holding an ID message (``TaskID``, ``FrameworkID``…) as a plain str."""
    return attrs.field(metadata={_ID: True}, **kwargs)


def required(default: Any) -> Any:
    """A field Python may default but Mesos' proto marks ``required``."""
    return attrs.field(default=default, metadata={_REQUIRED: True})


#: How deep objects and arrays may nest: Mesos' own JSON parser (picojson) stops at 100.
MAX_DEPTH = 100
#: The longest integer literal read (Python's own limit for converting text to int).
MAX_DIGITS = 4300
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """A literal the JSON reader refuses; carries the reason, never the text."""


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object in which a key appeared twice (the reader reports it with its path)."""

    key = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    duplicated = _Duplicated(value)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            duplicated.key = key
            break
        seen.add(key)
    return duplicated


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused("a number is too large for a double")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def pointer(path: str, key: str | int) -> str:
    """``path`` extended by one JSON pointer step (``~`` and ``/`` escaped, RFC 6901)."""
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _check_tree(document: Any) -> None:
    """Depth, duplicate keys and lone surrogates, with the JSON pointer of the first."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise SecretValidationError(
                    "Invalid JSON: a string holds an unpaired UTF-16 surrogate", path or "/"
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_DEPTH:  # named by its top-level member: the full path is long
            top = "/".join(path.split("/")[:2])
            raise SecretValidationError(f"Invalid JSON: nested deeper than {MAX_DEPTH} levels", top)
        if isinstance(value, _Duplicated):
            raise SecretValidationError(
                "Invalid JSON: a key appears more than once in this object",
                pointer(path, value.key),
            )
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                here = pointer(path, key)
                if _SURROGATE.search(key):
                    raise SecretValidationError(
                        "Invalid JSON: a key holds an unpaired UTF-16 surrogate", here
                    )
                stack.append((item, here, depth + 1))
        else:
            stack.extend(
                (item, f"{path}/{i}", depth + 1) for i, item in reversed(list(enumerate(value)))
            )


def loads(text: str | bytes, what: str = "JSON") -> Any:
    """Parse JSON text as strictly as Mesos does, and no more deeply.

    Refused, each as a :class:`SecretValidationError` naming where (a line and column,
    or a JSON pointer) and never quoting the content: malformed text, text that is not
    UTF-8, ``NaN`` and ``Infinity``, numbers beyond a double or of more than
    :data:`MAX_DIGITS` digits, nesting deeper than :data:`MAX_DEPTH`, a key given twice
    in one object (which would silently drop the first), and unpaired surrogates (which
    no UTF-8 text, and so no protobuf string, can hold).
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretValidationError(f"Invalid JSON: {what} is not UTF-8 text") from None
    text = text.removeprefix("\ufeff")  # a byte order mark, which Marathon's reader skips
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except json.JSONDecodeError as error:
        raise SecretValidationError(
            f"Invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise SecretValidationError(
            f"Invalid JSON: nested deeper than {MAX_DEPTH} levels"
        ) from None
    except _Refused as error:
        raise SecretValidationError(f"Invalid JSON: {error}") from None
    _check_tree(document)
    return document


def _json_type_name(value: Any) -> str:  # noqa: PLR0911
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    # No class namespace: a field named ``type`` must not shadow the builtin.
    return typing.get_type_hints(cls, localns={})


class JSONModel:
    """Mixin for attrs models that read and write Mesos v1 JSON.

    Subclasses may keep fields the model does not know in an ``extra`` mapping, so a
    ``TaskInfo`` read from a scheduler goes back out with its resources intact, and
    may override :meth:`_field_error` to word a child's error the way Mesos does.
    """

    __slots__ = ()

    _keeps_extra: ClassVar[bool] = False

    @classmethod
    def from_json(cls: type[T], obj: Any) -> T:
        """Build from Mesos v1 JSON: a decoded object, or JSON text. Either is held to
        :func:`loads`' limits (depth, lone surrogates): the executor reads a LAUNCH's
        task from what its driver decoded, as deep as the stack allows."""
        if isinstance(obj, str | bytes):
            obj = loads(obj)
        else:
            _check_tree(obj)
        return typing.cast(T, _decode_model(cls, obj, ""))

    def to_json(self) -> dict[str, Any]:
        """Mesos v1 JSON, as a dict ready for ``json.dumps``; secret values as base64."""
        return _encode_model(self)

    @classmethod
    def _field_error(
        cls, field: str, raw: Mapping[str, Any], error: SecretValidationError
    ) -> SecretValidationError:
        return error


def _decode_model(cls: Any, obj: Any, path: str) -> Any:
    if not isinstance(obj, dict):
        raise SecretValidationError(f"expected an object, got {_json_type_name(obj)}", path)
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    known = set()
    for field in attrs.fields(cls):
        name = field.name
        if name == "extra" and cls._keeps_extra:
            continue
        known.add(name)
        raw = obj.get(name)
        if raw is None:
            if field.default is attrs.NOTHING or field.metadata.get(_REQUIRED):
                raise SecretValidationError(f"missing required field '{name}'", path)
            continue
        try:
            if field.metadata.get(_ID):
                kwargs[name] = _decode_id(raw, f"{path}/{name}")
            else:
                kwargs[name] = _decode_value(hints[name], raw, f"{path}/{name}")
        except SecretValidationError as error:
            raise cls._field_error(name, obj, error) from None
    if cls._keeps_extra:
        kwargs["extra"] = copy.deepcopy({k: v for k, v in obj.items() if k not in known})
    try:
        return cls(**kwargs)
    except SecretValidationError as error:
        raise error.at(path) from None


def _decode_id(raw: Any, path: str) -> str:
    if not isinstance(raw, dict):
        raise SecretValidationError(f"expected an object, got {_json_type_name(raw)}", path)
    value = raw.get("value")
    if not isinstance(value, str):
        raise SecretValidationError("expected a string", f"{path}/value")
    return value


def _decode_value(tp: Any, raw: Any, path: str) -> Any:  # noqa: PLR0911, PLR0912
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return _decode_value(inner, raw, path)
    if origin is tuple:
        if not isinstance(raw, list):
            raise SecretValidationError(f"expected an array, got {_json_type_name(raw)}", path)
        item = typing.get_args(tp)[0]
        return tuple(_decode_value(item, value, f"{path}/{i}") for i, value in enumerate(raw))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(raw, dict):
            raise SecretValidationError(f"expected an object, got {_json_type_name(raw)}", path)
        return types.MappingProxyType(copy.deepcopy(raw))
    if tp is SecretBytes:
        if not isinstance(raw, str):
            raise SecretValidationError(
                f"expected a base64 string, got {_json_type_name(raw)}", path
            )
        try:
            return SecretBytes(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError):
            raise SecretValidationError("is not valid base64", path) from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _decode_enum(tp, raw, path)
    if tp is bool:
        if not isinstance(raw, bool):
            raise SecretValidationError(f"expected a boolean, got {_json_type_name(raw)}", path)
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise SecretValidationError(f"expected an integer, got {_json_type_name(raw)}", path)
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise SecretValidationError(f"expected a number, got {_json_type_name(raw)}", path)
        try:
            return float(raw)
        except OverflowError:
            raise SecretValidationError("is too large for a double", path) from None
    if tp is str:
        if not isinstance(raw, str):
            raise SecretValidationError(f"expected a string, got {_json_type_name(raw)}", path)
        return raw
    if attrs.has(tp):
        return _decode_model(tp, raw, path)
    raise TypeError(f"no JSON mapping for {tp!r}")  # a bug in a model, not bad input


def _decode_enum(tp: type[enum.Enum], raw: Any, path: str) -> enum.Enum:
    if isinstance(raw, str) and raw in tp.__members__:
        return tp[raw]
    # The input is not quoted: a secret pasted into the wrong field stays unseen.
    names = ", ".join(member.name for member in tp)
    if isinstance(raw, str):
        raise SecretValidationError(f"is not one of {names}", path)
    raise SecretValidationError(f"expected one of {names}, got {_json_type_name(raw)}", path)


def _encode_model(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(model)):
        value = getattr(model, field.name)
        if field.name == "extra" and getattr(model, "_keeps_extra", False):
            out.update(copy.deepcopy(dict(value)))
            continue
        if value is None or value == ():
            continue
        if isinstance(value, bool) and value == field.default:
            continue
        out[field.name] = {"value": value} if field.metadata.get(_ID) else _encode_value(value)
    return out


def _encode_value(value: Any) -> Any:
    if isinstance(value, SecretBytes):
        return base64.b64encode(value.reveal()).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return [_encode_value(item) for item in value]
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    if attrs.has(type(value)):
        return _encode_model(value)
    return value


def frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """attrs converter: an immutable copy of a JSON mapping."""
    return types.MappingProxyType(copy.deepcopy(dict(value or {})))
