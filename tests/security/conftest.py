"""Fixtures of the security suite: the real TTP over HTTPS and swtpm hosts, shared per package.

One TTP (SQLite, debug logging on, so the secrets-hygiene test sees every
log line) and two enrolled hosts are started once for the whole package:
``trusted`` boots a Secure Boot firmware log and meets every profile,
``untrusted`` boots a log without Secure Boot and meets only ``low``. Tests
that kill or break things start their own TTP with :func:`running_ttp`.
"""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.crypto.token import ImageDigest
from trusted_launch.sandbox.hosts import SandboxHost
from trusted_launch.sandbox.hosts import start_host as sandbox_start_host
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp

PROFILES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples" / "profiles"
TRUSTED_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"
UNTRUSTED_LOG = EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog"

pytestmark = pytest.mark.swtpm


Host = SandboxHost


def running_ttp(directory: pathlib.Path, *, tls_ca: CertificateAuthority,
                ek_ca_files: list[pathlib.Path], database_url: str | None = None,
                debug: bool = True):
    """The real ``trusted-launch-ttp`` (one worker) on a synced database, with profiles."""
    return start_ttp(directory, tls_ca=tls_ca, ek_ca_files=ek_ca_files,
                     database_url=database_url, profiles_dir=PROFILES_DIR, debug=debug)


def start_host(name: str, state: pathlib.Path, ca, event_log: pathlib.Path,
               ttp: TTPServer | None) -> Host:
    """A booted swtpm host, enrolled at ``ttp`` (unless None), with a warm bind-key pool."""
    return sandbox_start_host(name, state, ca, event_log, ttp, pool_size=2)


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
