"""The TTP as a real HTTPS server process, for the sandbox (tests and demo)."""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import requests

from trusted_launch.sandbox.pki import CertificateAuthority

BIN_DIR = pathlib.Path(sys.executable).parent
START_TIMEOUT_S = 30.0


def terminate(process: subprocess.Popen | None, timeout: float = 20) -> int | None:
    """SIGTERM ``process`` and wait (SIGKILL after ``timeout`` s); its exit status."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class TTPServer:
    """A running ``trusted-launch-ttp`` and what a client needs to talk to it."""

    directory: pathlib.Path
    config_file: pathlib.Path
    ca_file: pathlib.Path
    admin_token: str
    process: subprocess.Popen | None = None
    port: int = 0
    session: requests.Session = field(default_factory=requests.Session)
    #: The server program, run with ``--config-file``; default ``trusted-launch-ttp``.
    command: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """An HTTPS request that trusts the test CA."""
        kwargs.setdefault("verify", str(self.ca_file))
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request carrying the admin token."""
        headers = {"X-Auth-Token": self.admin_token, **kwargs.pop("headers", {})}
        return self.request(method, path, headers=headers, **kwargs)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``trusted-launch-ttp-manage --config-file <ours> ARGS``."""
        return subprocess.run(
            [str(BIN_DIR / "trusted-launch-ttp-manage"), "--config-file",
             str(self.config_file), *args],
            capture_output=True, text=True, timeout=60, check=False)

    def raw(self, head: bytes, body: bytes = b"") -> bytes:
        """Send bytes over a fresh TLS connection; the answer up to its JSON body's end."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as plain, \
                context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
            tls.sendall(head + body)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer

    def register_host(self, name: str, ek_certificate: bytes) -> None:
        """Register ``name`` with the EK certificate (DER) as the operator would."""
        fingerprint = hashlib.sha256(ek_certificate).hexdigest()
        answer = self.admin("PUT", f"/v1/hosts/{name}",
                            json={"ek_certificate_sha256": fingerprint})
        if answer.status_code == 409 and answer.json()["error"]["check"] == "host_registered":
            return
        if answer.status_code != 201:
            raise RuntimeError(f"registration of host {name} refused: {answer.text}")

    def create_token(self, role: str, host: str | None = None) -> str:
        """A new API token of ``role`` (a host token acts for ``host``)."""
        answer = self.admin("POST", "/v1/tokens", json={"role": role, "host": host})
        if answer.status_code != 201:
            raise RuntimeError(f"token for role {role} refused: {answer.text}")
        return answer.json()["token"]

    def put_profile(self, name: str, document: str) -> None:
        """Install a security-profile document (YAML or JSON) as the admin."""
        answer = self.admin("PUT", f"/v1/profiles/{name}", data=document.encode(),
                            headers={"Content-Type": "application/yaml"})
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"profile {name} refused: {answer.text}")

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")

    def start(self) -> None:
        port_file = self.directory / "port"
        port_file.unlink(missing_ok=True)
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [*(self.command or (str(BIN_DIR / "trusted-launch-ttp"),)), "--config-file",
                 str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"trusted-launch-ttp exited:\n{self.log()[-3000:]}")
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                try:
                    if self.request("GET", "/", timeout=5).status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"trusted-launch-ttp did not start:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status."""
        self.session.close()
        return terminate(self.process)


def write_ttp_config(directory: pathlib.Path, *, database_url: str, cert: pathlib.Path,
                     key: pathlib.Path, admin_token: str, ek_ca_files: list[pathlib.Path],
                     workers: int = 2, client_ca_file: pathlib.Path | None = None,
                     profile_dir: pathlib.Path | None = None,
                     api_options: Mapping[str, object] | None = None) -> pathlib.Path:
    """A complete TTP config file in ``directory`` (listening on an ephemeral port).

    ``api_options``: more ``[api]`` options (server deadlines and caps, threads).
    """
    config = directory / "ttp.conf"
    client_ca = f"client_ca_file = {client_ca_file}" if client_ca_file else ""
    options = {"threads": 4, **(api_options or {})}
    extra = "\n".join(f"{name} = {value}" for name, value in options.items())
    config.write_text(f"""[DEFAULT]
debug = false
[api]
bind_host = 127.0.0.1
bind_port = 0
port_file = {directory / 'port'}
cert_file = {cert}
key_file = {key}
{client_ca}
workers = {workers}
{extra}
max_request_body_size = 262144
admin_token_hash = {hashlib.sha256(admin_token.encode()).hexdigest()}
[database]
connection = {database_url}
[key_store]
key_dir = {directory / 'keys'}
rotation_overlap = 3600
attestation_ca_cert = {directory / 'ca' / 'ak-ca.pem'}
attestation_ca_key = {directory / 'ca' / 'ak-ca.key'}
[enrollment]
ek_ca_files = {','.join(str(p) for p in ek_ca_files)}
[attestation]
{f"profile_dir = {profile_dir}" if profile_dir else ""}
""")
    return config


@contextlib.contextmanager
def start_ttp(directory: pathlib.Path, *, tls_ca: CertificateAuthority,
              ek_ca_files: list[pathlib.Path], database_url: str | None = None,
              workers: int = 1, profiles_dir: pathlib.Path | None = None,
              debug: bool = False, api_options: Mapping[str, object] | None = None
              ) -> Iterator[TTPServer]:
    """A synced database, a TLS certificate from ``tls_ca``, the server running.

    ``profiles_dir``: install every ``*.yaml`` profile in it through the API.
    ``debug``: log at DEBUG, every SQL statement with its parameters included.
    ``api_options``: more ``[api]`` options (see :func:`write_ttp_config`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = tls_ca.issue("ttp-server")
    admin_token = secrets.token_urlsafe(24)
    config = write_ttp_config(
        directory, database_url=database_url or f"sqlite:///{directory / 'ttp.sqlite'}",
        cert=cert, key=key, admin_token=admin_token, ek_ca_files=ek_ca_files, workers=workers,
        api_options=api_options)
    if debug:
        config.write_text(config.read_text().replace(
            "debug = false", "debug = true\ndefault_log_levels = sqlalchemy.engine=INFO", 1))
    server = TTPServer(directory, config, tls_ca.cert_file, admin_token)
    synced = server.manage("db", "sync")
    if synced.returncode != 0:
        raise RuntimeError(f"trusted-launch-ttp-manage db sync failed: {synced.stderr}")
    server.start()
    try:
        for profile in sorted(profiles_dir.glob("*.yaml")) if profiles_dir else ():
            server.put_profile(profile.stem, profile.read_text())
        yield server
    finally:
        server.stop()
