"""One TPM, one ESAPI context, one command sequence at a time."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# The TSS C libraries print their own error lines to stderr for failures this
# module already turns into exceptions (an absent persistent handle, a policy
# failure). Keep them quiet unless the operator asks for them.
os.environ.setdefault("TSS2_LOG", "all+NONE")

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_HC, TPM2_SE, TPM2_SU
from tpm2_pytss.types import TPMT_SYM_DEF

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.tpm import keys
from trusted_launch.tpm.errors import TPMCommandError, TPMError, TPMUnavailable
from trusted_launch.tpm.tcti import TCTISpec, open_tcti, parse_tcti
from trusted_launch.tpm.templates import PCRSelection

LOG = logging.getLogger(__name__)

DEFAULT_SRK_HANDLE = 0x81000001
DEFAULT_AK_HANDLE = 0x81010002
COMMAND_LOG_SIZE = 64  # recent TPM command names, for benchmarks and tests
_TCTI_LAYER = 0x0A0000
_LAYER_MASK = 0xFF0000
_TPM_RC_INITIALIZE = 0x100
_SIMULATORS = frozenset({"swtpm", "mssim"})
# ESAPI helpers that do not talk to the TPM (not counted as TPM commands).
_LOCAL_CALLS = frozenset({"tr_set_auth", "tr_get_name", "trsess_set_attributes",
                          "trsess_get_attributes", "trsess_get_nonce_tpm",
                          "tr_get_tpm_handle", "tr_close", "tr_serialize",
                          "tr_deserialize", "get_tcti", "tcti", "close", "is_closed"})


class CountingESAPI:
    """ESAPI proxy that counts the calls that send a command to the TPM."""

    def __init__(self, ectx: ESAPI, device: TPMDevice) -> None:
        self._ectx = ectx
        self._device = device

    def __getattr__(self, name: str):
        attr = getattr(self._ectx, name)
        if name.startswith("_") or name in _LOCAL_CALLS or not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self._device.command_log.append(name)
            return attr(*args, **kwargs)
        return counted


@dataclass
class ResidentKey:
    """The one bind key a device keeps loaded between command sequences.

    Loaded off the launch path (BindKeyPool.fill); ``in_use_since`` is set
    when a launch certifies it and cleared when the launch flushes it.
    """

    name: bytes
    handle: ESYS_TR
    in_use_since: float | None = None


class TPMDevice:
    """A TPM reached through a TCTI; methods are safe to call from many threads.

    All TPM access goes through :meth:`esapi`, which holds the device lock for
    the whole command sequence (load, session, use, flush) and turns TSS
    errors into :class:`~trusted_launch.tpm.errors.TPMError` subclasses.
    """

    def __init__(self, tcti: TCTISpec | str, *, srk_handle: int = DEFAULT_SRK_HANDLE,
                 ak_handle: int = DEFAULT_AK_HANDLE) -> None:
        self.tcti = parse_tcti(tcti) if isinstance(tcti, str) else tcti
        self.srk_handle = srk_handle
        self.ak_handle = ak_handle
        self.command_log: collections.deque[str] = collections.deque(maxlen=COMMAND_LOG_SIZE)
        self._lock = threading.RLock()
        self._tcti = open_tcti(self.tcti)
        try:
            self._ectx = ESAPI(self._tcti)
        except TSS2_Exception as exc:
            self._tcti.close()
            raise TPMUnavailable(f"cannot start ESAPI on TCTI {self.tcti}: {exc}") from None
        self._persistent: dict[int, ESYS_TR] = {}
        self._spare_session: ESYS_TR | None = None
        self.resident: ResidentKey | None = None
        self.srk_checked = False
        self._broken: str | None = None
        if self.tcti.name in _SIMULATORS:
            try:
                self._startup()
            except TPMError:
                self.close()
                raise

    def _startup(self) -> None:
        """TPM2_Startup(CLEAR) for a simulator that may not have been started."""
        try:
            with self.esapi("Startup") as ectx:
                ectx.startup(TPM2_SU.CLEAR)
        except TPMCommandError as exc:
            if exc.error != _TPM_RC_INITIALIZE:
                raise

    def __enter__(self) -> TPMDevice:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the ESAPI context and the TCTI (idempotent)."""
        with self._lock:
            if self._ectx is not None:
                if self._spare_session is not None:
                    with contextlib.suppress(TSS2_Exception):
                        self._ectx.flush_context(self._spare_session)
                    self._spare_session = None
                if self.resident is not None:
                    with contextlib.suppress(TSS2_Exception):
                        self._ectx.flush_context(self.resident.handle)
                    self.resident = None
                self._ectx.close()
                self._tcti.close()
                self._ectx = None

    @contextlib.contextmanager
    def esapi(self, operation: str) -> Iterator[CountingESAPI]:
        """Lock the device and yield its ESAPI; translate TSS errors for ``operation``."""
        with self._lock:
            if self._ectx is None:
                raise TPMUnavailable(f"TPM {operation}: the device is closed")
            if self._broken is not None:
                raise TPMUnavailable(f"TPM {operation}: connection lost earlier ({self._broken}); "
                                     "open a new TPMDevice")
            try:
                yield CountingESAPI(self._ectx, self)
            except TSS2_Exception as exc:
                error = translate_error(operation, _transport_failure(exc) or exc)
                if isinstance(error, TPMUnavailable):
                    self._broken = str(error)
                raise error from None

    def persistent(self, ectx: CountingESAPI, handle: int) -> ESYS_TR | None:
        """ESYS_TR of a persistent handle (cached), or None if it is empty."""
        if handle not in self._persistent:
            _, data = ectx.get_capability(TPM2_CAP.HANDLES, handle, 1)
            if handle not in [int(h) for h in data.data.handles]:
                return None
            self._persistent[handle] = ectx.tr_from_tpmpublic(handle)
        return self._persistent[handle]

    def forget_persistent(self, handle: int) -> None:
        """Drop a cached persistent handle (after EvictControl changed it)."""
        self._persistent.pop(handle, None)

    def prestart_policy_session(self) -> None:
        """Start the policy session the next bind key decryption will use.

        Called off the launch path (e.g. by BindKeyPool.fill) so that a
        decryption costs one TPM command less; at most one spare is kept.
        """
        with self.esapi("StartAuthSession") as ectx:
            if self._spare_session is None:
                self._spare_session = _start_policy_session(ectx, self.srk(ectx))

    def take_policy_session(self, ectx: CountingESAPI) -> ESYS_TR:
        """The spare policy session if there is one, else a new one (lock held)."""
        session, self._spare_session = self._spare_session, None
        if session is None:
            session = _start_policy_session(ectx, self.srk(ectx))
        return session

    def keep_resident(self, name: bytes, handle: ESYS_TR) -> None:
        """Record ``handle`` (a loaded bind key) as the resident key (lock held)."""
        if self.resident is not None:
            raise RuntimeError("a bind key is already resident; flush it first")
        self.resident = ResidentKey(name, handle)

    def mark_resident_in_use(self) -> None:
        """A launch certified the resident key; fill() leaves it alone for a while."""
        if self.resident is not None:
            self.resident.in_use_since = time.monotonic()

    def flush_resident(self, ectx: CountingESAPI) -> None:
        """FlushContext the resident key, if any (lock held)."""
        resident, self.resident = self.resident, None
        if resident is not None:
            ectx.flush_context(resident.handle)

    def srk(self, ectx: CountingESAPI) -> ESYS_TR:
        """The storage root key, created and persisted on first use."""
        return keys.ensure_srk(self, ectx)

    def ek_certificate(self) -> bytes:
        """DER EK certificate (RSA index 0x01c00002, else ECC 0x01c0000a)."""
        with self.esapi("read EK certificate") as ectx:
            return keys.read_ek_certificate(ectx)[1]

    def ek_public(self) -> bytes:
        """Marshalled TPM2B_PUBLIC of the EK matching the EK certificate."""
        with self.esapi("create EK") as ectx:
            return keys.ek_public(ectx)

    def ensure_attestation_key(self) -> keys.AttestationKey:
        """The persisted AK (ECC P-256, restricted ECDSA-SHA256), created once."""
        with self.esapi("ensure attestation key") as ectx:
            return keys.ensure_attestation_key(self, ectx)

    def activate_credential(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential with the AK and the EK; returns the secret."""
        with self.esapi("ActivateCredential") as ectx:
            return keys.activate_credential(self, ectx, credential_blob, encrypted_secret)

    def read_pcrs(self, selection: PCRSelection | str) -> dict[HashAlg, dict[int, bytes]]:
        """Current PCR values ``{bank: {pcr: digest}}``."""
        with self.esapi("PCR_Read") as ectx:
            return keys.read_pcrs(ectx, selection)

    def quote(self, selection: PCRSelection | str, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote with the AK: (TPMS_ATTEST, TPMT_SIGNATURE) marshalled."""
        with self.esapi("Quote") as ectx:
            return keys.quote(self, ectx, selection, nonce)

    def transient_handles(self) -> list[int]:
        """Handles of loaded transient objects.

        Between launches this is empty or holds only :attr:`resident` (the
        pre-loaded next bind key).
        """
        with self.esapi("GetCapability") as ectx:
            _, data = ectx.get_capability(TPM2_CAP.HANDLES, TPM2_HC.TRANSIENT_FIRST, 64)
            return [int(h) for h in data.data.handles]

    def resident_handles(self) -> list[int]:
        """TPM handle of the resident bind key, if any (compare with transient_handles)."""
        with self.esapi("resident handle") as ectx:
            if self.resident is None:
                return []
            return [int(ectx.tr_get_tpm_handle(self.resident.handle))]

    def loaded_sessions(self) -> list[int]:
        """Handles of loaded sessions (should be empty between operations)."""
        with self.esapi("GetCapability") as ectx:
            _, data = ectx.get_capability(TPM2_CAP.HANDLES,
                                          TPM2_HC.LOADED_SESSION_FIRST, 64)
            return [int(h) for h in data.data.handles]


def _start_policy_session(ectx: CountingESAPI, salt_key: ESYS_TR) -> ESYS_TR:
    """A policy session salted with ``salt_key`` (the SRK), AES-128-CFB capable.

    The salt gives the session a key that only this TPM knows, so the session
    can encrypt the secret response of ECDH_ZGen / RSA_Decrypt on the bus.
    """
    return ectx.start_auth_session(salt_key, ESYS_TR.NONE, TPM2_SE.POLICY,
                                   TPMT_SYM_DEF.parse("aes128cfb"), TPM2_ALG.SHA256)


def _transport_failure(exc: BaseException) -> TSS2_Exception | None:
    """The TCTI (transport) error behind ``exc``, if any.

    A clean-up command (FlushContext) that fails after the transport broke
    raises an ESAPI sequence error that would hide the real cause.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TSS2_Exception) and int(current.rc) & _LAYER_MASK == _TCTI_LAYER:
            return current
        current = current.__cause__ or current.__context__
    return None


def translate_error(operation: str, exc: TSS2_Exception) -> TPMError:
    """Map a TSS2 exception to TPMUnavailable (transport) or TPMCommandError."""
    rc = int(exc.rc)
    if rc & _LAYER_MASK == _TCTI_LAYER:
        return TPMUnavailable(f"TPM {operation}: TPM unreachable: {exc} (rc 0x{rc:x})")
    return TPMCommandError(operation, rc, str(exc), int(exc.error))
