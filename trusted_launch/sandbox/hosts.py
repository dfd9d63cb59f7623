"""Simulated compute hosts: a booted swtpm, enrolled at the TTP, ready to launch."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

from trusted_launch.compute.enrollment import enroll_host
from trusted_launch.compute.launch import HostIdentity, TrustedLaunchHost
from trusted_launch.compute.release_receipt import ReceiptKeys
from trusted_launch.compute.ttp_client import BaseTTPClient, TTPClient
from trusted_launch.sandbox.swtpm import LocalCA, SwtpmProcess
from trusted_launch.sandbox.ttp_process import TTPServer
from trusted_launch.tpm import BindKeyPool, TPMDevice

BIND_KEY_PCRS = "sha256:0,1,2,3,4,5,6,7"


@dataclass
class SandboxHost:
    """One simulated compute host: its swtpm, TPM layer and protocol runner."""

    name: str
    tpm: SwtpmProcess
    device: TPMDevice
    pool: BindKeyPool
    runner: TrustedLaunchHost
    event_log: pathlib.Path

    def close(self) -> None:
        self.device.close()
        self.tpm.stop()


def ttp_client(ttp: TTPServer, url: str | None = None, **kwargs) -> TTPClient:
    """A host's client of ``ttp``: TLS verified against the sandbox CA, no retries."""
    kwargs.setdefault("connect_retries", 0)
    return TTPClient(url or ttp.url, ca_file=str(ttp.ca_file), **kwargs)


def register_and_enroll(device: TPMDevice, ttp: TTPServer, name: str) -> str:
    """The operator registers ``name`` with this TPM's EK, then the host enrolls; its AK cert."""
    ttp.register_host(name, device.ek_certificate())
    return enroll_host(device, ttp_client(ttp), name)


def start_host(name: str, state: pathlib.Path, ca: LocalCA, event_log: pathlib.Path,
               ttp: TTPServer | None, *, pool_size: int = 4,
               algorithm: str = "ecc", client: BaseTTPClient | None = None,
               receipt_keys: ReceiptKeys | None = None) -> SandboxHost:
    """Boot ``event_log`` into a fresh swtpm; register and enrol it at ``ttp`` (unless None).

    ``client``: enrol through it (for example over RPC) instead of HTTPS.
    ``receipt_keys``: authenticate each release by the TTP's receipt (as over RPC).
    """
    tpm = SwtpmProcess(state, ca)
    tpm.start()
    try:
        tpm.boot(event_log)
        device = TPMDevice(tpm.tcti)
    except BaseException:
        tpm.stop()
        raise
    try:
        certificate = ""
        if ttp is not None:
            ttp.register_host(name, device.ek_certificate())
            certificate = enroll_host(device, client or ttp_client(ttp), name)
        pool = BindKeyPool(device, algorithm=algorithm, pcr_selection=BIND_KEY_PCRS,
                           size=pool_size)
        pool.fill()
    except BaseException:
        device.close()
        tpm.stop()
        raise
    runner = TrustedLaunchHost(device=device, pool=pool,
                               identity=HostIdentity(name, certificate),
                               read_event_log=event_log.read_bytes,
                               bind_key_pcrs=BIND_KEY_PCRS, receipt_keys=receipt_keys)
    return SandboxHost(name, tpm, device, pool, runner, event_log)


@contextlib.contextmanager
def running_host(*args, **kwargs) -> Iterator[SandboxHost]:
    """:func:`start_host` as a context manager that stops the host afterwards."""
    host = start_host(*args, **kwargs)
    try:
        yield host
    finally:
        host.close()
