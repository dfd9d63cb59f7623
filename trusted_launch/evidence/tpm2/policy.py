"""TPM2_PolicyPCR policy digests, computed without a TPM."""

from __future__ import annotations

import struct

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.tpm2.pcr import (
    PCRSelection,
    PCRValues,
    marshal_pcr_selection,
    selected_pcr_values,
)

TPM_CC_POLICY_PCR = 0x0000017F


def policy_pcr_digest(selection: PCRSelection, pcr_values: PCRValues, *,
                      policy_alg: HashAlg = HashAlg.SHA256,
                      start: bytes | None = None) -> bytes:
    """policyDigest after TPM2_PolicyPCR(selection) with the given PCR values.

    new = H(old || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(selected values)),
    H being the policy session's hash; ``start`` defaults to the all-zero digest.
    """
    old = bytes(policy_alg.digest_size) if start is None else start
    if len(old) != policy_alg.digest_size:
        raise EvidenceError(f"policy start digest has {len(old)} bytes, "
                            f"{policy_alg.bank_name} needs {policy_alg.digest_size}")
    values_digest = policy_alg.digest(selected_pcr_values(selection, pcr_values))
    return policy_alg.digest(old + struct.pack(">I", TPM_CC_POLICY_PCR)
                             + marshal_pcr_selection(selection) + values_digest)
