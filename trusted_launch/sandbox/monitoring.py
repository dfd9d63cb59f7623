"""Continuous attestation assembled from real parts, for tests and benchmarks.

One swtpm compute host booted from a real firmware event log and enrolled at
the real TTP (HTTPS process, SQLite) whose host status notifications go to a
real RabbitMQ; a :class:`HostMonitor` attests the host periodically and a
scheduler-side :class:`HostTrustStatus` listens on the bus. A development
stand-in, never part of a deployment.

Also small readers of process and TPM figures for soak runs (bench/soak.py):
RSS, open file descriptors and TCP peers from /proc, TPM handle counts through
TPM2_GetCapability, and a least-squares growth rate.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from trusted_launch.compute.host_monitor import HostMonitor
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.sandbox.hosts import register_and_enroll
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import StateCache, SwtpmProcess
from trusted_launch.sandbox.ttp_process import TTPServer, write_ttp_config
from trusted_launch.scheduler.host_status import HostTrustStatus, StatusFeed
from trusted_launch.tpm import TPMDevice

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
BIND_KEY_PCRS = "sha256:0,1,2,3,4,5,6,7"
PROFILES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples" / "profiles"
DEFAULT_RANKS = {"low": 0, "medium": 1, "high": 2}


@dataclass
class MonitoredHost:
    """The running pieces; ``status`` is what a scheduler process would know."""

    name: str
    tpm: SwtpmProcess
    device: TPMDevice
    monitor: HostMonitor
    ttp: TTPServer
    status: HostTrustStatus
    feed: StatusFeed
    topic: str


def _ttp(directory: pathlib.Path, states: StateCache, rabbit_url: str, topic: str
         ) -> TTPServer:
    tls_ca = CertificateAuthority(directory / "tls-ca")
    cert, key = tls_ca.issue("ttp-server")
    admin_token = secrets.token_urlsafe(24)
    config = write_ttp_config(directory, database_url=f"sqlite:///{directory / 'ttp.sqlite'}",
                              cert=cert, key=key, admin_token=admin_token,
                              ek_ca_files=states.ca.ek_ca_certs)
    with config.open("a") as stream:
        stream.write(f"[host_status]\nnotifications_enabled = true\n"
                     f"notification_transport_url = {rabbit_url}\n"
                     f"notification_topics = {topic}\nchallenge_ttl = 30\n")
    server = TTPServer(directory, config, tls_ca.cert_file, admin_token)
    synced = server.manage("db", "sync")
    if synced.returncode != 0:
        raise RuntimeError(f"db sync failed: {synced.stderr}")
    server.start()
    for name in ("low", "medium", "high"):
        server.put_profile(name, (PROFILES_DIR / f"{name}.yaml").read_text())
    return server


def _delete_queue(name: str) -> None:
    import kombu

    with contextlib.suppress(Exception), \
            kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
        connection.channel().queue_delete(name)


@contextlib.contextmanager
def monitored_host(directory: pathlib.Path, *, states: StateCache, event_log: pathlib.Path,
                   interval: float, rabbit_url: str = RABBIT_URL, state_index: int = 0,
                   rank_of: Callable[[str], int | None] = DEFAULT_RANKS.get
                   ) -> Iterator[MonitoredHost]:
    """Everything running; the monitor thread is NOT started (call ``monitor.start()``)."""
    directory.mkdir(parents=True, exist_ok=True)
    topic = f"tl-host-status-{secrets.token_hex(6)}"
    name = f"monitored-{secrets.token_hex(3)}"
    state = states.state(state_index)  # manufactures the EK CA the TTP trusts
    with contextlib.ExitStack() as stack:
        server = _ttp(directory, states, rabbit_url, topic)
        stack.callback(server.stop)
        status = HostTrustStatus(rank_of)
        feed = StatusFeed(status, transport_url=rabbit_url, topics=[topic], pool=topic)
        feed.start()
        stack.callback(_delete_queue, topic)
        stack.callback(feed.stop)
        if not feed.listening.wait(30):
            raise RuntimeError(f"no notification listener on {rabbit_url} after 30 s")
        tpm = SwtpmProcess(state, states.ca)
        tpm.start()
        stack.callback(tpm.stop)
        tpm.boot(event_log)
        device = TPMDevice(tpm.tcti)
        stack.callback(device.close)
        register_and_enroll(device, server, name)
        client = TTPClient(server.url, ca_file=str(server.ca_file), connect_retries=0,
                           auth_token=server.create_token("host", name))
        monitor = HostMonitor(device=device, ttp=client, host_name=name,
                              read_event_log=event_log.read_bytes,
                              pcr_selection=BIND_KEY_PCRS, interval=interval)
        stack.callback(monitor.stop)
        yield MonitoredHost(name, tpm, device, monitor, server, status, feed, topic)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# Process and TPM figures for soak runs (Linux /proc; no extra dependency) -------------

PAGE_KIB = 4


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a pre-forked server and its workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        if not pathlib.Path(f"/proc/{current}").exists():
            continue
        found.append(current)
        for task in pathlib.Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return found


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        return int(pathlib.Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def open_fds(pid: int) -> int:
    """Number of open file descriptors of ``pid`` (0 if it is gone)."""
    try:
        return len(list(pathlib.Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return 0


def tcp_peers(pid: int, remote_port: int) -> int:
    """Established TCP sockets of ``pid`` to 127.0.0.1:``remote_port`` (e.g. a database)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = fd.readlink().name
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].split(":")[1], 16) == remote_port \
                    and fields[9] in inodes:
                count += 1
    return count


def tpm_handle_counts(device: TPMDevice) -> dict[str, int]:
    """TPM2_GetCapability counts: loaded transient objects and loaded sessions."""
    return {"transient": len(device.transient_handles()),
            "loaded_sessions": len(device.loaded_sessions())}


def growth_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute (0 if < 2 samples)."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_v = sum(v for _, v in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread
