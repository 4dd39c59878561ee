"""The library's exceptions: one tree, rooted at :class:`MesosSecretsError`.

Every message names *what* went wrong and *where* (a JSON path, a reference name, a
store path) and never carries a secret value, nor anything read back from a secret
store: a response body can echo a value, so backends' errors are mapped to these
classes with messages composed here.

::

    MesosSecretsError
    ├── SecretValidationError (ValueError)     bad Secret, spec or config; .path
    │   └── ConfigError                        bad configuration file or option
    ├── ResolverError                          .reference, .key, .resolver
    │   ├── SecretNotFoundError (LookupError)
    │   ├── SecretAccessDeniedError (PermissionError)
    │   ├── ResolverUnavailableError           worth retrying later
    │   └── StoreError                         the embedded store cannot be used
    ├── PluginError                            unknown resolver/isolator, failed load
    ├── IsolatorError                          .isolator, .container_id
    ├── LaunchError                            the task could not be started
    │   ├── LaunchCancelled                    killed before its process started
    │   └── FetchError                         a URI could not be fetched; .uri
    └── ProvisionerError                       registry, credentials, image format
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "FetchError",
    "IsolatorError",
    "LaunchCancelled",
    "LaunchError",
    "MesosSecretsError",
    "PluginError",
    "ProvisionerError",
    "ResolverError",
    "ResolverUnavailableError",
    "SecretAccessDeniedError",
    "SecretNotFoundError",
    "SecretValidationError",
    "StoreError",
    "masked_uri",
    "printable",
]


def _escape(character: str) -> str:
    if character.isprintable() or character == " ":
        return character
    code = ord(character)
    if code < 0x100:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(character, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int | None = None) -> str:
    """``text`` fit for one line of a log or a terminal: what does not print (a newline,
    an escape sequence, NUL, a bidirectional override, a lone surrogate) is written as
    Python writes it in a literal (``\\n``, ``\\x1b``, ``\\u202e``), so a name cannot
    forge a line, move the cursor or read differently than it is. With ``limit``, the
    text is cut to that many characters, marked with ``…``."""
    cut = text if limit is None else text[:limit]
    if not cut.isprintable():
        cut = "".join(map(_escape, cut))
    return cut if limit is None or len(text) <= limit else cut + "…"


def masked_uri(value: str, limit: int | None = None) -> str:
    """A URI or address as it may be printed: everything up to its last ``@`` masked, so
    neither a user and password nor a mistyped one (``http://u:12345/pw@host/…``, a
    password holding ``/``, ``?`` or ``#``) ever shows; no parse of it is trusted."""
    scheme, separator, rest = value.partition("://")
    if not separator:
        scheme, rest = "", value
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return printable(f"{scheme}{separator}{rest}", limit)


class MesosSecretsError(Exception):
    """Base class of every error this library raises on purpose."""


class SecretValidationError(MesosSecretsError, ValueError):
    """A Secret, a Mesos message, a spec or a configuration is not valid.

    ``message`` is the bare reason (Mesos' own wording where Mesos has one);
    ``path`` is where it was found, as a JSON pointer (``/command/environment/
    variables/0/secret``), empty when the object was built in Python.
    ``details`` holds every ``(path, message)`` pair when several were found.
    """

    def __init__(
        self,
        message: str,
        path: str = "",
        details: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.details: tuple[tuple[str, str], ...] = (
            tuple(details) if details is not None else ((path, message),)
        )
        super().__init__(printable(f"{path}: {message}" if path else message))

    def at(self, prefix: str) -> SecretValidationError:
        """The same error, located under ``prefix`` (a JSON pointer)."""
        error = type(self)(
            self.message,
            prefix + self.path,
            [(prefix + path, message) for path, message in self.details],
        )
        error.__cause__ = self.__cause__
        return error


class ConfigError(SecretValidationError):
    """A configuration file, a modules manifest or an option is not valid."""


class ResolverError(MesosSecretsError):
    """A secret could not be resolved.

    Carries the reference ``name`` and ``key`` and the ``resolver``'s name, never a
    value and never a backend's response body.
    """

    def __init__(
        self,
        message: str,
        *,
        reference: str | None = None,
        key: str | None = None,
        resolver: str | None = None,
    ) -> None:
        self.message = message
        self.reference = reference
        self.key = key
        self.resolver = resolver
        super().__init__(message)


class SecretNotFoundError(ResolverError, LookupError):
    """The reference names a secret, or a key of a secret, that does not exist."""


class SecretAccessDeniedError(ResolverError, PermissionError):
    """The store, or an ACL, refuses this caller access to the secret."""


class ResolverUnavailableError(ResolverError):
    """The store cannot answer now (down, sealed, overloaded); trying later may work."""


class StoreError(ResolverError):
    """The embedded store cannot be used: corrupted, wrong key file, tampered data."""


class PluginError(MesosSecretsError):
    """A resolver or isolator is unknown, or failed to load or to start."""


class IsolatorError(MesosSecretsError):
    """An isolator could not prepare, or clean up after, a container."""

    def __init__(
        self, message: str, *, isolator: str | None = None, container_id: str | None = None
    ) -> None:
        self.message = message
        self.isolator = isolator
        self.container_id = container_id
        super().__init__(message)


class LaunchError(MesosSecretsError):
    """The task could not be started (no command, unknown user, exec failure…)."""


class LaunchCancelled(LaunchError):
    """The task was killed before its process started; nothing of it was left."""


class FetchError(LaunchError):
    """A URI of the task's ``CommandInfo.uris`` could not be put into its sandbox.

    ``uri`` is the URI as it may be printed: a user and password in it are masked.
    """

    def __init__(self, message: str, *, uri: str | None = None) -> None:
        self.uri = uri
        super().__init__(printable(message))


class ProvisionerError(MesosSecretsError):
    """An image could not be provisioned: registry, credentials or image format."""
