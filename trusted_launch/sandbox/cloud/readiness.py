"""Readiness checks: poll until a service answers, or fail naming it with its log's tail."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import subprocess
import time
from collections.abc import Callable

import requests

from trusted_launch.sandbox.cloud.processes import CloudError, ProcessTable, log_tail

POLL_INTERVAL_S = 0.5


def wait_until(name: str, check: Callable[[], bool], timeout: float,
               table: ProcessTable | None = None) -> float:
    """Seconds until ``check()`` is true; CloudError naming ``name`` on timeout or death.

    ``check`` may raise OSError or requests' errors while the service comes up, or time
    out running a command (a loaded machine: ``virsh version`` taking over 10 s).
    With a ``table``, a service process that exits stops the wait at once.
    """
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout:
        if table is not None and not table.alive(name):
            _fail(name, "exited", table)
        try:
            if check():
                return time.monotonic() - start
        except (OSError, requests.RequestException, CloudError,
                subprocess.TimeoutExpired) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(POLL_INTERVAL_S)
    _fail(name, f"not ready after {timeout:.0f} s {last_error}".rstrip(), table)
    raise AssertionError("unreachable")


def _fail(name: str, what: str, table: ProcessTable | None) -> None:
    tail = log_tail(table.log_file(name)) if table is not None else ""
    log = f" (log {table.log_file(name)})" if table is not None else ""
    raise CloudError(f"{name} {what}{log}" + (f"\n{tail}" if tail else ""))


def http_answers(url: str, *, ok_statuses: tuple[int, ...] = (200, 300, 401),
                 verify: str | bool = True) -> Callable[[], bool]:
    """A check: GET ``url`` answers with one of ``ok_statuses``."""
    def check() -> bool:
        return requests.get(url, timeout=5, verify=verify).status_code in ok_statuses
    return check


def tcp_listens(port: int) -> Callable[[], bool]:
    """A check: something accepts TCP connections on 127.0.0.1:``port``."""
    def check() -> bool:
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=2)):
            return True
    return check


def file_exists(path: pathlib.Path) -> Callable[[], bool]:
    return path.exists
