"""Secret names and keys, as every resolver and front end reads them.

A reference name is a path (``/myapp/db``); ``myapp/db`` means the same. Marathon's
``source`` may be ``path`` or ``path@key``. These rules are checked here once, so a
name that one resolver accepts is not refused by another.
"""

from __future__ import annotations

import re

from .errors import SecretValidationError

__all__ = ["normalize_key", "normalize_name", "split_source"]

_COMPONENT = re.compile(r"[A-Za-z0-9_.+=,~:-]+")
_KEY = re.compile(r"[A-Za-z0-9_.+=,~:-]+")


def normalize_name(name: str) -> str:
    """The canonical form of a secret name: ``/a/b``.

    Refuses empty names, empty components (``a//b``), ``.`` and ``..`` components, and
    characters outside ``A-Z a-z 0-9 _ . + = , ~ : -`` (no spaces, NUL, ``@``, which
    separates the key in Marathon's ``path@key``).
    """
    if not isinstance(name, str):
        raise SecretValidationError(f"secret name must be a string, not {type(name).__name__}")
    path = name[1:] if name.startswith("/") else name
    if not path:
        raise SecretValidationError("secret name must not be empty")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise SecretValidationError(f"secret name {name!r} has an empty, '.' or '..' component")
        if not _COMPONENT.fullmatch(part):
            raise SecretValidationError(
                f"secret name {name!r} may contain only letters, digits, '/' and _ . + = , ~ : -"
            )
    return "/" + path


def agent_name(name: str) -> str:
    """A reference's name as the node agent keeps and names it: ``db/x`` and ``/db/x/``
    are ``/db/x`` (never refused: a name the agent has spoken of is compared with it)."""
    return "/" + name.strip("/")


def normalize_key(key: str) -> str:
    """Check a key (a field of a secret) and return it unchanged."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SecretValidationError(
            f"secret key {key!r} must be non-empty and contain only letters, digits "
            "and _ . + = , ~ : -"
        )
    return key


def split_source(source: str) -> tuple[str, str | None]:
    """Split Marathon's ``path@key`` at its last ``@``; ``path`` alone has no key."""
    name, sep, key = source.rpartition("@")
    if not sep:
        return source, None
    return name, key
