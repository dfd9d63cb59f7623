"""Key templates (SRK, AK, bind keys), PCR selections and PolicyPCR digests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from tpm2_pytss.types import TPM2B_PUBLIC, TPML_PCR_SELECTION

from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_name
from trusted_launch.evidence.errors import UnknownAlgorithmError
from trusted_launch.tpm.errors import InvalidPCRSelection

PCRSelection = Mapping[HashAlg, tuple[int, ...]]

TPM_CC_POLICY_PCR = 0x0000017F
MAX_PCR = 23

# TCG "TPM 2.0 Provisioning Guidance": ECC P-256 storage root key, AES-128-CFB.
SRK_ATTRIBUTES = ("restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin"
                  "|userwithauth|noda")
# Attestation key: restricted ECDSA-SHA256 signing key.
AK_ATTRIBUTES = "restricted|sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
# Bind keys: non-migratable, decrypt only, USER role by policy only.  adminWithPolicy
# is clear: the ADMIN role (TPM2_Certify) is then authorised by the empty authValue;
# with it set, Certify would need PolicyCommandCode in the key's policy.
BIND_KEY_ATTRIBUTES = "decrypt|fixedtpm|fixedparent|sensitivedataorigin"
BIND_KEY_ALGORITHMS = ("ecc", "rsa")
_BIND_KEY_PARAMS = {"ecc": "ecc256:ecdh-sha256:null", "rsa": "rsa2048:oaep-sha256:null"}

_SELECTION_ITEM = re.compile(r"^([A-Za-z0-9_\-]+):([0-9,\- ]+)$")


def srk_template() -> TPM2B_PUBLIC:
    """The standard ECC P-256 SRK template (unique zero, so it is reproducible)."""
    return TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=SRK_ATTRIBUTES,
                              nameAlg="sha256")


def ak_template() -> TPM2B_PUBLIC:
    """ECC P-256 restricted signing key, ECDSA with SHA-256."""
    return TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=AK_ATTRIBUTES,
                              nameAlg="sha256")


def bind_key_template(algorithm: str, auth_policy: bytes) -> TPM2B_PUBLIC:
    """Template of a PCR-locked bind key (``ecc`` = P-256 ECDH, ``rsa`` = RSA-2048 OAEP)."""
    try:
        params = _BIND_KEY_PARAMS[algorithm]
    except KeyError:
        raise ValueError(f"bind key algorithm must be one of {BIND_KEY_ALGORITHMS}, "
                         f"got {algorithm!r}") from None
    return TPM2B_PUBLIC.parse(params, objectAttributes=BIND_KEY_ATTRIBUTES,
                              nameAlg="sha256", authPolicy=auth_policy)


def parse_pcr_selection(text: str) -> dict[HashAlg, tuple[int, ...]]:
    """Parse ``sha256:0,1,2-7[+sha1:0]`` into ``{HashAlg.SHA256: (0, 1, ...)}``."""
    selection: dict[HashAlg, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split("+"))):
        match = _SELECTION_ITEM.match(part)
        if not match:
            raise InvalidPCRSelection(f"PCR selection {text!r}: expected bank:pcr,pcr,...")
        try:
            bank = hash_alg_from_name(match.group(1))
        except UnknownAlgorithmError as exc:
            raise InvalidPCRSelection(f"PCR selection {text!r}: {exc.problem}") from None
        if bank in selection:
            raise InvalidPCRSelection(f"PCR selection {text!r}: bank {bank.bank_name} twice")
        selection[bank] = _pcr_indices(text, match.group(2))
    if not selection:
        raise InvalidPCRSelection(f"PCR selection {text!r} selects no PCR")
    return selection


def _pcr_indices(text: str, spec: str) -> tuple[int, ...]:
    indices: set[int] = set()
    for item in filter(None, (i.strip() for i in spec.split(","))):
        low, _, high = item.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise InvalidPCRSelection(f"PCR selection {text!r}: bad PCR {item!r}")
        first, last = int(low), int(high or low)
        if first > last or last > MAX_PCR:
            raise InvalidPCRSelection(f"PCR selection {text!r}: PCR {item!r} not in 0-23")
        indices.update(range(first, last + 1))
    if not indices:
        raise InvalidPCRSelection(f"PCR selection {text!r}: a bank with no PCR")
    return tuple(sorted(indices))


def format_pcr_selection(selection: PCRSelection) -> str:
    """Inverse of :func:`parse_pcr_selection` (``sha256:0,1,2``)."""
    return "+".join(f"{bank.bank_name}:{','.join(map(str, pcrs))}"
                    for bank, pcrs in sorted(selection.items()))


def as_selection(selection: PCRSelection | str) -> dict[HashAlg, tuple[int, ...]]:
    if isinstance(selection, str):
        return parse_pcr_selection(selection)
    return {HashAlg(bank): tuple(sorted(pcrs)) for bank, pcrs in selection.items()}


def tpml_pcr_selection(selection: PCRSelection) -> TPML_PCR_SELECTION:
    """The TPML_PCR_SELECTION for a selection (banks in ascending id order)."""
    text = "+".join(f"{bank.bank_name}:{','.join(map(str, pcrs))}"
                    for bank, pcrs in sorted(selection.items()))
    return TPML_PCR_SELECTION.parse(text)


def policy_pcr_digest(selection: PCRSelection,
                      values: Mapping[HashAlg, Mapping[int, bytes]]) -> bytes:
    """SHA-256 policyDigest of a fresh session after TPM2_PolicyPCR(selection).

    PCR values are concatenated bank by bank (ascending algorithm id), PCR by
    PCR (ascending index), the order in which the TPM reads them.
    """
    concatenated = b"".join(values[bank][pcr]
                            for bank, pcrs in sorted(selection.items()) for pcr in pcrs)
    pcr_digest = hashlib.sha256(concatenated).digest()
    return hashlib.sha256(bytes(32) + TPM_CC_POLICY_PCR.to_bytes(4, "big")
                          + tpml_pcr_selection(selection).marshal() + pcr_digest).digest()
