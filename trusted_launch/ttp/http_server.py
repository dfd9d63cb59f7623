"""One TTP worker's HTTPS server: h11 over blocking TLS sockets, a deadline on every step.

The accept loop only accepts: each connection gets its own thread, which runs
the TLS handshake and reads each request (line, headers and body) under a
total deadline per step, so a client that is slow or silent holds one socket
and one connection thread, never delays another client's accept or
handshake, and never holds one of the ``threads`` application slots: only
complete requests take one, to run the WSGI application, in the same thread
(no hand-off). Connections are capped per client address and in total; past
a cap a new connection is closed at once.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import h11
from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.ttp import metrics
from trusted_launch.ttp.errors import (
    APIError,
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    RequestTimeout,
)

LOG = logging.getLogger(__name__)
READ_SIZE = 65536
MAX_HEAD_SIZE = 16384  # request line + headers
SHUTDOWN_GRACE = 10.0  # seconds in-flight requests get to finish on SIGTERM
_ACCEPT_BACKOFF = 0.1  # seconds to pause accepting when out of file descriptors
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class ServerLimits:
    """Deadlines (seconds) and caps of one worker; see the [api] options."""

    tls_handshake_timeout: float
    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    max_connections: int
    max_connections_per_address: int
    max_body: int
    threads: int

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> ServerLimits:
        api = conf.api
        return cls(api.tls_handshake_timeout, api.header_timeout, api.body_timeout,
                   api.keep_alive_timeout, api.max_connections,
                   api.max_connections_per_address, api.max_request_body_size, api.threads)


class _Deadline(Exception):
    """A client missed the named deadline."""

    def __init__(self, deadline: str) -> None:
        super().__init__(deadline)
        self.deadline = deadline


class _Close(Exception):
    """The connection ends here (the client left, or has been answered with an error)."""


@dataclass
class _Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def encode(self) -> bytes:
        """The whole HTTP/1.1 answer, for errors the server sends outside h11's cycle."""
        lines = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        lines += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


class AddressSlots:
    """Open connections per client address and in total, within their caps."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address, self.total = per_address, total
        self.open: dict[str, int] = {}
        self.count = 0
        self._lock = threading.Lock()

    def take(self, address: str) -> str | None:
        """Take a slot for ``address``; the name of the cap that refuses it, if one does."""
        with self._lock:
            if self.count >= self.total:
                return "total"
            held = self.open.get(address, 0)
            if held >= self.per_address:
                return "per_address"
            self.open[address] = held + 1
            self.count += 1
            return None

    def give_back(self, address: str) -> None:
        with self._lock:
            held = self.open.pop(address) - 1
            if held:
                self.open[address] = held
            self.count -= 1


def error_response(error: APIError) -> _Response:
    """The TTP's JSON error answer, made by the server itself; the connection then closes."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    headers = [(b"Content-Type", b"application/json; charset=UTF-8"),
               (b"Content-Length", str(len(body)).encode()), (b"Cache-Control", b"no-store"),
               (b"X-Content-Type-Options", b"nosniff"), (b"Connection", b"close")]
    return _Response(error.status, HTTPStatus(error.status).phrase.encode(), headers, body)


