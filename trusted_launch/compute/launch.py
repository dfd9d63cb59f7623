"""Steps 5-12 of the protocol on one compute host, for one instance.

:class:`TrustedLaunchHost` takes a warm bind key from the pool, certifies it
with the AK, sends the evidence to the TTP, opens the released secrets in the
TPM and checks the image digest. It knows nothing of Nova: the driver calls
:meth:`TrustedLaunchHost.release` before the guest exists and
:func:`check_image_digest` against the image it will boot.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trusted_launch.compute.errors import (
    ImageDigestMismatch,
    ReleaseUnusable,
    TTPProtocolError,
)
from trusted_launch.compute.release_receipt import ReceiptKeys, check_release_receipt
from trusted_launch.compute.ttp_client import BaseTTPClient, b64
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.errors import CryptoError, SealingError
from trusted_launch.crypto.sealing import ReleasedSecrets, open_from_bind_key, release_aad
from trusted_launch.crypto.token import ImageDigest, token_digest
from trusted_launch.tpm import bindkeys
from trusted_launch.tpm.errors import PCRPolicyMismatch, TPMError

LOG = logging.getLogger(__name__)


@dataclass
class StepTimer:
    """Milliseconds spent in each protocol step of one launch."""

    steps: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, started: float) -> None:
        self.steps[name] = self.steps.get(name, 0.0) + (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class HostIdentity:
    """How this host is known to the TTP."""

    host_name: str
    ak_certificate_pem: str


class TrustedLaunchHost:
    """The host side of the protocol over a TPM device and its bind-key pool."""

    def __init__(self, *, device, pool, identity: HostIdentity,
                 read_event_log: Callable[[], bytes], bind_key_pcrs: str,
                 receipt_keys: ReceiptKeys | None = None) -> None:
        """``receipt_keys``: the TTP's receipt keys; if given, each release is authenticated
        by its receipt (:mod:`.release_receipt`), as needed over an untrusted bus."""
        self._device = device
        self._pool = pool
        self._identity = identity
        self._read_event_log = read_event_log
        self._bind_key_pcrs = bind_key_pcrs
        self._receipt_keys = receipt_keys

    def release(self, ttp: BaseTTPClient, *, token: str, launch_id: str,
                timer: StepTimer | None = None) -> ReleasedSecrets:
        """Attest this host for ``launch_id`` and return {N, H} from the TTP."""
        timer = timer or StepTimer()
        return self.open(self.attest(ttp, token=token, launch_id=launch_id, timer=timer),
                         timer=timer)

    def attest(self, ttp: BaseTTPClient, *, token: str, launch_id: str,
               timer: StepTimer | None = None) -> PendingRelease:
        """Steps 5-11: certify a warm bind key, have the TTP judge this host."""
        timer = timer or StepTimer()
        bind_key, body = self.evidence(token=token, launch_id=launch_id, timer=timer)
        started = time.perf_counter()
        try:
            answer = ttp.attest(body)
        except BaseException:
            self._release_key(bind_key)
            raise
        timer.record("ttp", started)
        LOG.info("TTP %s accepted this host for %s (attestation %s)",
                 ttp.base_url, launch_id, answer.get("attestation_id"))
        receipt = answer.get("receipt")
        return PendingRelease(bind_key, launch_id, _released_envelope(answer),
                              str(answer.get("attestation_id", "")),
                              receipt if isinstance(receipt, dict) else None,
                              _token_digest(token))

    def evidence(self, *, token: str, launch_id: str, timer: StepTimer | None = None
                 ) -> tuple[object, dict]:
        """Steps 5-7: a warm bind key and the attestation request body for it."""
        timer = timer or StepTimer()
        started = time.perf_counter()
        bind_key = self._pool.acquire()
        timer.record("bind_key", started)
        started = time.perf_counter()
        qualifying = certify_qualifying_data(token, bind_key.name, launch_id)
        attest, signature = bindkeys.certify(self._device, bind_key, qualifying)
        timer.record("certify", started)
        return bind_key, self._attestation_body(token, launch_id, bind_key.public, attest,
                                                signature)

    def open(self, pending: PendingRelease, *, timer: StepTimer | None = None
             ) -> ReleasedSecrets:
        """Step 12: open the released secrets in the TPM, under the PCR policy.

        ReleaseUnusable if they do not open or this host's PCRs changed since
        Certify; ReleaseUnauthenticated if receipt keys are set and the receipt
        does not prove the TTP released them; any other TPMError (the TPM died,
        ran out of memory) is raised as it is: a fault of this host, which
        another host may not have.
        """
        timer = timer or StepTimer()
        started = time.perf_counter()
        key = pending.bind_key
        try:
            secrets = open_from_bind_key(
                pending.envelope, aad=release_aad(pending.launch_id, key.name),
                ecdh_zgen=lambda x, y: bindkeys.ecdh_zgen(self._device, key, (x, y)),
                rsa_decrypt=lambda ct, label: bindkeys.rsa_decrypt(self._device, key, ct,
                                                                   label))
        except SealingError as exc:
            raise ReleaseUnusable(f"released secrets do not open: {exc}") from None
        except PCRPolicyMismatch as exc:
            raise ReleaseUnusable(str(exc)) from None
        finally:
            self._release_key(key)
        if self._receipt_keys is not None:
            check_release_receipt(pending.receipt, self._receipt_keys,
                                  launch_id=pending.launch_id, host=self._identity.host_name,
                                  token_digest=pending.token_digest, released=secrets)
        timer.record("decrypt", started)
        return secrets

    def abandon(self, pending: PendingRelease) -> None:
        """A launch that ends before step 12 (its image or disks failed): free its key."""
        self._release_key(pending.bind_key)

    def _release_key(self, bind_key) -> None:
        """Unload the launch's bind key if it is still resident (no TPM command otherwise)."""
        try:
            bindkeys.release(self._device, bind_key)
        except TPMError as exc:
            LOG.warning("could not flush the launch's bind key: %s", exc)

    def _attestation_body(self, token: str, launch_id: str, public: bytes, attest: bytes,
                          signature: bytes) -> dict:
        return {
            "host": self._identity.host_name,
            "launch_id": launch_id,
            "token": token,
            "ak_certificate": self._identity.ak_certificate_pem,
            "bind_key_public": b64(public),
            "certify_info": b64(attest),
            "certify_signature": b64(signature),
            "event_log": b64(self._read_event_log()),
            "bind_key_pcrs": self._bind_key_pcrs,
        }



@dataclass(frozen=True)
class PendingRelease:
    """The TTP's answer for one launch, not yet opened in the TPM."""

    bind_key: object
    launch_id: str
    envelope: bytes = field(repr=False)
    attestation_id: str = ""
    receipt: dict | None = None  # the TTP's signed receipt of this decision
    token_digest: bytes = b""  # SHA-256 of the launch token (crypto.token.token_digest)


def _token_digest(token: str) -> bytes:
    """The token's digest; empty for a token that does not decode (no receipt matches it)."""
    try:
        return token_digest(token)
    except CryptoError:
        return b""


def _released_envelope(answer: dict) -> bytes:
    try:
        return base64.b64decode(answer["released"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise TTPProtocolError("TTP accepted but sent no valid 'released' field") from None


def check_image_digest(expected: ImageDigest, actual: bytes) -> None:
    """Refuse unless ``actual`` (of ``expected.algorithm``) equals the sealed digest."""
    if not hmac.compare_digest(expected.value, actual):
        raise ImageDigestMismatch(
            f"the image to boot has {expected.algorithm} digest {actual.hex()[:16]}..., "
            f"the tenant's token names {expected.value.hex()[:16]}...")
