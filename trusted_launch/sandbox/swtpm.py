"""Real software TPMs (swtpm): one process per simulated compute host.

Used by the test fixtures and by ``trusted-launch demo``; a development
stand-in for a host's hardware TPM, never part of a deployment.

Manufacturing a TPM with an EK certificate (``swtpm_setup --create-ek-cert``)
takes about a second (RSA key generation), so each test session manufactures
a few TPM states once, with its own local CA (never /var/lib/swtpm-localca),
and every :class:`SwtpmProcess` runs on a private copy of one of them.  States
with different indices have different EKs, so ``swtpm_factory(3)`` gives three
distinct hosts.  Ports are ephemeral and picked per process, so several
instances (and pytest-xdist workers) run side by side.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from trusted_launch.evidence.eventlog import parse_event_log

LOCALCA_OPTIONS = pathlib.Path("/etc/swtpm-localca.options")
PCR_BANKS = "sha1,sha256"
START_TIMEOUT_S = 10.0
_CMD_GET_CAPABILITY = 1
_EV_NO_ACTION = 3
_BANK_FIELDS = {0x04: "sha1", 0x0B: "sha256", 0x0C: "sha384", 0x0D: "sha512"}


class SwtpmError(RuntimeError):
    """swtpm or swtpm_setup failed."""


class LocalCA:
    """A private swtpm_localca: its config files and the CA certificates it makes."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.localca_conf = directory / "swtpm-localca.conf"
        self.setup_conf = directory / "swtpm_setup.conf"
        self.localca_conf.write_text(
            f"statedir = {directory}\n"
            f"signingkey = {directory / 'signkey.pem'}\n"
            f"issuercert = {directory / 'issuercert.pem'}\n"
            f"certserial = {directory / 'certserial'}\n")
        options = LOCALCA_OPTIONS if LOCALCA_OPTIONS.exists() else directory / "none.options"
        if not options.exists():
            options.write_text("")
        self.setup_conf.write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {self.localca_conf}\n"
            f"create_certs_tool_options = {options}\n"
            f"active_pcr_banks = {PCR_BANKS}\n")

    @property
    def ek_ca_certs(self) -> list[pathlib.Path]:
        """PEM files of the EK issuer (intermediate) and root CA."""
        return [self.directory / "issuercert.pem",
                self.directory / "swtpm-localca-rootca-cert.pem"]


