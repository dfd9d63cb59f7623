"""PCR-locked bind keys: creation, pool, TPM2_Certify and decryption.

A bind key is created under the SRK with authPolicy = PolicyPCR(selection,
current PCR values) and userWithAuth clear, so its USER role (ECDH_ZGen,
RSA_Decrypt) works only in a policy session whose PolicyPCR matches the PCRs
at that moment.  adminWithPolicy is clear: TPM2_Certify (ADMIN role) is
authorised with the empty authValue, which lets the host certify the key but
never use it for decryption.  Decryption runs in a policy session salted with
the SRK and with response encryption, so the shared point / plaintext never
crosses the TPM bus in clear.  Keys live outside the TPM as (private, public)
blobs; an operation loads, uses and flushes the key under the device lock.

Fewer commands on the launch path: BindKeyPool.fill (off the path) loads the
next key and leaves it *resident* (TPMDevice.resident, at most one per
device, because a TPM has only 3 transient object slots and a Load needs one
for the persistent SRK on top).  A launch whose key is resident runs
Certify (key stays loaded) and then PolicyPCR, ECDH_ZGen/RSA_Decrypt,
FlushContext: 4 commands instead of 7.  Any other key takes the fallback:
Load+use+Flush.  Invariant: between launches the TPM holds at most the one
resident key; a launch that ends without decryption flushes it (release()).
A Load that finds the TPM full (TPM_RC_OBJECT_MEMORY) flushes the resident
key and retries once; that key's launch then falls back to Load.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_ECC_POINT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_PUBLIC_KEY_RSA,
    TPM2B_SENSITIVE_CREATE,
    TPMS_ECC_POINT,
    TPMT_RSA_DECRYPT,
    TPMT_SIG_SCHEME,
)

from trusted_launch.tpm import keys
from trusted_launch.tpm.device import CountingESAPI, TPMDevice
from trusted_launch.tpm.errors import PCRPolicyMismatch, TPMCommandError
from trusted_launch.tpm.templates import (
    BIND_KEY_ALGORITHMS,
    PCRSelection,
    as_selection,
    bind_key_template,
    format_pcr_selection,
    policy_pcr_digest,
    tpml_pcr_selection,
)

LOG = logging.getLogger(__name__)

# TPM_RC_POLICY_FAIL and TPM_RC_PCR_CHANGED, handle/session/parameter bits stripped.
_POLICY_ERRORS = frozenset({0x09D, 0x128})
TPM_RC_OBJECT_MEMORY = 0x902
# fill() replaces a resident key certified by a launch only after this long
# (the launch is then presumed dead; if it is not, it falls back to Load).
IN_USE_GRACE_S = 120.0
ECC_COORDINATE_SIZE = 32


@dataclass(frozen=True)
class BindKey:
    """A bind key as blobs: marshalled TPM2B_PUBLIC / TPM2B_PRIVATE and its Name."""

    algorithm: str
    public: bytes
    private: bytes = field(repr=False)
    name: bytes
    pcr_selection: str
    auth_policy: bytes
    created_at: float


def create_bind_key(device: TPMDevice, algorithm: str = "ecc",
                    pcr_selection: PCRSelection | str = "sha256:0,1,2,3,4,5,6,7") -> BindKey:
    """Create a bind key locked to the current values of ``pcr_selection``."""
    selection = as_selection(pcr_selection)
    if algorithm not in BIND_KEY_ALGORITHMS:
        raise ValueError(f"bind key algorithm must be one of {BIND_KEY_ALGORITHMS}, "
                         f"got {algorithm!r}")
    with device.esapi(f"create {algorithm} bind key") as ectx:
        policy = policy_pcr_digest(selection, keys.read_pcrs(ectx, selection))
        private, public, *_ = ectx.create(device.srk(ectx), TPM2B_SENSITIVE_CREATE(),
                                          bind_key_template(algorithm, policy))
    return BindKey(algorithm=algorithm, public=public.marshal(), private=private.marshal(),
                   name=bytes(public.get_name()), pcr_selection=format_pcr_selection(selection),
                   auth_policy=policy, created_at=time.time())


def trial_policy_digest(device: TPMDevice, pcr_selection: PCRSelection | str) -> bytes:
    """PolicyPCR digest of the current PCRs computed by the TPM in a trial session."""
    with device.esapi("trial PolicyPCR") as ectx:
        session = ectx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, None,
                                          TPM2_ALG.SHA256)
        try:
            ectx.policy_pcr(session, b"", tpml_pcr_selection(as_selection(pcr_selection)))
            return bytes(ectx.policy_get_digest(session))
        finally:
            ectx.flush_context(session)


def certify(device: TPMDevice, bind_key: BindKey,
            qualifying_data: bytes) -> tuple[bytes, bytes]:
    """TPM2_Certify(bind key, AK): (TPMS_ATTEST, TPMT_SIGNATURE) marshalled.

    TPM commands: Certify if the key is resident (it stays loaded for the
    decryption), else Load, Certify, FlushContext.
    """
    with device.esapi("Certify") as ectx:
        ak = keys.ak_handle(device, ectx)
        with _loaded(device, ectx, bind_key, keep=True) as handle:
            attest, signature = ectx.certify(handle, ak, TPM2B_DATA(qualifying_data),
                                             TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    return bytes(attest), signature.marshal()


def preload(device: TPMDevice, bind_key: BindKey) -> bool:
    """Load ``bind_key`` off the launch path and keep it resident; False if the slot is busy.

    A resident key that is not in use by a launch (or whose launch is older
    than IN_USE_GRACE_S) is flushed to make room.
    """
    with device.esapi("Load") as ectx:
        resident = device.resident
        if resident is not None:
            if resident.name == bind_key.name:
                return True
            if (resident.in_use_since is not None
                    and time.monotonic() - resident.in_use_since < IN_USE_GRACE_S):
                return False
            device.flush_resident(ectx)
        device.keep_resident(bind_key.name, _load(device, ectx, bind_key))
        return True


def release(device: TPMDevice, bind_key: BindKey) -> None:
    """Flush ``bind_key`` if it is resident (a launch that ends without decryption)."""
    with device.esapi("FlushContext") as ectx:
        if device.resident is not None and device.resident.name == bind_key.name:
            device.flush_resident(ectx)


def ecdh_zgen(device: TPMDevice, bind_key: BindKey, peer_point: tuple[bytes, bytes]) -> bytes:
    """TPM2_ECDH_ZGen in a PolicyPCR session: x coordinate of the shared point.

    TPM commands: PolicyPCR, ECDH_ZGen, FlushContext if the key is resident,
    else Load first (+ StartAuthSession unless a session was pre-started with
    TPMDevice.prestart_policy_session).
    """
    _require(bind_key, "ecc")
    x, y = peer_point
    if len(x) != ECC_COORDINATE_SIZE or len(y) != ECC_COORDINATE_SIZE:
        raise ValueError("ECDH peer point: x and y must be 32 bytes each (P-256)")
    point = TPM2B_ECC_POINT(point=TPMS_ECC_POINT(x=x, y=y))
    shared = _with_policy(device, bind_key, "ECDH_ZGen",
                          lambda ectx, key, session: ectx.ecdh_zgen(
                              key, point, session1=session))
    return bytes(shared.point.x)


def rsa_decrypt(device: TPMDevice, bind_key: BindKey, ciphertext: bytes,
                label: bytes) -> bytes:
    """TPM2_RSA_Decrypt (OAEP-SHA256, ``label``) in a PolicyPCR session.

    TPM commands: as :func:`ecdh_zgen`, with RSA_Decrypt.
    """
    _require(bind_key, "rsa")
    scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.NULL)
    message = _with_policy(device, bind_key, "RSA_Decrypt",
                           lambda ectx, key, session: ectx.rsa_decrypt(
                               key, TPM2B_PUBLIC_KEY_RSA(ciphertext), scheme,
                               TPM2B_DATA(label), session1=session))
    return bytes(message)


def _require(bind_key: BindKey, algorithm: str) -> None:
    if bind_key.algorithm != algorithm:
        raise ValueError(f"this operation needs an {algorithm} bind key, "
                         f"got {bind_key.algorithm}")


def _load(device: TPMDevice, ectx: CountingESAPI, bind_key: BindKey) -> ESYS_TR:
    """TPM2_Load under the SRK; on TPM_RC_OBJECT_MEMORY flush the resident key, retry once."""
    private, _ = TPM2B_PRIVATE.unmarshal(bind_key.private)
    public, _ = TPM2B_PUBLIC.unmarshal(bind_key.public)
    srk = device.srk(ectx)
    try:
        return ectx.load(srk, private, public)
    except TSS2_Exception as exc:
        if int(exc.error) != TPM_RC_OBJECT_MEMORY or device.resident is None:
            raise
    LOG.info("TPM object memory full: flushing the resident bind key to load another")
    device.flush_resident(ectx)
    return ectx.load(srk, private, public)


@contextlib.contextmanager
def _loaded(device: TPMDevice, ectx: CountingESAPI, bind_key: BindKey, *,
            keep: bool) -> Iterator[ESYS_TR]:
    """The key's handle: the resident one (flushed afterwards unless ``keep``), else
    loaded for this use and flushed afterwards."""
    resident = device.resident
    if resident is not None and resident.name == bind_key.name:
        try:
            yield resident.handle
        finally:
            if keep:
                device.mark_resident_in_use()
            else:
                device.flush_resident(ectx)
        return
    handle = _load(device, ectx, bind_key)
    try:
        yield handle
    finally:
        ectx.flush_context(handle)


def _with_policy(device: TPMDevice, bind_key: BindKey, operation: str,
                 use: Callable[[CountingESAPI, ESYS_TR, ESYS_TR], object]):
    """Satisfy PolicyPCR in a one-shot session, run ``use`` with the key, flush it."""
    selection = tpml_pcr_selection(as_selection(bind_key.pcr_selection))
    try:
        with device.esapi(operation) as ectx, \
                _loaded(device, ectx, bind_key, keep=False) as handle:
            return _use_in_session(device, ectx, selection, lambda session: use(
                ectx, handle, session))
    except TPMCommandError as exc:
        if exc.error in _POLICY_ERRORS:
            raise PCRPolicyMismatch(operation, exc.rc) from None
        raise


def _use_in_session(device: TPMDevice, ectx: CountingESAPI, selection,
                    use: Callable[[ESYS_TR], object]):
    """PolicyPCR then ``use`` in a salted session that encrypts the response.

    continueSession is clear, so the TPM flushes the session after one
    successful use; ENCRYPT makes the TPM encrypt the first response
    parameter (the shared point or the plaintext) with the session key.
    """
    session = device.take_policy_session(ectx)
    try:
        ectx.trsess_set_attributes(session, TPMA_SESSION.ENCRYPT,
                                   TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT)
        ectx.policy_pcr(session, b"", selection)
        result = use(session)
    except BaseException:
        with contextlib.suppress(TSS2_Exception):  # a failed command leaves it loaded
            ectx.flush_context(session)
        raise
    # The TPM flushed the session; ESAPI keeps its object (~1 KiB) until closed.
    ectx.tr_close(session)
    return result


class BindKeyPool:
    """Pre-generated bind keys, retired after ``max_uses`` uses or ``lifetime_s`` seconds.

    :meth:`fill` runs off the critical path (e.g. in a background thread) and
    also loads the next key (resident) and pre-starts the policy session of
    the next decryption; :meth:`acquire` returns a ready key and generates one
    only when the pool is empty.
    """

    def __init__(self, device: TPMDevice, *, algorithm: str = "ecc",
                 pcr_selection: PCRSelection | str = "sha256:0,1,2,3,4,5,6,7",
                 size: int = 4, max_uses: int = 1, lifetime_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if algorithm not in BIND_KEY_ALGORITHMS:
            raise ValueError(f"bind key algorithm must be one of {BIND_KEY_ALGORITHMS}")
        if size < 1 or max_uses < 1 or lifetime_s <= 0:
            raise ValueError("bind key pool: size and max_uses must be >= 1, lifetime > 0")
        self.device = device
        self.algorithm = algorithm
        self.pcr_selection = as_selection(pcr_selection)
        self.size = size
        self.max_uses = max_uses
        self.lifetime_s = lifetime_s
        self.generated = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: collections.deque[_PoolEntry] = collections.deque()

    def __len__(self) -> int:
        with self._lock:
            self._retire_expired()
            return len(self._keys)

    def fill(self) -> int:
        """Generate keys until the pool holds ``size``; return how many were made."""
        made = 0
        while len(self) < self.size:
            entry = _PoolEntry(self._generate(), self._clock())
            with self._lock:
                if len(self._keys) >= self.size:
                    break
                self._keys.append(entry)
            made += 1
        self._preload_next()
        self.device.prestart_policy_session()
        return made

    def _preload_next(self) -> None:
        """Keep the key acquire() will hand out next loaded in the TPM."""
        with self._lock:
            self._retire_expired()
            upcoming = self._keys[0].key if self._keys else None
        if upcoming is not None:
            preload(self.device, upcoming)

    def acquire(self) -> BindKey:
        """A usable key; generated synchronously (with a warning) if none is ready."""
        with self._lock:
            self._retire_expired()
            if self._keys:
                entry = self._keys[0]
                entry.uses += 1
                if entry.uses >= self.max_uses:
                    self._keys.popleft()
                return entry.key
        LOG.warning("bind key pool (%s) empty: generating a key on the launch path",
                    self.algorithm)
        key = self._generate()
        if self.max_uses > 1:
            with self._lock:
                self._keys.appendleft(_PoolEntry(key, self._clock(), uses=1))
        return key

    def _generate(self) -> BindKey:
        key = create_bind_key(self.device, self.algorithm, self.pcr_selection)
        with self._lock:
            self.generated += 1
        return key

    def _retire_expired(self) -> None:
        now = self._clock()
        self._keys = collections.deque(
            e for e in self._keys if now - e.created < self.lifetime_s)


@dataclass
class _PoolEntry:
    key: BindKey
    created: float
    uses: int = 0
