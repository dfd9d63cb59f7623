"""TPM 2.0 structures (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC, TPML_PCR_SELECTION)
and their verification: signatures, quotes, certifications and PolicyPCR digests.

Pure Python over ``cryptography``: the verifying side needs no TPM stack.
"""

from trusted_launch.evidence.tpm2.algs import TPMAlg
from trusted_launch.evidence.tpm2.attest import (
    TPM_GENERATED_VALUE,
    Attest,
    AttestType,
    CertifyInfo,
    ClockInfo,
    CreationInfo,
    QuoteInfo,
    parse_attest,
)
from trusted_launch.evidence.tpm2.goattest import QuoteEvidence, load_go_attestation
from trusted_launch.evidence.tpm2.pcr import (
    PCRSelection,
    PCRValues,
    initial_pcr_value,
    marshal_pcr_selection,
    parse_pcr_selection,
    pcr_digest,
    with_initial_values,
)
from trusted_launch.evidence.tpm2.policy import TPM_CC_POLICY_PCR, policy_pcr_digest
from trusted_launch.evidence.tpm2.public import (
    ECCCurve,
    ECCParameters,
    KeyedHashParameters,
    ObjectAttributes,
    ObjectType,
    PublicArea,
    RSAParameters,
    Scheme,
    SymCipherParameters,
    SymmetricDef,
    parse_public,
)
from trusted_launch.evidence.tpm2.signature import Signature, parse_signature
from trusted_launch.evidence.tpm2.verify import verify_certify, verify_quote, verify_signature

__all__ = [
    "TPM_CC_POLICY_PCR",
    "TPM_GENERATED_VALUE",
    "Attest",
    "AttestType",
    "CertifyInfo",
    "ClockInfo",
    "CreationInfo",
    "ECCCurve",
    "ECCParameters",
    "KeyedHashParameters",
    "ObjectAttributes",
    "ObjectType",
    "PCRSelection",
    "PCRValues",
    "PublicArea",
    "QuoteEvidence",
    "QuoteInfo",
    "RSAParameters",
    "Scheme",
    "Signature",
    "SymCipherParameters",
    "SymmetricDef",
    "TPMAlg",
    "initial_pcr_value",
    "load_go_attestation",
    "marshal_pcr_selection",
    "parse_attest",
    "parse_pcr_selection",
    "parse_public",
    "parse_signature",
    "pcr_digest",
    "policy_pcr_digest",
    "verify_certify",
    "verify_quote",
    "verify_signature",
    "with_initial_values",
]
