"""Plain background processes with a pid file and one log file each.

A process is started in its own session, so that stopping it signals its
whole process group (gunicorn workers, a shell's children).  A pid file whose
process still runs the same command is reused: that makes a second bring-up
a no-op for services already running.  A service that names its
configuration files is restarted when they changed since it was started
(their digest is kept beside the pid file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 25


class CloudError(RuntimeError):
    """A step of the cloud's bring-up or tear-down failed; the message says which."""


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Service:
    """How to run one service: its command, working directory and environment."""

    name: str
    argv: Sequence[str]
    cwd: pathlib.Path | None = None
    env: Mapping[str, str] | None = None
    config_files: Sequence[pathlib.Path] = ()  # a change restarts the running service


def config_digest(files: Sequence[pathlib.Path]) -> str:
    """SHA-256 over the names and contents of ``files`` (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0")
        with contextlib.suppress(FileNotFoundError):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class ProcessTable:
    """The services of one cloud, by name: pid files in ``run_dir``, logs in ``log_dir``."""

    def __init__(self, run_dir: pathlib.Path, log_dir: pathlib.Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)

    def log_file(self, name: str) -> pathlib.Path:
        return self.log_dir / f"{name}.log"

    def _pid_file(self, name: str) -> pathlib.Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of ``name`` if its recorded process is still alive."""
        try:
            pid = int(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return None
        return None if state == "Z" else pid

    def _digest_file(self, name: str) -> pathlib.Path:
        return self.run_dir / f"{name}.config-digest"

    def config_changed(self, service: Service) -> bool:
        """Whether ``service`` runs on other configuration files than it names now."""
        if not service.config_files:
            return False
        try:
            recorded = self._digest_file(service.name).read_text().strip()
        except FileNotFoundError:
            return True  # started before its configuration was tracked
        return recorded != config_digest(service.config_files)

    def start(self, service: Service) -> tuple[int, bool]:
        """(pid, started now): start ``service`` unless it already runs on its current
        configuration (a changed configuration file restarts it)."""
        running = self.pid(service.name)
        if running is not None and not self.config_changed(service):
            return running, False
        if running is not None:
            with open(self.log_file(service.name), "ab") as log:
                log.write(f"--- {time.strftime('%H:%M:%S')} configuration changed: "
                          "restarting\n".encode())
            self.stop(service.name)
        env = dict(os.environ if service.env is None else service.env)
        with open(self.log_file(service.name), "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start {' '.join(service.argv)}\n"
                      .encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    list(service.argv), cwd=service.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise CloudError(f"{service.name}: cannot start {service.argv[0]}: {exc}") \
                    from None
        self._pid_file(service.name).write_text(str(process.pid))
        if service.config_files:
            self._digest_file(service.name).write_text(config_digest(service.config_files))
        return process.pid, True

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def stop(self, name: str) -> None:
        """SIGTERM the process group of ``name``, SIGKILL it if it lingers."""
        pid = self.pid(name)
        self._pid_file(name).unlink(missing_ok=True)
        self._digest_file(name).unlink(missing_ok=True)
        if pid is None:
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)

    def names(self) -> list[str]:
        """Services with a pid file, newest first (the reverse of start order)."""
        files = sorted(self.run_dir.glob("*.pid"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        return [path.stem for path in files]


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _group_alive(pgid: int) -> bool:
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
