"""Fixtures of the security suite: the real TTP over HTTPS and swtpm hosts, shared per package.

One TTP (SQLite, debug logging on, so the secrets-hygiene test sees every
log line) and two enrolled hosts are started once for the whole package:
``trusted`` boots a Secure Boot firmware log and meets every profile,
``untrusted`` boots a log without Secure Boot and meets only ``low``. Tests
that kill or break things start their own TTP with :func:`running_ttp`.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.enrollment import enroll_host
from trusted_launch.compute.launch import HostIdentity, TrustedLaunchHost
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.crypto.token import ImageDigest
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import SwtpmProcess
from trusted_launch.sandbox.ttp_process import TTPServer, write_ttp_config
from trusted_launch.tpm import BindKeyPool, TPMDevice

PROFILES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples" / "profiles"
BIND_KEY_PCRS = "sha256:0,1,2,3,4,5,6,7"
TRUSTED_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"
UNTRUSTED_LOG = EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog"

pytestmark = pytest.mark.swtpm


@dataclass
class Host:
    """A simulated compute host: swtpm, the TPM layer, the protocol runner."""

    name: str
    tpm: SwtpmProcess
    device: TPMDevice
    pool: BindKeyPool
    runner: TrustedLaunchHost
    event_log: pathlib.Path

    def close(self) -> None:
        self.device.close()
        self.tpm.stop()


@contextlib.contextmanager
def running_ttp(directory: pathlib.Path, *, tls_ca: CertificateAuthority,
                ek_ca_files: list[pathlib.Path], database_url: str | None = None,
                debug: bool = True) -> Iterator[TTPServer]:
    """The real ``trusted-launch-ttp`` (one worker) on a synced database, with profiles."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = tls_ca.issue("ttp-server")
    admin_token = secrets.token_urlsafe(24)
    config = write_ttp_config(
        directory, database_url=database_url or f"sqlite:///{directory / 'ttp.sqlite'}",
        cert=cert, key=key, admin_token=admin_token, ek_ca_files=ek_ca_files, workers=1)
    if debug:  # DEBUG, and every SQL statement with its parameters
        config.write_text(config.read_text().replace(
            "debug = false", "debug = true\ndefault_log_levels = sqlalchemy.engine=INFO", 1))
    server = TTPServer(directory, config, tls_ca.cert_file, admin_token)
    synced = server.manage("db", "sync")
    if synced.returncode != 0:
        raise RuntimeError(f"trusted-launch-ttp-manage db sync failed: {synced.stderr}")
    server.start()
    try:
        for name in ("low", "medium", "high"):
            server.put_profile(name, (PROFILES_DIR / f"{name}.yaml").read_text())
        yield server
    finally:
        server.stop()


def ttp_client(ttp: TTPServer, url: str | None = None, **kwargs) -> TTPClient:
    """A host's client of ``ttp`` (TLS verified against the sandbox CA, no retries)."""
    kwargs.setdefault("connect_retries", 0)
    return TTPClient(url or ttp.url, ca_file=str(ttp.ca_file), **kwargs)


def start_host(name: str, state: pathlib.Path, ca, event_log: pathlib.Path,
               ttp: TTPServer | None) -> Host:
    """A booted swtpm host, enrolled at ``ttp`` (unless None), with a warm bind-key pool."""
    tpm = SwtpmProcess(state, ca)
    tpm.start()
    try:
        tpm.boot(event_log)
        device = TPMDevice(tpm.tcti)
    except BaseException:
        tpm.stop()
        raise
    certificate = enroll_host(device, ttp_client(ttp), name) if ttp is not None else ""
    pool = BindKeyPool(device, algorithm="ecc", pcr_selection=BIND_KEY_PCRS, size=2)
    pool.fill()
    runner = TrustedLaunchHost(device=device, pool=pool,
                               identity=HostIdentity(name, certificate),
                               read_event_log=event_log.read_bytes,
                               bind_key_pcrs=BIND_KEY_PCRS)
    return Host(name, tpm, device, pool, runner, event_log)


@pytest.fixture(scope="package")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The CA of the TTP's HTTPS certificate."""
    return CertificateAuthority(tmp_path_factory.mktemp("security-tls-ca"))


@pytest.fixture(scope="package")
def ttp(swtpm_state_cache, tls_ca: CertificateAuthority,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TTPServer]:
    """The shared TTP: SQLite, debug logging, profiles low/medium/high installed."""
    swtpm_state_cache.state(0)  # manufactures the EK CA
    with running_ttp(tmp_path_factory.mktemp("security-ttp"), tls_ca=tls_ca,
                     ek_ca_files=swtpm_state_cache.ca.ek_ca_certs) as server:
        yield server


@pytest.fixture(scope="package")
def hosts(ttp: TTPServer, swtpm_state_cache) -> Iterator[dict[str, Host]]:
    """``trusted`` and ``untrusted`` hosts, enrolled at the shared TTP."""
    suffix = secrets.token_hex(3)
    started: dict[str, Host] = {}
    try:
        for index, (role, log) in enumerate((("trusted", TRUSTED_LOG),
                                             ("untrusted", UNTRUSTED_LOG))):
            started[role] = start_host(f"{role}-{suffix}", swtpm_state_cache.state(index),
                                       swtpm_state_cache.ca, log, ttp)
        yield started
    finally:
        for host in started.values():
            host.close()


@pytest.fixture(scope="package")
def image(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A 1 MiB image file (the bytes a host would boot)."""
    path = tmp_path_factory.mktemp("security-image") / "image.raw"
    path.write_bytes(secrets.token_bytes(1 << 20))
    return path


@pytest.fixture
def tenant(ttp: TTPServer, image: pathlib.Path,
           tmp_path: pathlib.Path) -> Callable[..., tuple[str, bytes]]:
    """``make(profile, image_digest=None, ttp=None) -> (token, N)`` via the client library."""
    digest = digest_file(image, "sha512")

    def make(profile: str = "high", image_digest: ImageDigest | None = None,
             server: TTPServer | None = None, **kwargs) -> tuple[str, bytes]:
        target = server or ttp
        token, nonce_path = create_launch_token(
            target.url, profile, image_digest or digest, ca_file=str(target.ca_file),
            nonce_dir=tmp_path, **kwargs)
        return token, read_nonce_file(nonce_path)

    return make
