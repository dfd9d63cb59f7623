"""Periodic re-attestation of this compute host (continuous attestation, host side).

Every ``interval`` seconds :class:`HostMonitor` asks the TTP for a fresh
nonce, has the TPM quote the static boot PCRs (plus PCR 10 when an IMA list
is configured) with the AK over that nonce, and sends the quote, the
firmware event log and the part of the IMA list the TTP has not replayed yet
(from the byte offset the TTP returned last time). The TTP answers with this
host's status: the strongest security profile it meets now, or none. The
driver stops advertising its profile traits while that status is below the
configured profile; the TTP announces the change to the schedulers.
"""

from __future__ import annotations

import base64
import logging
import pathlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trusted_launch.compute.errors import (
    AttestationRefused,
    LaunchRefused,
    TTPProtocolError,
    TTPUnreachable,
)
from trusted_launch.compute.ttp_client import BaseTTPClient, b64
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.tpm2 import PCRSelection
from trusted_launch.tpm.errors import TPMError

LOG = logging.getLogger(__name__)

IMA_PCR = 10
# Refusals about the nonce, not about this host: anyone may ask the TTP for this
# host's nonces and so push ours out. Retried once, then treated like an outage.
NONCE_REFUSALS = frozenset({"nonce_unknown", "nonce_expired"})
_IMA_BANKS = (HashAlg.SHA1, HashAlg.SHA256)


@dataclass(frozen=True)
class HostStatusReport:
    """This host's status after one round: ``profile`` None means untrusted."""

    profile: str | None
    check: str | None
    reason: str | None
    checked_at: float  # local time.time()
    from_ttp: bool = True  # False: the round failed here (TPM, TTP refusal)


def quote_selection(pcr_selection: str, *, with_ima: bool) -> str:
    """The PCRs to quote: ``pcr_selection``, plus PCR 10 in its sha1/sha256 banks for IMA."""
    selection = PCRSelection.from_spec(pcr_selection)
    if not with_ima:
        return str(selection)
    banks = {alg: [*pcrs, IMA_PCR] if alg in _IMA_BANKS else list(pcrs)
             for alg, pcrs in selection.banks}
    if not any(alg in _IMA_BANKS for alg in banks):
        banks[HashAlg.SHA256] = [IMA_PCR]
    return str(PCRSelection.of(banks))


def read_from(path: str, offset: int) -> bytes:
    """The bytes of ``path`` from ``offset`` on (IMA lists only grow until reboot)."""
    with pathlib.Path(path).open("rb") as stream:
        stream.seek(offset)
        return stream.read()


def below(status: HostStatusReport | None, profile: str | None,
          profiles: Sequence[str]) -> bool:
    """True if ``status`` is known and weaker than ``profile`` in the ordered ``profiles``."""
    if status is None or not profile:
        return False
    if status.profile is None:
        return True
    order = list(profiles)
    if profile not in order:
        return status.profile != profile
    return status.profile not in order or order.index(status.profile) < order.index(profile)


class HostMonitor:
    """Attests this host to the TTP every ``interval`` seconds from a daemon thread."""

    def __init__(self, *, device, ttp: BaseTTPClient, host_name: str,
                 read_event_log: Callable[[], bytes], pcr_selection: str,
                 ima_list_path: str | None = None, interval: float = 60.0,
                 on_status: Callable[[HostStatusReport], None] | None = None) -> None:
        self._device = device
        self._ttp = ttp
        self.host_name = host_name
        self._read_event_log = read_event_log
        self._ima_list_path = ima_list_path
        self.selection = quote_selection(pcr_selection, with_ima=ima_list_path is not None)
        self.interval = interval
        self._on_status = on_status
        self._ima_offset = 0
        self.last: HostStatusReport | None = None
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # one round ---------------------------------------------------------------

    def run_once(self) -> HostStatusReport:
        """One attestation round; records and returns this host's status.

        A TTP that cannot be reached leaves the last status as it was
        (TTPUnreachable is raised); a refusal or a TPM failure makes the host
        untrusted in its own eyes until the next good round.
        """
        try:
            answer = self._attest_retrying_nonce()
        except TTPUnreachable:
            raise
        except LaunchRefused as exc:
            report = HostStatusReport(None, exc.check, exc.reason, time.time(), from_ttp=False)
        except TPMError as exc:
            report = HostStatusReport(None, "tpm", str(exc), time.time(), from_ttp=False)
        except OSError as exc:
            report = HostStatusReport(None, "host_evidence", f"cannot read a log: {exc}",
                                      time.time(), from_ttp=False)
        else:
            report = self._report(answer)
        self._record(report)
        return report

    def _attest_retrying_nonce(self) -> dict:
        try:
            return self._attest()
        except AttestationRefused as exc:
            if exc.check not in NONCE_REFUSALS:
                raise
        try:
            return self._attest()
        except AttestationRefused as exc:
            if exc.check not in NONCE_REFUSALS:
                raise
            raise TTPUnreachable(f"the TTP refused two fresh nonces in a row "
                                 f"({exc.check}); keeping the last status") from None

    def _attest(self) -> dict:
        challenge = self._ttp.host_challenge(self.host_name)
        nonce = _b64decode(challenge.get("nonce"))
        attest, signature = self._device.quote(self.selection, nonce)
        body = {"nonce": b64(nonce), "quote": b64(attest), "signature": b64(signature),
                "event_log": b64(self._read_event_log())}
        if self._ima_list_path is not None:
            offset = self._ima_offset
            body["ima_log"] = b64(read_from(self._ima_list_path, offset))
            body["ima_offset"] = offset
        return self._ttp.host_attestation(self.host_name, body)

    def _report(self, answer: dict) -> HostStatusReport:
        offset = answer.get("ima_offset")
        if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
            self._ima_offset = offset
        profile = answer.get("profile")
        return HostStatusReport(profile if isinstance(profile, str) else None,
                                _text(answer.get("check")), _text(answer.get("reason")),
                                time.time())

    def _record(self, report: HostStatusReport) -> None:
        previous, self.last = self.last, report
        self.rounds += 1
        if previous is None or previous.profile != report.profile:
            (LOG.warning if report.profile is None else LOG.info)(
                "host %s attestation status: %s (%s)", self.host_name,
                report.profile or "untrusted", report.reason or "meets every profile")
        if self._on_status is not None:
            self._on_status(report)

    # the thread ----------------------------------------------------------------

    def start(self, initial_delay: float | None = 0.0) -> None:
        """Run a round after ``initial_delay`` s, then every ``interval`` s, until :meth:`stop`.

        ``None``: a random delay below one interval, so that hosts started
        together do not all attest at the same moment.
        """
        if initial_delay is None:
            initial_delay = random.uniform(0, self.interval)  # noqa: S311 - not a secret
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(initial_delay,), daemon=True,
                                        name="trusted-launch-host-monitor")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self, initial_delay: float) -> None:
        self._stop.wait(initial_delay)
        while not self._stop.is_set():
            try:
                self.run_once()
            except TTPUnreachable as exc:
                LOG.warning("periodic attestation: %s", exc)
            except Exception:  # the monitor must outlive any single round
                LOG.exception("periodic attestation round failed")
            self._stop.wait(self.interval)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _b64decode(value: object) -> bytes:
    try:
        return base64.b64decode(value, validate=True)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TTPProtocolError("TTP challenge carries no valid base64 nonce") from None
