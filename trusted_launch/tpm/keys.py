"""Endorsement key, storage root key and attestation key on one TPM.

Design: the AK is an ordinary child of the owner-hierarchy SRK (not of the EK),
so using it needs no EK policy session; it is persisted with EvictControl so a
restarted host keeps its identity.  The TTP binds it to the EK with
MakeCredential(EK public, secret, AK name) / ActivateCredential.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMT_SIG_SCHEME,
)
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.tpm.errors import NoEKCertificate, TPMCommandError, UnexpectedKeyError
from trusted_launch.tpm.templates import (
    PCRSelection,
    ak_template,
    as_selection,
    srk_template,
    tpml_pcr_selection,
)

if TYPE_CHECKING:
    from trusted_launch.tpm.device import CountingESAPI, TPMDevice

# (NV index of the EK certificate, tpm2-pytss EK template name), in preference order.
EK_CERT_INDICES = ((0x01C00002, "EK-RSA2048"), (0x01C0000A, "EK-ECC256"))
_AK_REQUIRED = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN)
_SRK_REQUIRED = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
                 | TPMA_OBJECT.FIXEDPARENT)
# An AK must not decrypt, an SRK must not sign (either would break restricted-key rules).
_FORBIDDEN = {"attestation key": TPMA_OBJECT.DECRYPT, "SRK": TPMA_OBJECT.SIGN_ENCRYPT}


@dataclass(frozen=True)
class AttestationKey:
    """The host's AK: marshalled TPM2B_PUBLIC, TPM Name and persistent handle."""

    public: bytes
    name: bytes
    handle: int


def read_ek_certificate(ectx: CountingESAPI) -> tuple[str, bytes]:
    """(EK template name, DER certificate) from the first standard NV index present."""
    reader = NVReadEK(ectx)
    for index, ek_type in EK_CERT_INDICES:
        try:
            return ek_type, reader(index)
        except NoSuchIndex:
            continue
        except TSS2_Exception as exc:
            if exc.error & 0xFF != 0x8B:
                raise
    raise NoEKCertificate("the TPM has no EK certificate at NV index 0x01c00002 "
                          "(RSA 2048) or 0x01c0000a (ECC P-256)")


def _ek_template(ectx: CountingESAPI) -> TPM2B_PUBLIC:
    ek_type, _ = read_ek_certificate(ectx)
    _, template = create_ek_template(ek_type, NVReadEK(ectx))
    return template


def ek_public(ectx: CountingESAPI) -> bytes:
    """Create the EK (TCG default template), return its TPM2B_PUBLIC, flush it."""
    handle, public, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), _ek_template(ectx),
                                             ESYS_TR.ENDORSEMENT)
    ectx.flush_context(handle)
    return public.marshal()


def ensure_srk(device: TPMDevice, ectx: CountingESAPI) -> ESYS_TR:
    """ESYS_TR of the persistent SRK; create and persist it when absent."""
    handle = device.persistent(ectx, device.srk_handle)
    if handle is None:
        transient, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), srk_template(),
                                            ESYS_TR.OWNER)
        handle = _persist(device, ectx, transient, device.srk_handle)
    if not device.srk_checked:
        _check_attributes(ectx, handle, _SRK_REQUIRED, "SRK", device.srk_handle)
        device.srk_checked = True
    return handle


def ensure_attestation_key(device: TPMDevice, ectx: CountingESAPI) -> AttestationKey:
    """The persisted AK; created under the SRK and persisted when absent."""
    handle = device.persistent(ectx, device.ak_handle)
    if handle is None:
        srk = ensure_srk(device, ectx)
        private, public, *_ = ectx.create(srk, TPM2B_SENSITIVE_CREATE(), ak_template())
        handle = _persist(device, ectx, ectx.load(srk, private, public), device.ak_handle)
    public = _check_attributes(ectx, handle, _AK_REQUIRED, "attestation key",
                               device.ak_handle)
    return AttestationKey(public=public.marshal(), name=bytes(public.get_name()),
                          handle=device.ak_handle)


def ak_handle(device: TPMDevice, ectx: CountingESAPI) -> ESYS_TR:
    """ESYS_TR of the persisted AK; UnexpectedKeyError if there is none."""
    handle = device.persistent(ectx, device.ak_handle)
    if handle is None:
        raise UnexpectedKeyError(f"no attestation key at handle 0x{device.ak_handle:08x}; "
                                 "call ensure_attestation_key() first")
    return handle


def _persist(device: TPMDevice, ectx: CountingESAPI, transient: ESYS_TR,
             handle: int) -> ESYS_TR:
    try:
        persistent = ectx.evict_control(ESYS_TR.OWNER, transient, handle)
    finally:
        ectx.flush_context(transient)
    device.forget_persistent(handle)
    return device.persistent(ectx, handle) or persistent


def _check_attributes(ectx: CountingESAPI, handle: ESYS_TR, required: int, what: str,
                      tpm_handle: int) -> TPM2B_PUBLIC:
    public, _, _ = ectx.read_public(handle)
    attributes = int(public.publicArea.objectAttributes)
    if (attributes & required != required or attributes & _FORBIDDEN[what]
            or public.publicArea.type != TPM2_ALG.ECC):
        raise UnexpectedKeyError(
            f"persistent handle 0x{tpm_handle:08x} holds an object that is not an ECC "
            f"{what} (attributes 0x{attributes:08x}); free it or configure another handle")
    return public


def activate_credential(device: TPMDevice, ectx: CountingESAPI, credential_blob: bytes,
                        encrypted_secret: bytes) -> bytes:
    """ActivateCredential(AK, EK): the EK is authorised by PolicySecret(endorsement)."""
    blob, _ = TPM2B_ID_OBJECT.unmarshal(credential_blob)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    ak = ak_handle(device, ectx)
    ek, *_ = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), _ek_template(ectx),
                                 ESYS_TR.ENDORSEMENT)
    session = ectx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, None,
                                      TPM2_ALG.SHA256)
    try:
        ectx.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        cert_info = ectx.activate_credential(ak, ek, blob, secret,
                                             session1=ESYS_TR.PASSWORD, session2=session)
    except TSS2_Exception as exc:
        raise TPMCommandError("ActivateCredential", int(exc.rc),
                              "the credential was not made for this TPM's EK and AK "
                              f"({exc})", int(exc.error)) from None
    finally:
        ectx.flush_context(session)
        ectx.flush_context(ek)
    return bytes(cert_info)


def read_pcrs(ectx: CountingESAPI,
              selection: PCRSelection | str) -> dict[HashAlg, dict[int, bytes]]:
    """Read PCRs bank by bank, eight at a time (the TPM returns at most 8 digests)."""
    values: dict[HashAlg, dict[int, bytes]] = {}
    for bank, pcrs in as_selection(selection).items():
        values[bank] = {}
        for start in range(0, len(pcrs), 8):
            chunk = pcrs[start:start + 8]
            _, _, digests = ectx.pcr_read(tpml_pcr_selection({bank: chunk}))
            for pcr, digest in zip(chunk, digests.digests, strict=True):
                values[bank][pcr] = bytes(digest)
    return values


def quote(device: TPMDevice, ectx: CountingESAPI, selection: PCRSelection | str,
          nonce: bytes) -> tuple[bytes, bytes]:
    """TPM2_Quote over ``selection`` with qualifyingData ``nonce``."""
    attest, signature = ectx.quote(ak_handle(device, ectx), tpml_pcr_selection(
        as_selection(selection)), TPM2B_DATA(nonce), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    return bytes(attest), signature.marshal()