class WorkerServer:
    """Serves ``app`` over TLS on an inherited listening socket until SIGTERM."""

    def __init__(self, listener: socket.socket, app: Callable, context: ssl.SSLContext,
                 limits: ServerLimits, *, multiprocess: bool) -> None:
        self.listener, self.app, self.context, self.limits = listener, app, context, limits
        self.slots = AddressSlots(limits.max_connections_per_address, limits.max_connections)
        self.app_slots = threading.BoundedSemaphore(limits.threads)
        host, port = listener.getsockname()[:2]
        self.server_environ = {"SERVER_NAME": host, "SERVER_PORT": str(port),
                               "wsgi.multiprocess": multiprocess}
        self.connections: dict[ssl.SSLSocket, bool] = {}  # -> busy in the application
        self.lock = threading.Lock()
        self.stopping = False

    # life cycle ------------------------------------------------------------

    def serve(self) -> None:
        """Accept until SIGTERM/SIGINT; then let in-flight requests finish."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _raise_stop)
        self.listener.setblocking(True)
        try:
            self._accept_loop()
        except _Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._shut_down()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, address = self.listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                LOG.warning("accept failed (%s); pausing %.1f s", exc.strerror, _ACCEPT_BACKOFF)
                time.sleep(_ACCEPT_BACKOFF)
                continue
            metrics.CONNECTIONS.inc()
            refused = self.slots.take(address[0])
            if refused is not None:
                metrics.CONNECTIONS_REFUSED.labels(refused).inc()
                _abort(sock)
                continue
            try:
                threading.Thread(target=self._connection, args=(sock, address), daemon=True,
                                 name="ttp-connection").start()
            except RuntimeError:  # no more threads: shed this connection, keep accepting
                LOG.warning("no thread for a connection from %s; closed it", address[0])
                self.slots.give_back(address[0])
                _abort(sock)

    def _shut_down(self) -> None:
        """Wake idle connections so they close; give busy ones SHUTDOWN_GRACE to answer."""
        self.stopping = True
        with self.lock:
            idle = [tls for tls, busy in self.connections.items() if not busy]
        for tls in idle:  # the TCP level: SSLSocket.shutdown would drop the TLS state
            with contextlib.suppress(OSError):    # under the thread reading it
                socket.socket.shutdown(tls, socket.SHUT_RDWR)
        give_up = time.monotonic() + SHUTDOWN_GRACE
        while self.connections and time.monotonic() < give_up:
            time.sleep(0.05)

    # one connection (its own thread) -----------------------------------------

    def _connection(self, sock: socket.socket, address: tuple) -> None:
        metrics.OPEN_CONNECTIONS.inc()
        tls = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
            with self.lock:
                self.connections[tls] = False
            self._handshake(tls)
            environ = {**self.server_environ, "REMOTE_ADDR": address[0],
                       "REMOTE_PORT": str(address[1]), **tls_environ(tls)}
            self._requests(tls, environ)
        except _Deadline as missed:
            metrics.DEADLINES.labels(missed.deadline).inc()
        except (_Close, OSError, h11.ProtocolError):
            pass  # the client left or broke the protocol (ssl.SSLError is an OSError)
        except Exception:
            LOG.exception("connection from %s failed", address[0])
        finally:
            if tls is not None:
                with self.lock:
                    self.connections.pop(tls, None)
            _close(tls or sock)
            self.slots.give_back(address[0])
            metrics.OPEN_CONNECTIONS.dec()

    def _handshake(self, tls: ssl.SSLSocket) -> None:
        """The TLS handshake, within its deadline (a total one: CPython's SSL timeouts are)."""
        if self.stopping:
            raise _Close
        tls.settimeout(self.limits.tls_handshake_timeout)
        try:
            tls.do_handshake()
        except TimeoutError:
            raise _Deadline("tls_handshake") from None

    def _requests(self, tls: ssl.SSLSocket, base_environ: dict) -> None:
        """Serve requests on one connection until it closes, errs or idles out."""
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        idle_until = time.monotonic() + self.limits.header_timeout
        first = True
        while not self.stopping:
            try:
                request = self._read_head(connection, tls, idle_until, first)
                body = self._read_body(connection, tls, request)
            except _ClientError as error:
                self._write(tls, error.response.encode(), "response")
                raise _Close from None
            response = self._call_app(tls, {**base_environ, **request_environ(request, body)})
            if self.stopping:
                response.headers.append((b"Connection", b"close"))
            self._send(connection, tls, response, head_only=request.method == b"HEAD")
            with self.lock:
                self.connections[tls] = False
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()
            idle_until = time.monotonic() + self.limits.keep_alive_timeout
            first = False

    def _read_head(self, connection: h11.Connection, tls: ssl.SSLSocket, idle_until: float,
                   first: bool) -> h11.Request:
        """The next request's line and headers, within the header deadline."""
        try:
            event = self._head(connection, tls, idle_until, first)
        except h11.RemoteProtocolError as exc:
            raise _ClientError(_protocol_error(exc)) from None
        if isinstance(event, h11.ConnectionClosed):
            raise _Close
        if not isinstance(event, h11.Request):
            raise _ClientError(BadRequest("request", "not an HTTP/1.1 request"))
        if _head_size(event) > MAX_HEAD_SIZE:  # h11 bounds only a head still incomplete
            raise _ClientError(_too_large_head())
        return event

    def _head(self, connection: h11.Connection, tls: ssl.SSLSocket, idle_until: float,
              first: bool) -> object:
        event = connection.next_event()
        if event is h11.NEED_DATA and not connection.trailing_data[0]:
            try:
                connection.receive_data(_recv(tls, idle_until))
            except TimeoutError:
                if first:
                    raise _Deadline("header") from None
                raise _Close from None  # an idle kept-alive connection: nothing owed
            deadline = idle_until if first else time.monotonic() + self.limits.header_timeout
            event = connection.next_event()
        else:
            deadline = time.monotonic() + self.limits.header_timeout
        try:
            while event is h11.NEED_DATA:
                connection.receive_data(_recv(tls, deadline))
                event = connection.next_event()
        except TimeoutError:
            metrics.DEADLINES.labels("header").inc()
            raise _ClientError(RequestTimeout(
                "header_timeout", f"the request line and headers took longer than "
                                  f"{self.limits.header_timeout:g} s")) from None
        return event

    def _read_body(self, connection: h11.Connection, tls: ssl.SSLSocket,
                   request: h11.Request) -> bytes:
        """The whole body, refused unread (413) when its declared length is over the limit."""
        length = _content_length(request)
        if length is not None and length > self.limits.max_body:
            raise _ClientError(PayloadTooLarge("body", f"larger than {self.limits.max_body} "
                                                       f"bytes"))
        if connection.they_are_waiting_for_100_continue:
            self._write(tls, connection.send(h11.InformationalResponse(
                status_code=100, headers=[])), "body")
        deadline = time.monotonic() + self.limits.body_timeout
        chunks, size = [], 0
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(_recv(tls, deadline))
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self.limits.max_body:
                        raise _ClientError(PayloadTooLarge(
                            "body", f"larger than {self.limits.max_body} bytes"))
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                else:
                    raise _Close
        except TimeoutError:
            metrics.DEADLINES.labels("body").inc()
            raise _ClientError(RequestTimeout(
                "body_timeout", f"the request body took longer than "
                                f"{self.limits.body_timeout:g} s")) from None
        except h11.RemoteProtocolError as exc:
            raise _ClientError(_protocol_error(exc)) from None

    def _call_app(self, tls: ssl.SSLSocket, environ: dict) -> _Response:
        """Run the application in one of the worker's ``threads`` application slots."""
        started = time.perf_counter()
        with self.app_slots:
            with self.lock:
                self.connections[tls] = True
            response = self._run_app(environ)
        metrics.HTTP_SECONDS.observe(time.perf_counter() - started)
        metrics.HTTP_REQUESTS.labels(str(response.status)).inc()
        return response

    def _run_app(self, environ: dict) -> _Response:
        """Call the WSGI application; its whole answer, or a JSON 500."""
        try:
            return call_wsgi(self.app, environ)
        except Exception:
            LOG.exception("%s %r failed in the server", environ["REQUEST_METHOD"],
                          environ["PATH_INFO"][:200])
            return error_response(_InternalError("internal", "internal error"))

    def _send(self, connection: h11.Connection, tls: ssl.SSLSocket, response: _Response, *,
              head_only: bool) -> None:
        try:
            data = connection.send(h11.Response(status_code=response.status,
                                                headers=response.headers,
                                                reason=response.reason))
            if not head_only and response.body:
                data += connection.send(h11.Data(data=response.body))
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            LOG.exception("the application's response is not valid HTTP/1.1")
            raise _Close from None
        self._write(tls, data, "response")

    def _write(self, tls: ssl.SSLSocket, data: bytes, deadline: str) -> None:
        tls.settimeout(self.limits.body_timeout)
        try:
            tls.sendall(data)
        except TimeoutError:
            raise _Deadline(deadline) from None


class _ClientError(Exception):
    """The request cannot be served: answer with ``response`` and close."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.check)
        self.response = error_response(error)


class _InternalError(APIError):
    status, code = 500, "internal_error"


def _protocol_error(exc: h11.RemoteProtocolError) -> APIError:
    if exc.error_status_hint == 431:
        return _too_large_head()
    return BadRequest("request", f"malformed HTTP/1.1: {str(exc)[:120]}")


def _too_large_head() -> APIError:
    return HeadersTooLarge("headers", f"request line and headers over {MAX_HEAD_SIZE} bytes")


def _head_size(request: h11.Request) -> int:
    """Bytes of the request line and headers as sent (give or take whitespace)."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 accepted it: digits only
    return None


def request_environ(request: h11.Request, body: bytes) -> dict:
    """The per-request part of the WSGI environ (PEP 3333) of a fully read request."""
    target = request.target.decode("latin-1")
    if not target.startswith("/"):  # absolute-form: https://host/path
        parts = urllib.parse.urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": request.method.decode("ascii"), "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query, "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode()}",
        "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0), "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.run_once": False,
        "HTTPS": "on",
    }
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1")
        if "_" in name:  # X_Auth_Token would pass for X-Auth-Token: drop, as nginx does
            continue
        key = name.upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if key == "CONTENT_TYPE":
            environ[key] = value
        elif key != "CONTENT_LENGTH":
            key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def tls_environ(ssl_object: ssl.SSLObject | None) -> dict:
    """SSL_* environ entries: protocol, cipher and the verified client certificate, if any."""
    if ssl_object is None:
        return {}
    environ = {"SSL_PROTOCOL": ssl_object.version() or "",
               "SSL_CIPHER": (ssl_object.cipher() or ("",))[0]}
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        subject = dict(item for rdn in ssl_object.getpeercert().get("subject", ())
                       for item in rdn)
        environ.update({"SSL_CLIENT_VERIFY": "SUCCESS",
                        "SSL_CLIENT_CERT": ssl.DER_cert_to_PEM_cert(der)})
        if "commonName" in subject:
            environ["SSL_CLIENT_S_DN_CN"] = subject["commonName"]
    return environ


