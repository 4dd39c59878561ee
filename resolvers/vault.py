"""``vault``: secrets from HashiCorp Vault or OpenBao, through hvac.

A reference name is a path in the KV mount (``mount``, default ``secret``):
``/myapp/db`` reads ``secret/myapp/db`` (KV v2 or v1, detected from the mount or set
with ``kv_version``), and ``key`` picks one field. Names whose first segment is one of
``logical_mounts`` (say ``database``) are read as plain logical paths instead
(``/database/creds/readonly``), for dynamic secrets; their leases are renewed while the
resolver lives and revoked when it closes.

Authentication, first match wins:

- ``token`` (or ``VAULT_TOKEN`` when no other method is configured);
- ``wrapped_token``: a one-time bootstrap, a response-wrapped token (use count 1, short
  TTL). Its wrapping is looked up first — the token must have been made by
  ``wrapped_token_path`` (default ``auth/token/create``) — then it is unwrapped exactly
  once and forgotten. A second unwrap (a replay) fails with a clear error;
- ``role_id`` with ``secret_id`` or ``wrapped_secret_id``: AppRole.

Tokens obtained by logging in are renewed in the background before they expire and
revoked on :meth:`close`; a token given by the operator is renewed but never revoked.

Under load and faults: one connection pool per resolver; an in-memory cache
(``cache_ttl`` seconds, default 5; values only as :class:`SecretBytes`) with request
coalescing, so concurrent requests for one secret make one read; bounded, jittered
retries for connection errors, 429, 5xx and a sealed or standby store, none for 4xx.
Errors name the reference and the store address (its userinfo masked), never a
response body.

Each resolution has one budget, ``deadline`` seconds (default 10), shared by the login,
the mount lookup, the read and their retries; :meth:`check`, :meth:`close` and each
call of the background renewer get one of their own. Every socket operation gets what
is left of it: the connect and read timeouts (the TLS handshake included) are capped by
it, and each read of a response is given only the time left, so a server that trickles
its answer a byte at a time is cut off at the deadline too. The name lookup is waited for
no longer than the time left (it cannot be interrupted: one that outlives the budget ends
on its own, in a thread of its own), and when the name has several addresses each gets an
equal share of what is left. ``timeout`` (default 5) caps a single request further.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import random
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
import urllib3
from hvac import exceptions as vault_errors

from mesos_secrets.audit import note
from mesos_secrets.errors import (
    ConfigError,
    ResolverError,
    ResolverUnavailableError,
    SecretAccessDeniedError,
    SecretNotFoundError,
    masked_uri,
    printable,
)
from mesos_secrets.resolver import ResolveContext, SecretResolver, select_field
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes

from .vault_http import BudgetAdapter, Response, Session, budget, proxied, time_left

__all__ = ["VaultResolver"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Retried: the store may answer later. Everything else (400, 401, 403, 404…) is final.
_RETRYABLE = (
    vault_errors.RateLimitExceeded,  # 429 (also a standby without forwarding)
    vault_errors.InternalServerError,  # 500
    vault_errors.BadGateway,  # 502
    vault_errors.VaultDown,  # 503: sealed
    vault_errors.VaultNotInitialized,  # 501
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 2.0
#: Less than this left of a budget: no further attempt is started.
_MIN_ATTEMPT_S = 0.05
#: The renewer's retries after a failure: jittered, doubling from the first to the most.
_RENEW_RETRY_FIRST_S = 1.0
_RENEW_RETRY_MAX_S = 30.0
#: When the renewer first looks up a token whose TTL it was not told (the operator's).
_FIRST_LOOKUP_AFTER_S = 2.0


def _retry_in(failures: int) -> float:
    """Seconds before the renewer tries again after ``failures`` failures in a row."""
    pause = min(_RENEW_RETRY_MAX_S, _RENEW_RETRY_FIRST_S * 2 ** min(failures - 1, 10))
    return random.uniform(pause / 2, pause)  # noqa: S311 (jitter, not crypto)


# --- configuration -------------------------------------------------------------------


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _setting(value: str | None, option: str, *names: str) -> tuple[str | None, str]:
    """An option, else the first of the environment variables ``names`` that is set;
    with where it came from, for messages."""
    if value:
        return str(value), f"option '{option}'"  # a Path, from Python callers
    for name in names:
        found = os.environ.get(name)
        if found:
            return found, name
    return None, f"option '{option}'"


def _shown(url: urllib3.util.Url) -> str:
    """An accepted address as it may be printed, from the parse requests connects by:
    userinfo masked, the host and port it connects to."""
    port = f":{url.port}" if url.port is not None else ""
    userinfo = "***@" if url.auth is not None else ""
    return printable(f"{url.scheme}://{userinfo}{url.host}{port}{url.path or ''}")


def _parse_address(address: str, source: str) -> urllib3.util.Url:
    """The address as requests reads it (urllib3's ``parse_url``): what is connected to
    and what messages show come from this one parse. Refused: what hvac and requests
    would fail on later, and what parsers read differently (an '@' after the host, a
    backslash), for a message could then name one host while requests connects to
    another."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"resolver 'vault': {source} '{masked_uri(address)}' {reason}")

    if any(c.isspace() or not c.isprintable() for c in address):
        raise bad("contains a control character or a space")
    if "\\" in address:
        raise bad("contains a backslash (URL parsers read it differently)")
    try:
        url = urllib3.util.parse_url(address)
    except urllib3.exceptions.LocationParseError:
        try:
            urllib.parse.urlsplit(address).port  # noqa: B018 (only its error matters)
        except ValueError as error:
            if "port" in str(error).lower():
                raise bad("has a bad port (a number from 1 to 65535)") from None
        raise bad("is not a URL") from None
    if (url.scheme or "").lower() not in ("http", "https"):
        raise bad("must start with https:// or http://")
    if not url.host:
        raise bad("has no host")
    if url.port == 0:
        raise bad("has a bad port (a number from 1 to 65535)")
    if url.query is not None or url.fragment is not None:
        raise bad("must not have a query or a fragment")
    if "@" in (url.path or ""):
        raise bad("has an '@' after its host (write it as %40, in a password too)")
    # What the standard library reads must agree: the host and port are the same.
    try:
        split = urllib.parse.urlsplit(address)
        same = (split.hostname, split.port) == (url.host.strip("[]").lower(), url.port)
    except ValueError:
        same = False
    if not same:
        raise bad("is ambiguous: URL parsers read different hosts in it")
    return url


def _check_file(path: str, source: str) -> None:
    """A file the TLS settings name must be a readable regular file."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"resolver 'vault': {source} names '{printable(path)}', which {reason}")

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise bad("does not exist") from None
    except OSError as error:
        raise bad(f"cannot be used ({error.strerror})") from None
    except ValueError:
        raise bad("is not a valid path") from None
    if stat.S_ISDIR(mode):
        raise bad("is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise bad("is not a regular file")
    if not os.access(path, os.R_OK):
        raise bad("cannot be read (permission denied)")


def _ssl_reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or type(error).__name__)


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    """OpenSSL asks for a passphrase: refuse rather than prompt on a terminal."""
    raise _EncryptedKeyError


def _check_tls_files(
    cacert: tuple[str | None, str],
    client_cert: tuple[str | None, str],
    client_key: tuple[str | None, str],
) -> None:
    """Load the CA and the client certificate and key once, at start-up: a missing or
    bad file is a one-line error now, not a traceback (or a passphrase prompt) later."""
    for path, source in (cacert, client_cert, client_key):
        if path:
            _check_file(path, source)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cacert[0]:
        try:
            context.load_verify_locations(cafile=cacert[0])
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                f"resolver 'vault': {cacert[1]} names '{printable(cacert[0])}', which holds "
                f"no PEM certificate ({_ssl_reason(error)})"
            ) from None
    if client_cert[0] and client_key[0]:
        try:
            context.load_cert_chain(client_cert[0], client_key[0], password=_no_passphrase)
        except _EncryptedKeyError:
            raise ConfigError(
                f"resolver 'vault': {client_key[1]} names '{printable(client_key[0])}', "
                "which is encrypted (give the key unencrypted)"
            ) from None
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                f"resolver 'vault': {client_cert[1]} '{printable(client_cert[0])}' and "
                f"{client_key[1]} '{printable(client_key[0])}' are not a PEM certificate "
                f"and its key ({_ssl_reason(error)})"
            ) from None


def _positive(value: float, option: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"option '{option}' of resolver 'vault' must be a positive number")
    return number


def _field_bytes(value: Any) -> SecretBytes:
    """KV values are JSON: strings as their UTF-8, anything else as compact JSON."""
    if isinstance(value, str):
        return SecretBytes(value)
    return SecretBytes(json.dumps(value, separators=(",", ":"), sort_keys=True))


# --- answers: every field used is checked, and a bad one is named, never quoted --------

#: Longer than any TTL a store gives (ten years): a bigger one is not a number of seconds.
_MAX_SECONDS = 10 * 365 * 86400.0


class _Malformed(Exception):
    """An answer of the store is not shaped as its API documents. ``reason`` says what is
    wrong and where in the answer, never what it holds (an answer may carry a value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _MalformedAnswerError(ResolverError):
    """A :class:`ResolverError` for an answer that could not be read: it is not mapped
    further (to a denial, say) by those who catch ResolverError."""


def _problem(error: BaseException) -> str:
    """What was wrong with an answer that hvac, requests or a check below failed on."""
    if isinstance(error, _Malformed):
        return error.reason
    if isinstance(error, RecursionError):
        return "the answer is nested too deeply to read"
    if isinstance(error, requests.exceptions.JSONDecodeError):
        return "the answer is not JSON"
    return f"the answer could not be read ({type(error).__name__})"


def _why(error: BaseException) -> str:
    """For a log line: the type of the store's or the connection's error, else what was
    wrong with the answer."""
    if isinstance(error, vault_errors.VaultError | requests.RequestException) and not isinstance(
        error, requests.exceptions.JSONDecodeError
    ):
        return type(error).__name__
    return _problem(error)


def _body(answer: Any) -> dict[str, Any]:
    """A JSON object answer; hvac gives back the response itself when a 200's body is not
    JSON it can parse (a number too long for Python, say)."""
    if isinstance(answer, requests.Response | Response):
        raise _Malformed(
            "the answer is not JSON" if answer.status_code == 200 else "the answer has no body"
        )
    if not isinstance(answer, dict):
        raise _Malformed("the answer is not a JSON object")
    return answer


def _object(parent: Mapping[str, Any], path: str, *, required: bool = True) -> dict[str, Any]:
    """The object at ``path`` (dotted, for messages; its last part is read from
    ``parent``); ``{}`` when it is absent or null and not ``required``."""
    value = parent.get(path.rpartition(".")[2])
    if value is None and not required:
        return {}
    if value is None:
        raise _Malformed(f"the answer has no '{path}' object")
    if not isinstance(value, dict):
        raise _Malformed(f"the answer's '{path}' is not a JSON object")
    return value


def _seconds(parent: Mapping[str, Any], path: str) -> float:
    """A duration in seconds (0 when absent): a number from 0 to ten years."""
    value = parent.get(path.rpartition(".")[2])
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"the answer's '{path}' is not a number")
    if not 0 <= value <= _MAX_SECONDS:  # NaN too
        raise _Malformed(f"the answer's '{path}' is not a number of seconds from 0 to 10 years")
    return float(value)


def _string(parent: Mapping[str, Any], path: str, *, required: bool = False) -> str:
    """A string (``""`` when absent and not ``required``)."""
    value = parent.get(path.rpartition(".")[2])
    if value is None and not required:
        return ""
    if value is None or (value == "" and required):
        raise _Malformed(f"the answer has no '{path}'")
    if not isinstance(value, str):
        raise _Malformed(f"the answer's '{path}' is not a string")
    return value


def _flag(parent: Mapping[str, Any], path: str) -> bool:
    """A boolean (False when absent)."""
    value = parent.get(path.rpartition(".")[2])
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _Malformed(f"the answer's '{path}' is not true or false")
    return value


def _token_info(answer: Any) -> tuple[float, bool]:
    """lookup-self: the token's TTL and whether it is renewable."""
    data = _object(_body(answer), "data")
    return _seconds(data, "data.ttl"), _flag(data, "data.renewable")


def _auth_info(answer: Any, *, token: bool = True) -> tuple[str, float]:
    """A login, an unwrapped token or a renewal: the token (``token``) and its TTL."""
    auth = _object(_body(answer), "auth")
    client_token = _string(auth, "auth.client_token", required=True) if token else ""
    return client_token, _seconds(auth, "auth.lease_duration")


def _lease_duration(answer: Any) -> float:
    return _seconds(_body(answer), "lease_duration")


def _creation_path(answer: Any) -> str:
    """sys/wrapping/lookup: the path whose response the token wraps."""
    return _string(_object(_body(answer), "data"), "data.creation_path")


def _secret_id(answer: Any) -> str:
    """An unwrapped AppRole secret id."""
    return _string(_object(_body(answer), "data"), "data.secret_id", required=True)


def _mount(answer: Any) -> tuple[str, int] | None:
    """sys/internal/ui/mounts/<mount>: the engine's type and, for KV, its version (None:
    no answer to tell from)."""
    if answer is None:
        return None
    data = _object(_body(answer), "data")
    engine = _string(data, "data.type", required=True)
    version = _object(data, "data.options", required=False).get("version")
    if version is None:
        return engine, 1
    if isinstance(version, str) and version in ("1", "2"):
        return engine, int(version)
    if isinstance(version, int) and not isinstance(version, bool) and version in (1, 2):
        return engine, version
    if engine not in ("kv", "generic"):
        return engine, 0  # not KV: its options are not ours to judge
    raise _Malformed("the answer's 'data.options.version' is not 1 or 2")


def _fields(data: Mapping[str, Any]) -> dict[str, SecretBytes]:
    return {str(k): _field_bytes(v) for k, v in data.items()}


def _kv2_fields(answer: Any) -> dict[str, SecretBytes]:
    data = _object(_body(answer), "data")
    metadata = data.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("version"), int):
        note(version=metadata["version"])  # the node agent's inventory shows it
    return _fields(_object(data, "data.data"))


def _kv1_fields(answer: Any) -> dict[str, SecretBytes]:
    body = _body(answer)
    ttl = _seconds(body, "lease_duration")
    if ttl:  # a KV version 1 secret's "ttl": how often its readers should read it again
        note(lease_seconds=ttl)
    return _fields(_object(body, "data"))


#: resolve_all's reads at once by default, to a store on this machine and elsewhere.
_LOOPBACK_READS = 2
_REMOTE_READS = 8


def _endpoint(url: str) -> str:
    """``HOST:PORT`` of ``url`` (its scheme's port when it names none)."""
    parsed = urllib3.util.parse_url(url)
    host = (parsed.host or "").strip("[]")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (a loopback address or ``localhost``)."""
    host = (urllib3.util.parse_url(url).host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: KV versions of mounts by (address, namespace, mount), found once per process: a
#: mount's version does not change under a running resolver.
_KV_VERSIONS: dict[tuple[str, str | None, str], int] = {}
_KV_LOOKUPS: dict[tuple[str, str | None, str], threading.Lock] = {}
_KV_LOCK = threading.Lock()


class _Cache:
    """Fields of secrets by path, for ``ttl`` seconds, with request coalescing."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, dict[str, SecretBytes]]] = {}
        self._inflight: dict[tuple[str, str], Future[dict[str, SecretBytes]]] = {}
        self._lock = threading.Lock()

    def get(
        self, key: tuple[str, str], load: Callable[[], dict[str, SecretBytes]]
    ) -> tuple[dict[str, SecretBytes], bool]:
        """The fields for ``key`` and whether they came without a store read of our own.

        Waiting for another caller's read lasts no longer than the budget under way
        (:class:`TimeoutError` when it is spent).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > time.monotonic():
                return entry[1], True
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = self._inflight[key] = Future()
        if not leader:
            left = time_left()
            return future.result(timeout=None if left is None else max(left, 0.0)), True
        try:
            fields = load()
        except BaseException as error:
            future.set_exception(error)
            raise
        else:
            future.set_result(fields)
            if self.ttl > 0:
                with self._lock:
                    self._entries[key] = (time.monotonic() + self.ttl, fields)
            return fields, False
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def fresh(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` would be answered from the cache now."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] > time.monotonic()

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class VaultResolver(SecretResolver):
    """Resolves references from Vault or OpenBao. Thread-safe."""

    name = "vault"

    def __init__(  # noqa: PLR0915 (one place reads every option)
        self,
        *,
        address: str | None = None,
        token: str | None = None,
        wrapped_token: str | None = None,
        wrapped_token_path: str = "auth/token/create",  # noqa: S107 (a path, not a token)
        role_id: str | None = None,
        secret_id: str | None = None,
        wrapped_secret_id: str | None = None,
        approle_mount: str = "approle",
        mount: str = "secret",
        kv_version: int | None = None,
        logical_mounts: str = "",
        namespace: str | None = None,
        cacert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        timeout: float = 5.0,
        cache_ttl: float = 5.0,
        deadline: float = 10.0,
        pool_size: int = 16,
        concurrency: int | None = None,
    ) -> None:
        url, source = _setting(address, "address", "VAULT_ADDR", "BAO_ADDR")
        url = (url or "").rstrip("/")
        if not url:
            raise ConfigError("resolver 'vault' needs an address: set 'address' or VAULT_ADDR")
        #: The store's address as printed (userinfo masked), from the same parse requests
        #: connects by; the real one is kept private.
        self.address = _shown(_parse_address(url, source))
        self._url = url
        if kv_version not in (None, 1, 2):
            raise ConfigError("option 'kv_version' of resolver 'vault' must be 1 or 2")
        self.mount = mount.strip("/")
        self.kv_version = kv_version
        self.logical_mounts = frozenset(
            m.strip("/") for m in logical_mounts.split(",") if m.strip()
        )
        self.wrapped_token_path = wrapped_token_path.strip("/")
        self.approle_mount = approle_mount.strip("/")
        self.timeout = _positive(timeout, "timeout")
        self.deadline = _positive(deadline, "deadline")
        self._cache = _Cache(float(cache_ttl))

        explicit = [
            method
            for method, given in (
                ("token", token),
                ("wrapped_token", wrapped_token),
                ("role_id", role_id),
            )
            if given
        ]
        if len(explicit) > 1:
            raise ConfigError(
                f"resolver 'vault' takes one way to authenticate, not {' and '.join(explicit)}"
            )
        if role_id and not (secret_id or wrapped_secret_id):
            raise ConfigError(
                "resolver 'vault': 'role_id' needs 'secret_id' or 'wrapped_secret_id'"
            )
        if not explicit:
            token = _env("VAULT_TOKEN", "BAO_TOKEN")
            if not token:
                raise ConfigError(
                    "resolver 'vault' has no credentials: set 'token' (or VAULT_TOKEN), "
                    "'wrapped_token', or 'role_id' with 'secret_id'"
                )
        # Credentials are kept out of __dict__'s obvious names and never logged.
        self._token = token
        self._wrapped_token = wrapped_token
        self._approle = (role_id, secret_id, wrapped_secret_id) if role_id else None
        self._owns_token = not token  # obtained by a login: ours to revoke

        cacert_setting = _setting(cacert, "cacert", "VAULT_CACERT", "BAO_CACERT")
        cert_setting = _setting(client_cert, "client_cert", "VAULT_CLIENT_CERT", "BAO_CLIENT_CERT")
        key_setting = _setting(client_key, "client_key", "VAULT_CLIENT_KEY", "BAO_CLIENT_KEY")
        cacert, client_cert, client_key = cacert_setting[0], cert_setting[0], key_setting[0]
        if bool(client_cert) != bool(client_key):
            raise ConfigError("resolver 'vault': 'client_cert' and 'client_key' go together")
        _check_tls_files(cacert_setting, cert_setting, key_setting)
        self.cacert = cacert
        self._verify: str | bool = cacert if cacert else True
        self._cert = (client_cert, client_key) if client_cert and client_key else None
        self._private = (Path(client_key),) if client_key else ()
        self._namespace = namespace or _env("VAULT_NAMESPACE", "BAO_NAMESPACE")
        # hvac prefers the session's settings to its own arguments: set them there.
        session: Session | requests.Session
        if proxied(url):  # as requests applies the environment's proxies
            session = requests.Session()
            session.verify = self._verify
            session.cert = self._cert
            adapter = BudgetAdapter(pool_connections=1, pool_maxsize=int(pool_size), max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        else:
            session = Session(verify=self._verify, cert=self._cert, pool_size=int(pool_size))
        self._session = session
        if concurrency is not None and not 1 <= concurrency <= int(pool_size):
            raise ConfigError(
                "option 'concurrency' of resolver 'vault' must be from 1 to 'pool_size'"
            )
        #: Reads at once in resolve_all: on loopback a read costs CPU, not waiting, and
        #: this machine's cores are shared with the store; elsewhere the network's
        #: latency dominates and reads in parallel pay.
        self.concurrency = concurrency or (
            _LOOPBACK_READS if _loopback(self._url) else _REMOTE_READS
        )
        self.client = hvac.Client(
            url=self._url,
            token=token,
            verify=self._verify,
            cert=self._cert,
            timeout=self.timeout,
            namespace=self._namespace,
            session=session,
        )
        self._login_lock = threading.Lock()
        self._logged_in = bool(token)
        self._login_failed = False
        self._token_ttl: float | None = None
        self._token_looked_up = False  # by check(): the renewer need not
        self._leases: dict[str, tuple[float, bool]] = {}
        #: The leases of each logical path read (one per read), while they are held.
        self._lease_of: dict[str, list[str]] = {}
        self._leases_lock = threading.Lock()
        self._token_failures = 0  # the renewer's, in a row
        self._lease_failures: dict[str, int] = {}
        self._renewals = [0, 0]  # lease renewals made, failed
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<VaultResolver {self.address} mount={self.mount!r}>"

    # --- SecretResolver ---------------------------------------------------------------

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        fields = self._fields_of(reference)
        return select_field(reference, fields, resolver=self.name, where=self.address)

    def resolve_fields(
        self, name: str, context: ResolveContext | None = None
    ) -> dict[str, SecretBytes]:
        return self._fields_of(Reference(name))

    def _fields_of(self, reference: Reference) -> dict[str, SecretBytes]:
        path = reference.name.strip("/")
        if not path or "//" in path or ".." in path.split("/"):
            raise ResolverError(
                f"secret name '{reference.name}' is not a path in a Vault mount",
                reference=reference.name,
                key=reference.key,
                resolver=self.name,
            )
        note(cache_hit=False)
        key = self._cache_key(path)

        def load() -> dict[str, SecretBytes]:
            if key[0] == "logical":
                return self._read_logical(reference, path)
            return self._read_kv(reference, path)

        with budget(self.deadline):  # login, mount lookup and read: one deadline
            self._login(reference)
            try:
                fields, hit = self._cache.get(key, load)
            except TimeoutError:  # waiting for a read another caller has under way
                raise self._expired(reference, "read") from None
        note(cache_hit=hit)
        return fields

    def answers_at_once(self, reference: Reference) -> bool:
        return self._logged_in and self._cache.fresh(self._cache_key(reference.name.strip("/")))

    def _cache_key(self, path: str) -> tuple[str, str]:
        logical = path.split("/", 1)[0] in self.logical_mounts
        return ("logical" if logical else f"kv:{self.mount}", path)

    def private_paths(self) -> tuple[Path, ...]:
        return self._private

    def endpoints(self) -> tuple[str, ...]:
        return (_endpoint(self._url),)

    def check(self) -> None:
        """Log in (unwrapping a bootstrap token now) and look the token up, within one
        deadline; then renew it in the background (from what the lookup told: the renewer
        does not look it up a second time, nor fails on it while this does)."""
        with budget(self.deadline):
            self._login(None, renew=False)
            ttl, renewable = self._call(
                None, "look up its own token", self.client.auth.token.lookup_self, _token_info
            )
        with self._login_lock:
            if self._token_ttl is None:
                self._token_ttl = ttl if ttl and renewable else None
                self._token_looked_up = True
            if self._renewer is None and not self._closed:
                self._start_renewer()

    def close(self) -> None:
        """Stop renewing; revoke leases and, if we logged in, our token. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.timeout)
        self._cache.clear()
        with self._leases_lock:
            leases = list(self._leases)
            self._leases.clear()
            self._lease_of.clear()
        with budget(self.deadline):  # revocations: one deadline for them all
            self._revoke(leases)
        self._logged_in = False
        self.client.token = None
        self._session.close()

    def lease_renewals(self) -> tuple[int, int]:
        return self._renewals[0], self._renewals[1]

    def release(self, reference: Reference) -> bool:
        """Revoke the leases of a dynamic secret (a ``logical_mounts`` path: one per read
        of it) and forget its fields: the next read gets new ones. KV secrets have no
        lease: nothing to do."""
        path = reference.name.strip("/")
        key = self._cache_key(path)
        if key[0] != "logical":
            return False
        with self._leases_lock:
            leases = self._lease_of.pop(path, [])
            for lease in leases:
                self._leases.pop(lease, None)
        self._cache.forget(key)
        if not leases:
            return False
        with budget(self.deadline):
            self._revoke(leases, token=False)
        return True

    def _revoke(self, leases: list[str], *, token: bool = True) -> None:
        """Best effort: whatever the store answers (or fails to), closing goes on."""
        for lease in leases:
            try:
                self.client.sys.revoke_lease(lease_id=lease)
            except Exception as error:  # noqa: BLE001 (named by type: its text may quote)
                log.warning(
                    "could not revoke a lease at %s: %s", self.address, type(error).__name__
                )
        if token and self._owns_token and self._logged_in:
            try:
                self.client.auth.token.revoke_self()
            except Exception as error:  # noqa: BLE001 (named by type: its text may quote)
                log.warning(
                    "could not revoke the resolver's token at %s: %s",
                    self.address,
                    type(error).__name__,
                )

    # --- authentication ---------------------------------------------------------------

    def _login(self, reference: Reference | None, *, renew: bool = True) -> None:
        """Log in once (bootstrap token, AppRole) within the caller's budget; another
        caller's login under way is waited for within it too. Then (``renew``) start the
        renewer, if it is not running yet."""
        if self._closed:
            raise ResolverError(
                f"the vault resolver for {self.address} is closed", resolver=self.name
            )
        left = time_left()
        if not self._login_lock.acquire(timeout=-1 if left is None else max(left, 0.0)):
            raise self._expired(reference, "log in")
        try:
            if not self._logged_in:
                if self._login_failed:
                    target = f" for secret '{reference}'" if reference else ""
                    raise ResolverError(
                        f"cannot log in to {self.address}{target}: the login with one-time "
                        "credentials failed earlier, and they are spent",
                        **self._context(reference),
                    )
                try:
                    if self._wrapped_token is not None:
                        self._unwrap_bootstrap(reference)
                    elif self._approle is not None:
                        self._approle_login(reference)
                except BaseException:
                    self._login_failed = True
                    raise
                self._logged_in = True
            if renew and self._renewer is None:
                self._start_renewer()
        finally:
            self._login_lock.release()

    def _unwrap_bootstrap(self, reference: Reference | None) -> None:
        wrapped, self._wrapped_token = self._wrapped_token, None  # used once, whatever happens
        assert wrapped is not None
        creation_path = self._wrapping_creation_path(wrapped, "bootstrap token", reference)
        if not _path_matches(creation_path, self.wrapped_token_path):
            raise SecretAccessDeniedError(
                f"refusing the bootstrap token: it wraps a response of '{creation_path}', "
                f"not of '{self.wrapped_token_path}'",
                resolver=self.name,
            )
        token, ttl = self._unwrap(wrapped, "bootstrap token", reference, _auth_info)
        self.client.token = token
        self._token_ttl = ttl or None
        log.info("logged in to %s with a one-time bootstrap token", self.address)

    def _approle_login(self, reference: Reference | None) -> None:
        assert self._approle is not None
        role_id, secret_id, wrapped_secret_id = self._approle
        self._approle = None
        if wrapped_secret_id:
            path = self._wrapping_creation_path(wrapped_secret_id, "wrapped secret id", reference)
            expected = f"auth/{self.approle_mount}/role/"
            if not (path.startswith(expected) and path.endswith("/secret-id")):
                raise SecretAccessDeniedError(
                    f"refusing the wrapped secret id: it wraps a response of '{path}', "
                    f"not of {expected}<role>/secret-id",
                    resolver=self.name,
                )
            secret_id = self._unwrap(wrapped_secret_id, "wrapped secret id", reference, _secret_id)
        token, ttl = self._call(
            None,
            "log in with AppRole",
            lambda: self.client.auth.approle.login(  # the token is taken once checked
                role_id=role_id,
                secret_id=secret_id,
                mount_point=self.approle_mount,
                use_token=False,
            ),
            _auth_info,
            about=reference,
        )
        self.client.token = token
        self._token_ttl = ttl or None
        log.info("logged in to %s with AppRole", self.address)

    def _wrapping_creation_path(self, wrapped: str, what: str, reference: Reference | None) -> str:
        try:
            return self._call(
                None,
                f"look up the {what}",
                lambda: self.client.adapter.post(
                    "/v1/sys/wrapping/lookup", json={"token": wrapped}
                ),
                _creation_path,
                about=reference,
            )
        except (ResolverUnavailableError, _MalformedAnswerError):
            raise
        except ResolverError:
            raise SecretAccessDeniedError(
                f"the {what} is not valid at {self.address}: it has expired or was already "
                "unwrapped (a one-time token used twice is a replay)",
                resolver=self.name,
            ) from None

    def _unwrap(
        self, wrapped: str, what: str, reference: Reference | None, parse: Callable[[Any], T]
    ) -> T:
        unwrapper = hvac.Client(
            url=self._url,
            token=wrapped,
            verify=self._verify,
            cert=self._cert,
            timeout=self.timeout,
            namespace=self._namespace,
            session=self._session,
        )
        try:
            return self._call(
                None, f"unwrap the {what}", unwrapper.sys.unwrap, parse, about=reference
            )
        except (ResolverUnavailableError, _MalformedAnswerError):
            raise
        except ResolverError:
            raise SecretAccessDeniedError(
                f"the {what} could not be unwrapped at {self.address}: it has expired or was "
                "already unwrapped (a one-time token used twice is a replay)",
                resolver=self.name,
            ) from None

    def _start_renewer(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name="vault-renewer", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        """The renewer thread: :meth:`_renew_until_closed`, and nothing escapes it (a
        thread's traceback on stderr helps no one, and may quote an answer)."""
        try:
            self._renew_until_closed()
        except BaseException as error:  # noqa: BLE001 (the thread's last boundary)
            with contextlib.suppress(BaseException):
                log.error(
                    "the renewer for %s stopped: %s; the token is no longer renewed",
                    self.address,
                    type(error).__name__,
                )

    def _renew_until_closed(self) -> None:
        """Renew our token at 2/3 of its TTL, and leases likewise, until closed.

        A token whose TTL the login did not tell (the operator's) is looked up first,
        here rather than in a resolution, and only after the first reads are done
        (:data:`_FIRST_LOOKUP_AFTER_S`): a launch does not wait for it, and a front end
        that lives no longer than its launch does not ask at all. Each call to the
        store has a deadline of its own.
        A call that fails (the store down, an answer that cannot be read) is retried
        after a jittered backoff, doubling up to 30 s, and so is a round that fails in a
        way nothing foresaw: the renewer never gives up while the resolver is open.
        """
        looked_up = self._token_ttl is not None or self._token_looked_up
        token_due: float | None = (
            time.monotonic() + self._token_ttl * 2 / 3
            if self._token_ttl is not None
            else None
            if looked_up
            else time.monotonic() + _FIRST_LOOKUP_AFTER_S
        )
        failures = 0  # rounds in a row that failed unforeseen
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                with self._leases_lock:
                    due_leases = [
                        lease
                        for lease, (due, renewable) in self._leases.items()
                        if renewable and due <= now
                    ]
                if token_due is not None and token_due <= now:
                    if looked_up:
                        token_due = self._renew_token()
                    else:
                        looked_up, token_due = self._look_up_token()
                for lease in due_leases:
                    self._renew_lease(lease)
                with self._leases_lock:
                    dues = [due for due, renewable in self._leases.values() if renewable]
                dues += [token_due] if token_due is not None else []
                pause = max(0.05, min(dues) - time.monotonic()) if dues else 1.0
                failures = 0
            except Exception as error:  # noqa: BLE001 (named by type: its text may quote)
                failures += 1
                pause = _retry_in(failures)
                log.warning(
                    "the renewer for %s failed (%s); it goes on in %.1fs",
                    self.address,
                    type(error).__name__,
                    pause,
                )
            self._stop.wait(pause)

    def _token_retry(self) -> float:
        """When to try the token again after one more failure in a row."""
        self._token_failures += 1
        return time.monotonic() + _retry_in(self._token_failures)

    def _look_up_token(self) -> tuple[bool, float | None]:
        """Whether the lookup answered, and when the token is due for renewal (None: never)."""
        try:
            with budget(self.deadline):
                ttl, renewable = _token_info(self.client.auth.token.lookup_self())
        except _RETRYABLE as error:  # the store may answer later
            log.warning(
                "looking up the resolver's token at %s failed: %s",
                self.address,
                type(error).__name__,
            )
            return False, self._token_retry()
        except requests.exceptions.JSONDecodeError as error:
            return False, self._token_failed("looking up", error)
        except (vault_errors.VaultError, requests.RequestException) as error:
            log.info(
                "the resolver's token at %s cannot be looked up (%s): it is not renewed",
                self.address,
                type(error).__name__,
            )
            return True, None
        except Exception as error:  # noqa: BLE001 (an answer that could not be read)
            return False, self._token_failed("looking up", error)
        self._token_failures = 0
        if not (ttl and renewable):
            return True, None
        self._token_ttl = ttl
        return True, time.monotonic() + ttl * 2 / 3

    def _token_failed(self, doing: str, error: Exception) -> float:
        """Log a failure with the token (what was wrong, never the answer); when to retry."""
        due = self._token_retry()
        log.warning(
            "%s the resolver's token at %s failed: %s",
            doing,
            self.address,
            _why(error),
        )
        return due

    def _renew_token(self) -> float | None:
        try:
            with budget(self.deadline):
                _, ttl = _auth_info(self.client.auth.token.renew_self(), token=False)
        except Exception as error:  # noqa: BLE001 (the store's errors, or an unreadable answer)
            return self._token_failed("renewing", error)
        self._token_failures = 0
        log.debug("renewed the resolver's token at %s for %.0fs", self.address, ttl)
        return time.monotonic() + ttl * 2 / 3 if ttl else None

    def _renew_lease(self, lease: str) -> None:
        try:
            with budget(self.deadline):
                duration = _lease_duration(self.client.sys.renew_lease(lease_id=lease))
        except Exception as error:  # noqa: BLE001 (the store's errors, or an unreadable answer)
            self._renewals[1] += 1
            failures = self._lease_failures.get(lease, 0) + 1
            self._lease_failures[lease] = failures
            pause = _retry_in(failures)
            log.warning(
                "renewing a lease at %s failed: %s",
                self.address,
                _why(error),
            )
            with self._leases_lock:
                if lease in self._leases:
                    self._leases[lease] = (time.monotonic() + pause, True)
            return
        self._renewals[0] += 1
        self._lease_failures.pop(lease, None)
        with self._leases_lock:
            if lease in self._leases:
                self._leases[lease] = (time.monotonic() + duration * 2 / 3, bool(duration))

    # --- reading ----------------------------------------------------------------------

    def _kv_version(self, reference: Reference) -> int:
        """The KV version of the mount: configured, or looked up once per process (the
        first caller looks, concurrent ones wait for its answer within their budget)."""
        if self.kv_version is not None:
            return self.kv_version
        key = (self._url, self._namespace, self.mount)
        known = _KV_VERSIONS.get(key)
        if known is not None:
            return known
        with _KV_LOCK:
            lock = _KV_LOOKUPS.setdefault(key, threading.Lock())
        left = time_left()
        if not lock.acquire(timeout=-1 if left is None else max(left, 0.0)):
            raise self._expired(reference, f"look up mount '{self.mount}'")
        try:
            known = _KV_VERSIONS.get(key)
            if known is None:
                known = _KV_VERSIONS[key] = self._look_up_kv_version(reference)
            return known
        finally:
            lock.release()

    def _look_up_kv_version(self, reference: Reference) -> int:
        def lookup() -> Any:
            try:
                return self.client.adapter.get(f"/v1/sys/internal/ui/mounts/{self.mount}")
            except (
                vault_errors.Forbidden,
                vault_errors.InvalidPath,
                vault_errors.InvalidRequest,
            ):
                return None  # not allowed to look, or no such mount

        mount = self._call(reference, f"look up mount '{self.mount}'", lookup, _mount)
        if mount is None:
            raise ResolverError(
                f"cannot tell the KV version of mount '{self.mount}' at {self.address}; "
                "set option 'kv_version' to 1 or 2",
                reference=reference.name,
                resolver=self.name,
            )
        engine, version = mount
        if engine not in ("kv", "generic"):
            raise ResolverError(
                f"mount '{self.mount}' at {self.address} is a '{printable(engine, 40)}' "
                "engine, not KV; list it in 'logical_mounts' to read its paths",
                reference=reference.name,
                resolver=self.name,
            )
        return version

    def _read_kv(self, reference: Reference, path: str) -> dict[str, SecretBytes]:
        if self._kv_version(reference) == 2:
            return self._call(
                reference,
                "read",
                lambda: self.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                ),
                _kv2_fields,
            )
        return self._call(
            reference,
            "read",
            lambda: self.client.secrets.kv.v1.read_secret(path=path, mount_point=self.mount),
            _kv1_fields,
        )

    def uncache(self, name: str) -> None:
        """The next read of ``name`` asks the store (the node agent refreshes it)."""
        self._cache.forget(self._cache_key(name.strip("/")))

    def _read_logical(self, reference: Reference, path: str) -> dict[str, SecretBytes]:
        def parse(
            answer: Any,
        ) -> tuple[dict[str, SecretBytes], tuple[str, float, bool]] | None:
            if isinstance(answer, requests.Response | Response) and answer.status_code == 204:
                return None  # nothing there
            body = _body(answer)
            fields = _fields(_object(body, "data", required=False))
            lease = (
                _string(body, "lease_id"),
                _seconds(body, "lease_duration"),
                _flag(body, "renewable"),
            )
            return fields, lease

        read = self._call(reference, "read", lambda: self.client.adapter.get(f"/v1/{path}"), parse)
        if read is None:
            raise self._not_found(reference)
        fields, (lease, duration, renewable) = read
        if lease:
            with self._leases_lock:
                self._leases[lease] = (time.monotonic() + duration * 2 / 3, renewable)
                self._lease_of.setdefault(path, []).append(lease)
            note(dynamic=True)  # each read makes new credentials: read again only as due
        if duration and not renewable:  # given for a while only: read again before its end
            note(lease_seconds=duration)
        return fields

    # --- calls: retries and error mapping ----------------------------------------------

    def _call(
        self,
        reference: Reference | None,
        what: str,
        call: Callable[[], Any],
        parse: Callable[[Any], T],
        *,
        about: Reference | None = None,
    ) -> T:
        """Run ``call`` with jittered retries within the budget under way (or one of its
        own) and read its answer with ``parse``; map every failure. ``about``: the
        reference a login is made for.

        Retries stop when the budget cannot fit another attempt; a request the deadline
        cut short ends in an error naming the reference and the deadline. An answer that
        is not what the API documents (or that hvac or requests fail on in any way of
        their own) is a :class:`ResolverError` naming what was wrong with it.
        """
        about = about or reference
        with budget(self.deadline) as deadline:
            backoff = _BACKOFF_START_S
            attempts = 0
            while True:
                attempts += 1
                try:
                    return parse(call())
                except requests.exceptions.SSLError as error:
                    if deadline - time.monotonic() < _MIN_ATTEMPT_S:
                        raise self._expired(about, what) from None
                    raise self._tls_error(about, error) from None
                except _RETRYABLE as error:
                    left = deadline - time.monotonic()
                    unanswered = isinstance(
                        error, requests.exceptions.Timeout | requests.exceptions.ConnectionError
                    )
                    if left < _MIN_ATTEMPT_S and unanswered:
                        raise self._expired(about, what) from None
                    pause = random.uniform(backoff / 2, backoff)  # noqa: S311 (jitter, not crypto)
                    if pause + _MIN_ATTEMPT_S > left:
                        raise self._map(reference, what, error, attempts, about) from None
                    log.debug("%s: %s, retrying in %.2fs", what, type(error).__name__, pause)
                    time.sleep(pause)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                except requests.exceptions.JSONDecodeError as error:
                    raise self._malformed(reference, what, error, about) from None
                except (vault_errors.VaultError, requests.RequestException) as error:
                    raise self._map(reference, what, error, attempts, about) from None
                except Exception as error:  # noqa: BLE001 (an answer hvac or we could not read)
                    raise self._malformed(reference, what, error, about) from None

    def _malformed(
        self,
        reference: Reference | None,
        what: str,
        error: Exception,
        about: Reference | None = None,
    ) -> ResolverError:
        """An answer that could not be read: what was wrong with it, never what it held."""
        about = reference or about
        if reference is not None and what == "read":
            action = f"read secret '{reference}' at {self.address}"
        else:
            target = f" for secret '{about}'" if about else ""
            action = f"{what} at {self.address}{target}"
        return _MalformedAnswerError(
            f"cannot {action}: {_problem(error)}",
            **self._context(reference or about),
        )

    def _expired(self, reference: Reference | None, what: str) -> ResolverUnavailableError:
        """The budget ran out while waiting for the store to ``what``."""
        limit = f"{self.deadline:g}s deadline"
        if reference is not None:
            message = (
                f"secret '{reference}' not resolved within the {limit} "
                f"(waiting on {self.address} to {what})"
            )
        else:
            message = f"could not {what} at {self.address} within the {limit}"
        return ResolverUnavailableError(message, **self._context(reference))

    def _context(self, reference: Reference | None) -> dict[str, Any]:
        return {
            "reference": reference.name if reference else None,
            "key": reference.key if reference else None,
            "resolver": self.name,
        }

    def _subject(self, reference: Reference | None, what: str) -> str:
        return f"secret '{reference}'" if reference else what

    def _not_found(self, reference: Reference) -> SecretNotFoundError:
        return SecretNotFoundError(
            f"secret '{reference.name}' not found at {self.address} (mount '{self.mount}')"
            if reference.name.strip("/").split("/", 1)[0] not in self.logical_mounts
            else f"secret '{reference.name}' not found at {self.address}",
            **self._context(reference),
        )

    def _tls_error(self, reference: Reference | None, error: Exception) -> ResolverError:
        reason = (
            "certificate verify failed"
            if "CERTIFICATE_VERIFY_FAILED" in str(error)
            else "TLS error"
        )
        return ResolverError(
            f"cannot reach {self.address} for {self._subject(reference, 'the resolver')}: "
            f"{reason} (check 'cacert' / VAULT_CACERT and the client certificate)",
            **self._context(reference),
        )

    def _map(  # noqa: PLR0911 (one table, one return per row)
        self,
        reference: Reference | None,
        what: str,
        error: Exception,
        attempts: int,
        about: Reference | None = None,
    ) -> ResolverError:
        """One table from hvac's and requests' errors to ours; no response body kept."""
        subject = self._subject(reference, what)
        action = f"read {subject}" if reference else what
        context = self._context(reference or about)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(error, vault_errors.InvalidPath) and reference is not None:
            return self._not_found(reference)
        if isinstance(error, vault_errors.Forbidden):
            return SecretAccessDeniedError(
                f"{self.address} denied access to {subject} "
                "(403: the token's policies do not allow it)",
                **context,
            )
        if isinstance(error, vault_errors.Unauthorized):
            return SecretAccessDeniedError(
                f"{self.address} refused the resolver's token for {subject} (401)", **context
            )
        if isinstance(error, vault_errors.VaultDown):
            return ResolverUnavailableError(
                f"{self.address} is sealed or unavailable (503){tries}: cannot {action}",
                **context,
            )
        if isinstance(error, requests.exceptions.Timeout):
            return ResolverUnavailableError(
                f"{self.address} did not answer in time{tries}: cannot {action}", **context
            )
        if isinstance(error, requests.exceptions.ConnectionError):
            return ResolverUnavailableError(
                f"cannot connect to {self.address}{tries}: cannot {action}", **context
            )
        if isinstance(error, _RETRYABLE):
            return ResolverUnavailableError(
                f"{self.address} failed ({type(error).__name__}){tries}: cannot {action}",
                **context,
            )
        target = f" {subject}" if reference else ""
        return ResolverError(
            f"{self.address} refused to {what}{target} ({type(error).__name__})", **context
        )


def _path_matches(path: str, expected: str) -> bool:
    return path == expected or path.startswith(expected + "/")