def manufacture(state_dir: pathlib.Path, ca: LocalCA) -> None:
    """Run swtpm_setup: EK (RSA 2048 and ECC) with certificates, sha1+sha256 banks."""
    state_dir.mkdir(parents=True, exist_ok=True)
    command = ["swtpm_setup", "--tpm2", "--tpmstate", str(state_dir),
               "--config", str(ca.setup_conf), "--create-ek-cert",
               "--create-platform-cert", "--lock-nvram", "--overwrite",
               "--pcr-banks", PCR_BANKS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0:
        raise SwtpmError(f"swtpm_setup failed ({result.returncode}): {result.stderr[-2000:]}")


class StateCache:
    """Manufactured TPM states, made on demand and shared by one test session."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.ca = LocalCA(root / "ca")
        self._lock = threading.Lock()

    def state(self, index: int) -> pathlib.Path:
        """Directory of manufactured state ``index`` (distinct EK per index)."""
        path = self.root / f"state-{index}"
        with self._lock:
            if not (path / "tpm2-00.permall").exists():
                manufacture(path, self.ca)
        return path


def free_port_pair() -> int:
    """A port P such that P and P+1 were both free on 127.0.0.1 a moment ago."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise SwtpmError("no free pair of TCP ports on 127.0.0.1")


class SwtpmProcess:
    """A running ``swtpm socket --tpm2`` on a private copy of a TPM state."""

    def __init__(self, state_source: pathlib.Path, ca: LocalCA) -> None:
        self.state_source = state_source
        self.ca = ca
        self.state_dir: pathlib.Path | None = None
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.event_log: bytes | None = None

    @property
    def tcti(self) -> str:
        """Our configuration string for this TPM (see trusted_launch.tpm.tcti)."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def ek_ca_certs(self) -> list[pathlib.Path]:
        return self.ca.ek_ca_certs

    def __enter__(self) -> SwtpmProcess:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Copy the state, start swtpm on fresh ports (retrying on conflicts), wait."""
        self.state_dir = pathlib.Path(tempfile.mkdtemp(prefix="swtpm-"))
        for name in os.listdir(self.state_source):
            if not name.startswith("."):
                shutil.copy2(self.state_source / name, self.state_dir / name)
        last_error = ""
        for _ in range(5):
            self.port = free_port_pair()
            self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
            last_error = self._wait_ready()
            if not last_error:
                return
            self._terminate()
        self._remove_state()
        raise SwtpmError(f"swtpm did not start: {last_error}")

    def _command(self) -> list[str]:
        return ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear"]

    def _wait_ready(self) -> str:
        """'' once the control channel answers GET_CAPABILITY, else the reason."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return self.process.stderr.read().decode(errors="replace")[-500:]
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.ctrl_port), 1) as ctrl:
                    ctrl.sendall(struct.pack(">I", _CMD_GET_CAPABILITY))
                    if len(ctrl.recv(8)) == 8:
                        return ""
            time.sleep(0.01)
        return "timeout waiting for the control channel"

    def restart(self) -> None:
        """Power-cycle: stop the process, start it again on the same state."""
        self._terminate()
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        error = self._wait_ready()
        if error:
            raise SwtpmError(f"swtpm did not restart: {error}")

    def kill(self) -> None:
        """SIGKILL the process (fault injection); the state stays until stop()."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        """Stop swtpm and remove its state directory (idempotent)."""
        self._terminate()
        self._remove_state()

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process.stderr.close()
        self.process = None

    def _remove_state(self) -> None:
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None

    def boot(self, event_log_path: pathlib.Path) -> None:
        """Extend every measured event of a firmware log into the PCRs (see :func:`boot`)."""
        boot(self.port, event_log_path)
        self.event_log = event_log_path.read_bytes()


def boot(port: int, event_log_path: pathlib.Path) -> None:
    """Extend every measured event of a firmware log into the swtpm on ``port``.

    Afterwards the PCRs of the banks both the log and the TPM have equal the
    log's replay.  Logs with a StartupLocality event cannot be reproduced by
    extends and are refused.
    """
    from tpm2_pytss import ESAPI, TCTILdr
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPML_DIGEST_VALUES

    data = event_log_path.read_bytes()
    with ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={port}")) as ectx:
        banks = _active_banks(ectx)
        for pcr, digests in _measurements(data, event_log_path.name):
            values = [tpmt_ha(alg, digest) for alg, digest in digests.items() if alg in banks]
            if values:
                ectx.pcr_extend(ESYS_TR(pcr), TPML_DIGEST_VALUES(values))


def _measurements(data: bytes, name: str) -> list[tuple[int, dict[int, bytes]]]:
    """(PCR, {alg id: digest}) of each extended event, in log order."""
    log = parse_event_log(data)
    if log.startup_locality not in (None, 0):
        raise SwtpmError(f"{name}: a StartupLocality log cannot be replayed by extends")
    return [(event.pcr, {int(alg): digest for alg, digest in event.digests.items()})
            for event in log.events if event.event_type != _EV_NO_ACTION]


def tpmt_ha(alg: int, digest: bytes):
    from tpm2_pytss.types import TPMT_HA

    value = TPMT_HA(hashAlg=alg)
    setattr(value.digest, _BANK_FIELDS[alg], digest)
    return value


def _active_banks(ectx) -> set[int]:
    from tpm2_pytss.constants import TPM2_CAP

    _, data = ectx.get_capability(TPM2_CAP.PCRS, 0, 16)
    return {int(s.hash) for s in data.data.assignedPCR
            if any(s.pcrSelect[i] for i in range(s.sizeofSelect))}




def extend_pcr(device, pcr: int, data: bytes) -> None:
    """Measure ``data`` into ``pcr`` of every bank of a TPMDevice (host state change)."""
    import hashlib

    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPML_DIGEST_VALUES

    with device.esapi("PCR_Extend") as ectx:
        values = [tpmt_ha(alg, hashlib.new(_BANK_FIELDS[alg], data).digest())
                  for alg in sorted(_active_banks(ectx))]
        ectx.pcr_extend(ESYS_TR(pcr), TPML_DIGEST_VALUES(values))
