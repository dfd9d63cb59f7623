"""Fixtures of the TPM tests: real swtpm processes and devices on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trusted_launch.tpm.device import TPMDevice


@pytest.fixture
def device(swtpm) -> Iterator[TPMDevice]:
    """A TPMDevice on a fresh swtpm, with its attestation key created."""
    with TPMDevice(swtpm.tcti) as tpm:
        tpm.ensure_attestation_key()
        yield tpm


@pytest.fixture
def booted_device(booted_swtpm) -> Iterator[TPMDevice]:
    """A TPMDevice whose PCRs equal the replay of a real Secure Boot event log."""
    with TPMDevice(booted_swtpm.tcti) as tpm:
        tpm.ensure_attestation_key()
        yield tpm
