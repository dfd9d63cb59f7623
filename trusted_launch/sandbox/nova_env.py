"""Real parts around Nova for trusted launch: a TTP over HTTPS, swtpm hosts, tokens.

:class:`TrustedEnvironment` runs the real ``trusted-launch-ttp`` (SQLite),
defines two security profiles there, starts one swtpm per compute host,
replays a real firmware event log into each, and enrols each host through
``trusted-launch host enroll`` (EK certificate, MakeCredential /
ActivateCredential, AK certificate). Tenants make tokens with the real
client code (``create_launch_token``). Used by the demo's Nova stage and the
Nova tests; a development stand-in, never part of a deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.cmd import cli
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import StateCache, SwtpmProcess
from trusted_launch.sandbox.ttp_process import TTPServer, write_ttp_config
from trusted_launch.tpm import TPMDevice

#: A real log with Secure Boot: a host booted from it meets "high".
SECUREBOOT_LOG_NAME = "secureboot_binary_bios_measurements"
#: A real log without Secure Boot: a host booted from it cannot meet "high".
NO_SECURE_BOOT_LOG_NAME = "ubuntu_2104_shielded_vm_no_secure_boot_eventlog"
PROFILES = {
    "low": {"name": "low", "level": 10, "require_secure_boot": False},
    "high": {"name": "high", "level": 30, "require_secure_boot": True},
}


@dataclass
class TrustedHost:
    """One simulated compute host: its TPM, event log file and AK certificate."""

    name: str
    tpm: SwtpmProcess
    event_log_file: pathlib.Path
    ak_cert_file: pathlib.Path


class TrustedEnvironment:
    """The TTP, enrolled hosts and the paths the compute driver needs."""

    def __init__(self, directory: pathlib.Path, state_cache: StateCache,
                 ca: CertificateAuthority) -> None:
        self.directory = directory
        self.state_cache = state_cache
        self.ca = ca
        self.ttp: TTPServer | None = None
        self.hosts: dict[str, TrustedHost] = {}
        self.closed_port_url = f"https://127.0.0.1:{_closed_port()}"

    @property
    def ttp_url(self) -> str:
        return self.ttp.url

    def start(self, host_logs: dict[str, pathlib.Path]) -> None:
        self._start_ttp()
        for index, (name, log) in enumerate(host_logs.items()):
            self.hosts[name] = self._start_host(name, index, log)

    def _start_ttp(self) -> None:
        directory = self.directory / "ttp"
        directory.mkdir()
        self.state_cache.state(0)  # manufacturing a state creates the EK CA files
        cert, key = self.ca.issue("ttp-nova")
        admin_token = secrets.token_urlsafe(24)
        config = write_ttp_config(
            directory, database_url=f"sqlite:///{directory / 'ttp.sqlite'}", cert=cert,
            key=key, admin_token=admin_token, ek_ca_files=self.state_cache.ca.ek_ca_certs,
            workers=1)
        self.ttp = TTPServer(directory, config, self.ca.cert_file, admin_token)
        synced = self.ttp.manage("db", "sync")
        if synced.returncode != 0:
            raise RuntimeError(f"ttp db sync failed: {synced.stderr}")
        self.ttp.start()
        for name, document in PROFILES.items():
            answer = self.ttp.admin("PUT", f"/v1/profiles/{name}", json=document)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"profile {name}: {answer.status_code} {answer.text}")

    def _start_host(self, name: str, index: int, log: pathlib.Path) -> TrustedHost:
        tpm = SwtpmProcess(self.state_cache.state(index), self.state_cache.ca)
        tpm.start()
        tpm.boot(log)
        event_log_file = self.directory / f"{name}.binary_bios_measurements"
        event_log_file.write_bytes(tpm.event_log)
        ak_cert_file = self.directory / f"{name}-ak.pem"
        with TPMDevice(tpm.tcti) as device:  # the operator registers the host's TPM
            self.ttp.register_host(name, device.ek_certificate())
        status = cli.main(["host", "enroll", "--ttp", self.ttp_url, "--host", name,
                           "--ak-cert-out", str(ak_cert_file), "--tcti", tpm.tcti,
                           "--ttp-ca-file", str(self.ca.cert_file)])
        if status != 0:
            raise RuntimeError(f"enrollment of {name} failed (status {status})")
        return TrustedHost(name, tpm, event_log_file, ak_cert_file)

    def make_token(self, profile: str, image_bytes: bytes) -> tuple[str, bytes]:
        """(token, N) as the tenant's tooling makes them for ``image_bytes``."""
        digest = ImageDigest("sha256", hashlib.sha256(image_bytes).digest())
        token, nonce_path = create_launch_token(
            self.ttp_url, profile, digest, ca_file=str(self.ca.cert_file),
            nonce_dir=self.directory / "nonces")
        return token, read_nonce_file(nonce_path)

    def stop(self) -> None:
        for host in self.hosts.values():
            host.tpm.stop()
        if self.ttp is not None:
            self.ttp.stop()


@contextlib.contextmanager
def running_environment(directory: pathlib.Path, state_cache: StateCache,
                        host_logs: dict[str, pathlib.Path]) -> Iterator[TrustedEnvironment]:
    """A started :class:`TrustedEnvironment` in ``directory`` (made), stopped afterwards."""
    ca = CertificateAuthority(directory / "ttp-pki")
    (directory / "env").mkdir(parents=True)
    env = TrustedEnvironment(directory / "env", state_cache, ca)
    try:
        env.start(host_logs)
        yield env
    finally:
        env.stop()


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = ["NO_SECURE_BOOT_LOG_NAME", "PROFILES", "SECUREBOOT_LOG_NAME", "TrustedEnvironment",
           "TrustedHost", "running_environment"]
