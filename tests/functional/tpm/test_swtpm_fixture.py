"""The swtpm test fixtures themselves: start, distinct TPMs, boot replay, cleanup."""

from __future__ import annotations

import pytest

from tests.fixtures.swtpm import SECUREBOOT_LOG, SwtpmProcess
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.tpm.device import TPMDevice
from trusted_launch.tpm.errors import TPMUnavailable

pytestmark = pytest.mark.swtpm


def test_factory_gives_distinct_tpms_on_distinct_ports(swtpm_factory):
    first, second, third = swtpm_factory(3)
    assert len({first.port, second.port, third.port}) == 3
    certificates = set()
    for process in (first, second, third):
        with TPMDevice(process.tcti) as tpm:
            certificates.add(tpm.ek_certificate())
    assert len(certificates) == 3


def test_stop_removes_state_and_process(swtpm_state_cache):
    process = SwtpmProcess(swtpm_state_cache.state(0), swtpm_state_cache.ca)
    with process:
        state_dir = process.state_dir
        assert (state_dir / "tpm2-00.permall").exists()
    assert not state_dir.exists()
    assert process.process is None


def test_killed_swtpm_makes_device_unavailable(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        swtpm.kill()
        with pytest.raises(TPMUnavailable, match="unreachable"):
            tpm.read_pcrs("sha256:0")
        with pytest.raises(TPMUnavailable, match="connection lost"):
            tpm.read_pcrs("sha256:0")


def test_unreachable_tcti_raises_tpm_unavailable(swtpm):
    swtpm.kill()
    with pytest.raises(TPMUnavailable):
        TPMDevice(swtpm.tcti)


def test_booted_swtpm_pcrs_equal_event_log_replay(booted_swtpm, expected_pcrs):
    expected = expected_pcrs[SECUREBOOT_LOG.name]["sha256"]
    with TPMDevice(booted_swtpm.tcti) as tpm:
        pcrs = tpm.read_pcrs({HashAlg.SHA256: tuple(range(24))})[HashAlg.SHA256]
    assert booted_swtpm.event_log == SECUREBOOT_LOG.read_bytes()
    assert expected, "the log measures something"
    for index, value in pcrs.items():
        initial = "ff" * 32 if 17 <= index <= 22 else "00" * 32  # DRTM PCRs start at -1
        assert value.hex() == expected.get(str(index), initial), f"PCR {index}"


def test_fresh_swtpm_pcrs_are_zero(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        pcrs = tpm.read_pcrs("sha256:0-7+sha1:0")
    assert set(pcrs[HashAlg.SHA256].values()) == {bytes(32)}
    assert pcrs[HashAlg.SHA1] == {0: bytes(20)}
