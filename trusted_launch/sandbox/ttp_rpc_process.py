"""The TTP's RPC server (``trusted-launch-ttp-rpc``) as a real process, for the sandbox.

It runs beside a :class:`~trusted_launch.sandbox.ttp_process.TTPServer` on the
same configuration file (same database, same keys) plus a small one naming the
message bus, the topic and the TTP's URL, exactly as an operator adds RPC to a
running TTP. Ready once a real RPC call is answered.
"""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import oslo_messaging
from oslo_config import cfg

from trusted_launch.compute.errors import AttestationRefused, TTPUnreachable
from trusted_launch.compute.ttp_rpc_client import RPCTTPClient
from trusted_launch.sandbox.ttp_process import TTPServer, terminate

START_TIMEOUT_S = 60.0
#: A host name no test enrols: asking for its nonce proves the server answers.
PROBE_HOST = "rpc-readiness-probe"


@dataclass
class TTPRPCServer:
    """A running ``trusted-launch-ttp-rpc`` for ``ttp`` on ``topic``."""

    ttp: TTPServer
    transport_url: str
    topic: str
    config_file: pathlib.Path
    process: subprocess.Popen | None = None

    @property
    def log_file(self) -> pathlib.Path:
        return self.ttp.directory / f"rpc-{self.topic}.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def client(self, transport: oslo_messaging.Transport, *, url: str | None = None,
               topic: str | None = None, timeout: float = 30.0) -> RPCTTPClient:
        """A host's RPC client of this TTP (no bus retries, as the sandbox's HTTPS client)."""
        return RPCTTPClient(url or self.ttp.url, transport, topic=topic or self.topic,
                            timeout=timeout, retries=0)

    def start(self, transport: oslo_messaging.Transport) -> None:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trusted_launch.cmd.ttp_rpc", "--config-file",
                 str(self.ttp.config_file), "--config-file", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_until_serving(transport)
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self, transport: oslo_messaging.Transport) -> None:
        probe = self.client(transport, timeout=2.0)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"trusted-launch-ttp-rpc exited:\n{self.log()[-3000:]}")
            try:
                probe.host_challenge(PROBE_HOST)
            except AttestationRefused:
                return  # answered (host_unknown): serving
            except TTPUnreachable:
                time.sleep(0.2)
        raise RuntimeError(f"trusted-launch-ttp-rpc did not start:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status."""
        return terminate(self.process)


def rpc_transport(transport_url: str) -> oslo_messaging.Transport:
    """An oslo.messaging RPC transport for ``transport_url``.

    Over the global ``cfg.CONF``, as in nova-compute: oslo.messaging 18.3 reads
    options that it registers there only.
    """
    return oslo_messaging.get_rpc_transport(cfg.CONF, url=transport_url)


@contextlib.contextmanager
def start_ttp_rpc(ttp: TTPServer, transport: oslo_messaging.Transport, *, transport_url: str,
                  topic: str, debug: bool = False) -> Iterator[TTPRPCServer]:
    """``trusted-launch-ttp-rpc`` for ``ttp`` on ``topic``, stopped afterwards."""
    config = ttp.directory / f"rpc-{topic}.conf"
    config.write_text(f"""[DEFAULT]
transport_url = {transport_url}
debug = {str(debug).lower()}
[rpc]
topic = {topic}
ttp_url = {ttp.url}
server_name = sandbox
""")
    server = TTPRPCServer(ttp, transport_url, topic, config)
    server.start(transport)
    try:
        yield server
    finally:
        server.stop()
