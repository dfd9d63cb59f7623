"""Continuous attestation assembled from real parts, for tests and benchmarks.

One swtpm compute host booted from a real firmware event log and enrolled at
the real TTP (HTTPS process, SQLite) whose host status notifications go to a
real RabbitMQ; a :class:`HostMonitor` attests the host periodically and a
scheduler-side :class:`HostTrustStatus` listens on the bus. A development
stand-in, never part of a deployment.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from trusted_launch.compute.enrollment import enroll_host
from trusted_launch.compute.host_monitor import HostMonitor
from trusted_launch.compute.ttp_client import TTPClient
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
        client = TTPClient(server.url, ca_file=str(server.ca_file), connect_retries=0)
        enroll_host(device, client, name)
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
