"""``SecretBytes``: the only type that holds a secret value in this library.

A plain ``__slots__`` class on purpose, not an attrs class: attrs validators format
``value!r`` into their messages and ``attrs.asdict`` recurses into attrs fields, and
either would hand the value to whoever prints the result. Here ``repr``, ``str`` and
``format`` are masked, equality is constant-time, and pickling, JSON and implicit
``bytes()`` conversion are refused, so the value leaves only through :meth:`reveal`.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["SecretBytes"]

_MASK = "SecretBytes(<redacted>)"


class SecretBytes:
    """Secret bytes that never show themselves by accident.

    >>> s = SecretBytes(b"hunter2")
    >>> s
    SecretBytes(<redacted>)
    >>> f"password={s}"
    'password=SecretBytes(<redacted>)'
    >>> s.reveal()
    b'hunter2'
    """

    __slots__ = ("_data",)

    _data: bytes

    def __init__(self, data: bytes | bytearray | memoryview | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, bytearray | memoryview):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError(f"SecretBytes holds bytes or str, not {type(data).__name__}")
        object.__setattr__(self, "_data", data)

    def reveal(self) -> bytes:
        """Return the secret value. Every use of a secret goes through here."""
        return self._data

    def reveal_text(self, encoding: str = "utf-8") -> str:
        """Return the value decoded as text; a decoding error does not echo the bytes."""
        try:
            return self._data.decode(encoding)
        except UnicodeDecodeError:
            raise ValueError(f"secret value is not valid {encoding} text") from None

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBytes):
            import hmac  # noqa: PLC0415 (it loads OpenSSL's hashlib: 2.5 ms of every start)

            return hmac.compare_digest(self._data, other._data)
        return NotImplemented

    # Hashing a secret would expose a digest of it to every dict and set it meets.
    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("SecretBytes is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("SecretBytes is immutable")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled: secrets are never serialized")

    def __copy__(self) -> SecretBytes:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretBytes:
        return self
