"""Reading Marathon specs: the structural checks of Marathon's JSON readers, and its errors.

Marathon answers a bad body in two shapes, both a :class:`SpecError` here: ``Invalid
JSON`` (structure: a missing field, a wrong type, reported with Play JSON's
``error.*`` codes) and ``Object is not valid`` (rules), each with ``details`` of
``{"path", "errors"}``. Array items are written ``volumes(0)``, as Marathon writes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import SecretValidationError, printable

__all__ = ["INVALID_JSON", "NOT_VALID", "SpecError", "SpecReader"]

INVALID_JSON = "Invalid JSON"
NOT_VALID = "Object is not valid"


class SpecError(SecretValidationError):
    """A spec Marathon would refuse: ``message`` is Marathon's, ``details`` its violations."""

    def __init__(self, message: str, details: Sequence[tuple[str, str]]) -> None:
        super().__init__(message, "", [(path or "/", text) for path, text in details])
        self.args = (printable(f"{message}: " + "; ".join(f"{p or '/'}: {m}" for p, m in details)),)

    def __str__(self) -> str:
        return str(self.args[0])

    def to_json(self) -> dict[str, Any]:
        """Marathon's error body: violations grouped by path, in order."""
        grouped: dict[str, list[str]] = {}
        for path, message in self.details:
            grouped.setdefault(path or "/", []).append(message)
        return {
            "message": self.message,
            "details": [{"path": p, "errors": errors} for p, errors in grouped.items()],
        }


class SpecReader:
    """Collects Marathon's structural errors (``error.*`` codes) while reading JSON."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, code: str) -> None:
        self.errors.append((path, code))

    def obj(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.fail(path, "error.expected.jsobject")
        return None

    def optional_obj(self, value: Any, path: str) -> Mapping[str, Any]:
        """``value`` as an object; absent (or not an object, reported) is empty."""
        if value is None:
            return {}
        return self.obj(value, path) or {}

    def objects(self, value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each object of the array ``value`` with its path (``path(i)``); an item that
        is not an object is reported and skipped."""
        for i, item in enumerate(self.array(value, path)):
            where = f"{path}({i})"
            if self.obj(item, where) is not None:
                yield where, item

    def array(self, value: Any, path: str, *, required: bool = False) -> list[Any]:
        """``value`` as a list; absent (or, if ``required``, missing) or not an array is []."""
        if value is None:
            if required:
                self.fail(path, "error.path.missing")
            return []
        if not isinstance(value, list):
            self.fail(path, "error.expected.jsarray")
            return []
        return value

    def string(
        self, parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        if key not in parent or parent[key] is None:
            if required:
                self.fail(f"{path}/{key}", "error.path.missing")
            return None
        value = parent[key]
        if not isinstance(value, str):
            self.fail(f"{path}/{key}", "error.expected.jsstring")
            return None
        return value

    def min1(
        self, parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = self.string(parent, key, path, required=required)
        if value == "":
            self.fail(f"{path}/{key}", "error.minLength")
            return None
        return value

    def number(self, parent: Mapping[str, Any], key: str, default: float, path: str = "") -> float:
        value = parent.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}/{key}", "error.expected.jsnumber")
            return default
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double: Marathon's numbers are doubles
            self.fail(f"{path}/{key}", "error.expected.jsnumber")
            return default

    def boolean(self, parent: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(f"{path}/{key}", "error.expected.jsboolean")
            return None
        return value
