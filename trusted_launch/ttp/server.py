"""The TTP's HTTPS server: cheroot with a thread pool, optionally pre-forked workers.

The parent binds the listening socket once; each worker process runs its own
cheroot server (and its own database pool) on that inherited socket, so the
kernel spreads connections over the workers. SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.ttp.keystore import write_private_file

LOG = logging.getLogger(__name__)
_MIN_WORKER_LIFE = 5.0  # seconds; a worker dying sooner means a configuration problem
# Idle keep-alive connections a worker keeps open (cheroot's default, 10, closes the
# rest after each response, so every compute host beyond ten pays a TLS handshake per
# attestation). They wait in a selector, not in a thread, so many cost little.
KEEP_ALIVE_CONNECTIONS = 256


class InheritedSocketServer(wsgi.Server):
    """A cheroot WSGI server that serves on an already bound socket."""

    def __init__(self, listener: socket.socket, app: Callable, **kwargs) -> None:
        super().__init__(listener.getsockname()[:2], app, **kwargs)
        self._listener = listener

    def bind(self, family, type, proto=0):
        """Use the inherited socket instead of creating one."""
        self.socket = self._listener
        self.bind_addr = self.resolve_real_bind_addr(self.socket)
        return self.socket


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A bound, listening TCP socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it; without it Nagle + delayed ACK stall small
    # keep-alive responses by ~40 ms (cheroot sets it only on sockets it creates).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class _WithoutSession:
    """A TLS socket whose ``session`` attribute is absent (everything else passes through)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    def __getattr__(self, name: str):
        if name == "session":
            raise AttributeError(name)
        return getattr(self._sock, name)


class SSLAdapter(BuiltinSSLAdapter):
    """cheroot's adapter without ``SSL_SESSION_ID`` in the WSGI environ.

    cheroot reads ``SSLSocket.session`` on every connection for it; on a
    server-side socket that leaks about 1 KiB per connection (CPython 3.11,
    OpenSSL 3; found by bench/soak.py). Nothing here uses the session id.
    """

    def get_environ(self, sock):
        return super().get_environ(_WithoutSession(sock))


def ssl_adapter(conf: cfg.ConfigOpts) -> BuiltinSSLAdapter:
    """TLS 1.2+ with the configured certificate; mutual TLS if client_ca_file is set."""
    if not conf.api.cert_file or not conf.api.key_file:
        raise ValueError("[api] cert_file and key_file are required (the TTP serves HTTPS only)")
    adapter = SSLAdapter(conf.api.cert_file, conf.api.key_file)
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    if conf.api.client_ca_file:
        adapter.context.load_verify_locations(cafile=conf.api.client_ca_file)
        adapter.context.verify_mode = ssl.CERT_REQUIRED
    return adapter


def _serve(listener: socket.socket, app: Callable, conf: cfg.ConfigOpts) -> None:
    server = InheritedSocketServer(listener, app, numthreads=conf.api.threads,
                                   server_name="trusted-launch-ttp")
    server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
    server.ssl_adapter = ssl_adapter(conf)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.safe_start()  # stops the server on SystemExit/KeyboardInterrupt, re-raises
    except (SystemExit, KeyboardInterrupt):
        LOG.info("TTP worker %d stopped", os.getpid())


def _spawn(listener: socket.socket, make_app: Callable[[], Callable],
           conf: cfg.ConfigOpts) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _serve(listener, make_app(), conf)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:  # the child must never return into the parent
            LOG.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            os._exit(code)
    return pid


class _Stop(Exception):
    """Raised by the supervisor's signal handler to leave waitpid()."""


def _raise_stop(signum, frame):
    raise _Stop


def _supervise(listener: socket.socket, make_app: Callable[[], Callable],
               conf: cfg.ConfigOpts) -> None:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    started = time.monotonic()
    children: set[int] = set()
    try:
        children.update(_spawn(listener, make_app, conf) for _ in range(conf.api.workers))
        LOG.info("TTP serving with %d workers: %s", len(children), sorted(children))
        _watch(children, lambda: _spawn(listener, make_app, conf), started)
    except _Stop:
        LOG.info("TTP stopping")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pid in children:
            _signal(pid, signal.SIGTERM)
        for pid in children:
            _reap(pid)


def _watch(children: set[int], respawn: Callable[[], int], started: float) -> None:
    """Replace workers that die; give up if they die right at start-up."""
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid not in children:
            continue
        children.discard(pid)
        if time.monotonic() - started < _MIN_WORKER_LIFE:
            LOG.error("worker %d failed at start-up (status %d); stopping", pid, status)
            return
        LOG.warning("worker %d exited (status %d); starting another", pid, status)
        children.add(respawn())


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run(conf: cfg.ConfigOpts, make_app: Callable[[], Callable]) -> None:
    """Bind, announce the port, and serve until SIGTERM."""
    ssl_adapter(conf)  # fail early on a bad certificate or key
    app = make_app()  # fail early on a bad configuration too (nothing connects yet)
    listener = listen(conf.api.bind_host, conf.api.bind_port)
    port = listener.getsockname()[1]
    LOG.info("TTP listening on https://%s:%d", conf.api.bind_host, port)
    if conf.api.port_file:
        write_private_file(pathlib.Path(conf.api.port_file), f"{port}\n".encode())
    if conf.api.workers == 1:
        _serve(listener, app, conf)
    else:
        _supervise(listener, make_app, conf)
    listener.close()
    sys.stdout.flush()
