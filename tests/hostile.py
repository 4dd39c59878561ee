"""Hostile servers on loopback, for the resolvers' deadlines: real sockets, random ports.

- :class:`SilentServer` accepts connections, reads what it is sent and never answers
  (neither HTTP nor a TLS handshake).
- :class:`SlowProxy` relays to a real server (OpenBao) and makes it slow: it holds each
  answer back for ``delay`` seconds, or sends it one byte every ``trickle`` seconds (a
  TLS handshake too, when the server speaks TLS). With ``only``, just the answers to
  plain-HTTP requests whose head contains those bytes are slowed.
- :class:`ScriptedServer` answers HTTP requests from a table: for ``"METHOD /path"``,
  a status and a body, sent as given (malformed JSON, wrong types, no JSON at all);
  it counts the requests it was sent, by that key.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Self

_REQUEST_HEAD = re.compile(rb"^[A-Z]+ /")


class Closing:
    """A context manager whose exit is :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Listener(Closing):
    """A loopback listening socket and the connections it accepted, all closed on exit."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def address(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            self.serve(client)

    def serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class SilentServer(_Listener):
    """Accepts, reads, never answers."""

    def serve(self, client: socket.socket) -> None:
        def drain() -> None:
            with contextlib.suppress(OSError):
                while client.recv(65536):
                    pass

        threading.Thread(target=drain, daemon=True).start()


class _Exchange:
    """What one relayed connection knows about the request it is answering."""

    def __init__(self) -> None:
        self.slow = False
        self.held = False


class SlowProxy(_Listener):
    """A TCP relay to ``upstream`` (``host:port``) that answers slowly."""

    def __init__(
        self,
        upstream: str,
        *,
        delay: float = 0.0,
        trickle: float | None = None,
        only: bytes | None = None,
    ) -> None:
        host, _, port = upstream.rpartition("://")[2].rpartition(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.trickle = trickle
        self.only = only
        #: How many answers were slowed down (held back or trickled).
        self.slowed = 0
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        self._keep(server)
        exchange = _Exchange()
        threading.Thread(
            target=self._requests, args=(client, server, exchange), daemon=True
        ).start()
        threading.Thread(target=self._answers, args=(server, client, exchange), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, exchange: _Exchange) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self.only is None:
                    exchange.slow, exchange.held = True, False
                elif _REQUEST_HEAD.match(chunk):  # a new request (not the body of the last)
                    exchange.slow, exchange.held = self.only in chunk, False
                server.sendall(chunk)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _answers(self, server: socket.socket, client: socket.socket, exchange: _Exchange) -> None:
        with contextlib.suppress(OSError):
            while chunk := server.recv(65536):
                if not exchange.slow:
                    client.sendall(chunk)
                    continue
                if not exchange.held:
                    exchange.held = True
                    self.slowed += 1
                    if self.stopped.wait(self.delay):
                        return
                if self.trickle is None:
                    client.sendall(chunk)
                    continue
                for i in range(len(chunk)):
                    client.sendall(chunk[i : i + 1])
                    if self.stopped.wait(self.trickle):
                        return
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


#: An answer: status, body and Content-Type.
Answer = tuple[int, bytes, str]


class ScriptedServer(Closing):
    """An HTTP/1.1 server on loopback answering from ``answers``, keyed by
    ``"METHOD /path"`` (no query). What is not listed gets a 404 with no errors.

    ``answers`` may be changed while it runs; ``requests`` counts what was asked. A 3xx
    answer sends ``location`` (an address) with the path asked for, as a Vault standby
    redirects to the active node.
    """

    def __init__(self, answers: Mapping[str, Answer | bytes]) -> None:
        self.answers: dict[str, Answer | bytes] = dict(answers)
        self.requests: Counter[str] = Counter()
        self.location = ""
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                key = f"{self.command} {self.path.split('?', 1)[0]}"
                with server._lock:
                    server.requests[key] += 1
                    answer = server.answers.get(key, (404, b'{"errors":[]}', "application/json"))
                if isinstance(answer, bytes):
                    answer = (200, answer, "application/json")
                status, body, content_type = answer
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if 300 <= status < 400:
                    self.send_header("Location", server.location + self.path)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_LIST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def asked(self, key: str) -> int:
        with self._lock:
            return self.requests[key]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
