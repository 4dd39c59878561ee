"""HTTP for the ``vault`` resolver: one budget per resolution, on every socket operation,
and a lean session for hvac to send through.

:func:`budget` sets a deadline for every request made inside it (a resolution's login,
mount lookup, read and retries share one). Connections made here give each socket
operation only what is left of it: the name lookup, each address's connect, the TLS
handshake and every read of a response.

:class:`Session` is what hvac sends its requests through when no proxy is configured:
urllib3's connection pool, driven directly. ``requests.Session`` does the same job with
much more work per request (it reads the proxy variables of the environment twice and
looks for ``~/.netrc`` on every one), which is most of a cold read's time on a fast
network. Its answers and errors are those hvac and the resolver expect from requests:
the same exception types, ``status_code``, ``headers``, ``text`` and ``json()``. With
proxy variables set, :class:`BudgetAdapter` under a ``requests.Session`` is used instead,
so proxies keep working as requests applies them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import http.client
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.poolmanager import pool_classes_by_scheme as _URLLIB3_POOL_CLASSES
from urllib3.util.timeout import _DEFAULT_TIMEOUT

__all__ = [
    "BudgetAdapter",
    "OutOfTime",
    "Response",
    "Session",
    "budget",
    "proxied",
    "time_left",
]


# --- the budget: one deadline per resolution, on every socket operation ----------------

#: When (``time.monotonic()``) the resolution under way in this context must be done.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "mesos_secrets_vault_deadline", default=None
)


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[float]:
    """A deadline ``seconds`` from now for every request made inside; inside another
    budget, the earlier deadline of the two (a resolution's steps share its budget)."""
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds left of the budget under way, or None outside any budget."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


class OutOfTime(requests.exceptions.Timeout):
    """The budget is spent: the request was not sent."""


class _DeadlineReader(io.RawIOBase):
    """A response's reads from its socket, each allowed only what is left of the budget.

    A socket timeout bounds one read, and a server that sends a byte now and then
    restarts it every time: here each read gets at most the time left, and none starts
    once it is spent. (TLS reads honour the socket timeout the same way.)
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # counts as a user of the socket
        self._timeout = sock.gettimeout()  # the request's read timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = time_left()
        if left is not None:
            if left <= 0:
                raise TimeoutError("the deadline has passed")
            self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):  # the connection may be reused: as it was
                self._sock.settimeout(self._timeout)
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What :class:`http.client.HTTPResponse` takes from its socket: ``makefile``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str) -> io.BufferedReader:
        assert mode == "rb"
        return io.BufferedReader(_DeadlineReader(self._sock))


class _DeadlineResponse(http.client.HTTPResponse):
    """A response whose status line, headers and body are all read within the budget."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(_DeadlineSocket(sock), *args, **kwargs)  # type: ignore[arg-type]


#: Name lookups under way in threads of their own (:func:`_resolve`), at most this many:
#: a lookup the budget gave up on goes on until the system's resolver ends it.
_LOOKUPS = threading.BoundedSemaphore(8)


def _resolve(host: str, port: int, family: int) -> list[Any]:
    """``getaddrinfo`` within the budget under way.

    An address given as digits is resolved here (no lookup). A name is looked up in a
    thread of its own, waited for no longer than the budget: ``getaddrinfo`` cannot be
    interrupted, so a lookup that outlives it is left to end on its own (the system
    resolver's timeouts, ``/etc/resolv.conf``), at most a few at a time.
    """
    try:
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name
    left = time_left()
    if left is None:
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    started = time.monotonic()
    if not _LOOKUPS.acquire(timeout=max(left, 0.0)):
        raise TimeoutError("no name lookup could start within the deadline")
    answer: Future[list[Any]] = Future()

    def look_up() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        except BaseException as error:  # noqa: BLE001 (handed to the waiting caller)
            answer.set_exception(error)
        finally:
            _LOOKUPS.release()

    threading.Thread(target=look_up, name="vault-getaddrinfo", daemon=True).start()
    try:
        return answer.result(timeout=max(left - (time.monotonic() - started), 0.0))
    except concurrent.futures.TimeoutError:
        raise TimeoutError("the name lookup did not end within the deadline") from None


def _create_connection(
    address: tuple[str, int],
    timeout: Any,
    source_address: tuple[str, int] | None,
    socket_options: Any,
) -> socket.socket:
    """:func:`urllib3.util.connection.create_connection`, within the budget under way.

    urllib3 gives every address the name has the whole connect timeout, one after the
    other: three addresses that never answer take three times the deadline. Here the
    name lookup counts against the budget too, and each address gets an equal share of
    what is left of it (what one refused at once is left to the next ones); a socket that
    connects then gets back the full connect timeout, capped at the time left, for its
    TLS handshake.
    """
    host, port = address
    host = host.strip("[]") if host.startswith("[") else host
    try:
        host.encode("idna")
    except UnicodeError:
        raise urllib3.exceptions.LocationParseError(f"'{host}', label empty or too long") from None
    if timeout is _DEFAULT_TIMEOUT:
        timeout = socket.getdefaulttimeout()
    infos = _resolve(host, port, urllib3.util.connection.allowed_gai_family())
    error: OSError | None = None
    for index, (family, kind, proto, _, peer) in enumerate(infos):
        left = time_left()
        attempt = timeout
        if left is not None:
            if left <= 0:
                raise TimeoutError("the deadline has passed")
            share = left / (len(infos) - index)
            attempt = share if timeout is None else min(timeout, share)
        sock = socket.socket(family, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(attempt)
            if source_address:
                sock.bind(source_address)
            sock.connect(peer)
        except OSError as failed:
            sock.close()
            error = failed
            continue
        left = time_left()
        sock.settimeout(timeout if left is None else _capped(timeout, max(left, 0.001)))
        return sock
    raise error if error is not None else OSError("getaddrinfo returns an empty list")


def _new_conn(conn: urllib3.connection.HTTPConnection) -> socket.socket:
    """urllib3's ``HTTPConnection._new_conn``, connecting with :func:`_create_connection`."""
    try:
        sock = _create_connection(
            (conn._dns_host, conn.port),
            conn.timeout,
            conn.source_address,
            conn.socket_options,
        )
    except socket.gaierror as error:
        raise urllib3.exceptions.NameResolutionError(conn.host, conn, error) from error
    except TimeoutError as error:
        raise urllib3.exceptions.ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from error
    except OSError as error:
        raise urllib3.exceptions.NewConnectionError(
            conn, f"Failed to establish a new connection: {error}"
        ) from error
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    return sock


class _HTTPConnection(urllib3.connection.HTTPConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        return _new_conn(self)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        return _new_conn(self)


class _HTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES: dict[str, type[urllib3.HTTPConnectionPool]] = {
    "http": _HTTPConnectionPool,
    "https": _HTTPSConnectionPool,
}


def _capped(timeout: Any, left: float) -> Any:
    """A requests timeout (seconds, ``(connect, read)`` or None) capped at ``left``."""
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(t, left) for t in timeout)
    if isinstance(timeout, int | float):
        return min(timeout, left)
    return left


def _request_timeout(timeout: Any) -> Any:
    """A request's timeout capped at what is left of the budget under way;
    :class:`OutOfTime` when it is spent, so that no request starts."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise OutOfTime("the deadline has passed")
    return _capped(timeout, left)


class BudgetAdapter(HTTPAdapter):
    """Sends each request with what is left of the budget under way.

    The connect and read timeouts (the TLS handshake is bounded by the connect timeout,
    as a whole) are capped at the time left; the response is read by
    :class:`_DeadlineResponse`. No request starts once the budget is spent.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is _URLLIB3_POOL_CLASSES:  # not SOCKS: its own
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager

    def send(  # noqa: PLR0917 (requests' signature)
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=_request_timeout(timeout),
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


# --- the lean session --------------------------------------------------------------------

#: Redirects followed for one request (a standby answers 307 to the active node).
MAX_REDIRECTS = 30


class Response:
    """An answer as hvac and the resolver read it from requests: ``status_code``, ``ok``,
    ``headers`` (case-insensitive), ``content``, ``text``, ``json()`` and ``url``."""

    __slots__ = ("content", "headers", "status_code", "url")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, url: str) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; :class:`requests.exceptions.JSONDecodeError` if it is not."""
        try:
            return json.loads(self.content)
        except ValueError as error:
            if isinstance(error, json.JSONDecodeError):
                raise requests.exceptions.JSONDecodeError(error.msg, error.doc, error.pos) from None
            raise requests.exceptions.JSONDecodeError(str(error), "", 0) from None

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class Session:
    """What hvac needs of a ``requests.Session``, on urllib3's pool directly.

    One pool manager (TLS settings fixed here: ``verify`` is True, a CA file or False;
    ``cert`` a (certificate, key) pair), keep-alive connections, every request within the
    budget under way. ``verify``, ``cert`` and ``proxies`` are there for hvac to read;
    the per-request arguments of the same names are ignored (they are these).
    """

    def __init__(self, *, verify: str | bool, cert: tuple[str, str] | None, pool_size: int) -> None:
        self.verify = verify
        self.cert = cert
        self.proxies: dict[str, str] = {}
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
        if verify:
            tls["ca_certs"] = verify if isinstance(verify, str) else _default_ca_bundle()
        if cert:
            tls["cert_file"], tls["key_file"] = cert
        self._manager = urllib3.PoolManager(num_pools=4, maxsize=pool_size, **tls)
        self._manager.pool_classes_by_scheme = _POOL_CLASSES
        self._retries = urllib3.Retry(
            total=None,
            connect=0,
            read=False,
            redirect=MAX_REDIRECTS,
            status=0,
            other=0,
            raise_on_redirect=True,
            raise_on_status=False,
        )

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        **_ignored: Any,  # verify, cert, proxies: fixed for the session
    ) -> Response:
        """Send one request; raise requests' exception for what went wrong on the way."""
        timeout = _request_timeout(timeout)
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params, doseq=True)
        sent = dict(headers or {})
        body: bytes | None = None
        if json is not None:
            body = _json_body(json)
            sent["Content-Type"] = "application/json"
        elif data is not None:
            body = data.encode() if isinstance(data, str) else bytes(data)
        try:
            answer = self._manager.urlopen(
                method.upper(),
                url,
                body=body,
                headers=sent,
                redirect=allow_redirects,
                retries=self._retries,
                timeout=_urllib3_timeout(timeout),
                preload_content=True,
            )
        except urllib3.exceptions.MaxRetryError as error:
            raise _retry_error(error) from None
        except urllib3.exceptions.SSLError as error:
            raise requests.exceptions.SSLError(error) from None
        except urllib3.exceptions.ReadTimeoutError as error:
            raise requests.exceptions.ReadTimeout(error) from None
        except urllib3.exceptions.LocationValueError as error:
            raise requests.exceptions.InvalidURL(error) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, OSError) as error:
            raise requests.exceptions.ConnectionError(error) from None
        return Response(answer.status, answer.headers, answer.data, answer.geturl() or url)

    def close(self) -> None:
        self._manager.clear()


