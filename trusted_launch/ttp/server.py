"""The TTP's HTTPS service: pre-forked workers on one bound socket, and their metrics.

The parent binds the listening socket once; each worker process runs its own
server (``http_server``: a thread per connection for the TLS handshake and
request reading under deadlines, per-address connection caps, a bounded
number of requests in the application at once) and its own database pool on
that inherited socket, so the kernel spreads connections over the workers.
Workers keep their metrics in a private directory that ``GET /metrics``
aggregates. SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable

from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.ttp.keystore import write_private_file

LOG = logging.getLogger(__name__)
_MIN_WORKER_LIFE = 5.0  # seconds; a worker dying sooner means a configuration problem
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when first imported


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound, listening TCP socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def tls_context(conf: cfg.ConfigOpts) -> ssl.SSLContext:
    """TLS 1.2+ with the configured certificate; mutual TLS if client_ca_file is set."""
    if not conf.api.cert_file or not conf.api.key_file:
        raise ValueError("[api] cert_file and key_file are required (the TTP serves HTTPS only)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(conf.api.cert_file, conf.api.key_file)
    if conf.api.client_ca_file:
        context.load_verify_locations(cafile=conf.api.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def private_metrics_directory() -> str:
    """A fresh private directory for the workers' metrics files, announced to them.

    Must run before anything imports prometheus_client, which reads the
    variable once; the supervisor removes the directory when it stops.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory "
                           "was set; the workers' metrics would not add up")
    directory = tempfile.mkdtemp(prefix="trusted-launch-ttp-metrics-")
    os.environ[METRICS_ENV] = directory
    return directory


def _serve(listener: socket.socket, app: Callable, conf: cfg.ConfigOpts) -> None:
    from trusted_launch.ttp import http_server
    http_server.serve(listener, app, tls_context(conf),
                      http_server.ServerLimits.from_conf(conf),
                      multiprocess=conf.api.workers > 1)
    LOG.info("TTP worker %d stopped", os.getpid())


def _spawn(listener: socket.socket, make_app: Callable[[], Callable],
           conf: cfg.ConfigOpts) -> int:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker's loop takes over
        signal.signal(signal.SIGINT, signal.SIG_DFL)
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
        _forget_worker_metrics(pid)
        if time.monotonic() - started < _MIN_WORKER_LIFE:
            LOG.error("worker %d failed at start-up (status %d); stopping", pid, status)
            return
        LOG.warning("worker %d exited (status %d); starting another", pid, status)
        children.add(respawn())


def _forget_worker_metrics(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the total)."""
    if os.environ.get(METRICS_ENV):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


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
    metrics_directory = private_metrics_directory()
    try:
        tls_context(conf)  # fail early on a bad certificate or key
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
    finally:
        shutil.rmtree(metrics_directory, ignore_errors=True)
    sys.stdout.flush()