def call_wsgi(app: Callable, environ: dict) -> _Response:
    """Run a WSGI application to the end; its status, headers and whole body."""
    started: list = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    chunks: list[bytes] = []
    result: Iterable[bytes] = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    code, _, reason = status.partition(" ")
    body = b"".join(chunks)
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
               if name.lower() != "content-length"]
    encoded.append((b"Content-Length", str(len(body)).encode()))
    return _Response(int(code), reason.encode("latin-1"), encoded, body)


def _abort(sock: socket.socket) -> None:
    """Close at once with a reset: nothing is owed to a refused connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def _close(sock: socket.socket) -> None:
    """Close without waiting for the client (every answer is framed by Content-Length)."""
    with contextlib.suppress(OSError):
        sock.close()


def _recv(sock: socket.socket, deadline: float) -> bytes:
    """Up to READ_SIZE bytes before the monotonic ``deadline``; b"" when the client closed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)
    return sock.recv(READ_SIZE)


class _Stop(Exception):
    """Raised by the worker's signal handler to leave accept()."""


def _raise_stop(signum, frame):
    raise _Stop


def serve(listener: socket.socket, app: Callable, context: ssl.SSLContext,
          limits: ServerLimits, *, multiprocess: bool) -> None:
    """Run one worker's server in this process until SIGTERM."""
    WorkerServer(listener, app, context, limits, multiprocess=multiprocess).serve()
