"""Docker registry credentials from a secret: ``config.json`` or a legacy ``.dockercfg``.

Read as Mesos reads them (``reference/mesos.md`` §7, ``spec::parseAuthConfig``):

- ``{"auths": {REGISTRY: ENTRY, …}, …}``: only ``auths`` is used (``HttpHeaders``,
  ``credsStore``… are ignored); a non-object ``auths`` is an error;
- ``{REGISTRY: ENTRY, …}`` (no ``auths``): every member is an entry.

An entry gives credentials as ``auth`` (base64 ``user:password``) or, unlike Mesos,
``username`` and ``password``. Registry keys are reduced to ``host[:port]``
(``https://registry.example.com/v1/`` → ``registry.example.com``), and Docker Hub's
names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``) are one registry.

The content is a secret: no error message quotes any of it, and passwords are held as
:class:`SecretBytes`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from ._codec import loads
from .errors import ProvisionerError, SecretValidationError
from .secretbytes import SecretBytes

__all__ = ["DOCKER_HUB", "DockerConfig", "RegistryAuth", "parse_auth_url", "parse_docker_config"]

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@attrs.frozen
class RegistryAuth:
    """A user name and password for one registry; the password never shows."""

    username: str
    password: SecretBytes = attrs.field(repr=False)


@attrs.frozen
class DockerConfig:
    """The credentials of a Docker config, by canonical registry ``host[:port]``."""

    auths: Mapping[str, RegistryAuth] = attrs.field(factory=dict, repr=False)

    def credentials_for(self, registry: str) -> RegistryAuth | None:
        """The credentials for ``registry`` (``host[:port]``), Docker Hub's aliases included."""
        return self.auths.get(canonical_registry(registry))

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(sorted(self.auths))


def canonical_registry(name: str) -> str:
    host = parse_auth_url(name).lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def parse_auth_url(url: str) -> str:
    """Mesos' ``parseAuthUrl``: drop ``http(s)://``, keep what comes before the first ``/``."""
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
            break
    return url.split("/", 1)[0]


def parse_docker_config(data: SecretBytes, *, source: str = "the pull secret") -> DockerConfig:
    """Parse a resolved pull secret. Errors say where, never what the secret holds."""

    def fail(reason: str) -> ProvisionerError:
        return ProvisionerError(f"Failed to parse docker config ({source}): {reason}")

    try:
        document = loads(data.reveal(), "it")
    except SecretValidationError as error:  # without its path: registry names are content
        raise fail(error.message) from None
    if not isinstance(document, dict):
        raise fail("expected a JSON object")
    if "auths" in document:
        entries = document["auths"]
        if not isinstance(entries, dict):
            raise fail("Failed to find 'auths' in docker config file: 'auths' is not an object")
        for ignored in ("credsStore", "credHelpers"):
            if ignored in document:
                log.warning("%s: '%s' is not supported and is ignored", source, ignored)
    else:
        entries = document
    auths: dict[str, RegistryAuth] = {}
    for number, (registry, entry) in enumerate(entries.items(), start=1):
        auth = _entry(f"registry entry #{number}", entry, fail)
        if auth is not None:
            auths[canonical_registry(registry)] = auth
    return DockerConfig(auths=auths)


def _entry(where: str, entry: Any, fail: Any) -> RegistryAuth | None:
    # Entries are named by position: even a registry name is the secret's content.
    if not isinstance(entry, dict):
        raise fail(f"Invalid JSON object for {where}: expected an object")
    auth = entry.get("auth")
    if auth is not None and auth != "":
        if not isinstance(auth, str):
            raise fail(f"{where}: 'auth' must be a string")
        try:
            decoded = base64.b64decode(auth, validate=True)
        except (binascii.Error, ValueError):
            raise fail(f"{where}: 'auth' is not valid base64") from None
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise fail(f"{where}: 'auth' does not decode to user:password")
        try:
            user_name = user.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{where}: the user name in 'auth' is not UTF-8") from None
        _check_user(user_name, f"{where}: the user name in 'auth'", fail)
        return RegistryAuth(user_name, SecretBytes(password))
    name, secret = entry.get("username"), entry.get("password")
    if name is None and secret is None:
        return None  # an entry with only an email, or an identity token: nothing to use
    if not isinstance(name, str) or not isinstance(secret, str):
        raise fail(f"{where}: 'username' and 'password' must both be strings")
    _check_user(name, f"{where}: 'username'", fail)
    # The reader refused lone surrogates: every string encodes.
    return RegistryAuth(name, SecretBytes(secret.encode("utf-8")))


def _check_user(name: str, what: str, fail: Any) -> None:
    """A user name HTTP Basic authentication can carry (RFC 7617: no ':', no control
    characters)."""
    if ":" in name:
        raise fail(f"{what} must not contain ':'")
    if not name.isprintable():
        raise fail(f"{what} must not contain control characters")