def _json_body(value: Any) -> bytes:
    """A JSON body (in :meth:`Session.request` ``json`` is requests' keyword)."""
    return json.dumps(value, allow_nan=False).encode()


def _default_ca_bundle() -> str:
    """The CA bundle requests would use with ``verify=True``."""
    return (
        os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or requests.utils.DEFAULT_CA_BUNDLE_PATH
    )


def _urllib3_timeout(timeout: Any) -> urllib3.Timeout:
    if isinstance(timeout, tuple):
        connect, read = timeout
        return urllib3.Timeout(connect=connect, read=read)
    return urllib3.Timeout(connect=timeout, read=timeout)


def _retry_error(error: urllib3.exceptions.MaxRetryError) -> requests.RequestException:
    """requests' mapping of an exhausted urllib3 retry to its own exceptions."""
    reason = error.reason
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    ):
        return requests.exceptions.ConnectTimeout(error)
    if isinstance(reason, urllib3.exceptions.ResponseError):
        return requests.exceptions.TooManyRedirects(error)
    if isinstance(reason, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(error)
    return requests.exceptions.ConnectionError(error)


def proxied(url: str) -> bool:
    """Whether requests would send a request to ``url`` through a proxy of the
    environment (``HTTPS_PROXY``, ``ALL_PROXY``… less ``NO_PROXY``)."""
    return bool(requests.utils.get_environ_proxies(url))
