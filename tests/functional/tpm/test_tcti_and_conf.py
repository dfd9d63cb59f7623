"""TCTI strings, PCR selection strings and the [trusted_launch] TPM options."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from trusted_launch.conf import tpm as tpm_conf
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.tpm.errors import InvalidPCRSelection, TCTIConfigError
from trusted_launch.tpm.tcti import TCTISpec, parse_tcti
from trusted_launch.tpm.templates import format_pcr_selection, parse_pcr_selection


@pytest.mark.parametrize(("text", "expected"), [
    ("device:/dev/tpmrm0", TCTISpec("device", "/dev/tpmrm0")),
    ("device:/dev/tpm0", TCTISpec("device", "/dev/tpm0")),
    ("swtpm:host=127.0.0.1,port=2321", TCTISpec("swtpm", "host=127.0.0.1,port=2321")),
    ("swtpm:port=4000", TCTISpec("swtpm", "host=127.0.0.1,port=4000")),
    ("mssim:host=tpm.example,port=2321", TCTISpec("mssim", "host=tpm.example,port=2321")),
    ("tabrmd", TCTISpec("tabrmd", None)),
    ("tabrmd:bus_name=com.intel.tss2.Tabrmd",
     TCTISpec("tabrmd", "bus_name=com.intel.tss2.Tabrmd")),
])
def test_valid_tcti_strings(text, expected):
    assert parse_tcti(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("", "unknown TCTI type"),
    ("libtpms", "unknown TCTI type"),
    ("device:/etc/passwd", "device path"),
    ("device:", "device path"),
    ("swtpm:host=127.0.0.1,port=99999", "port must be"),
    ("swtpm:host=127.0.0.1,port=abc", "port must be"),
    ("swtpm:host=a b,port=1", "bad host"),
    ("swtpm:path=/tmp/x", "bad option"),
    ("mssim:host", "bad option"),
    ("tabrmd:bus_type=remote", "bus_type"),
])
def test_invalid_tcti_strings_are_refused(text, problem):
    with pytest.raises(TCTIConfigError, match=problem):
        parse_tcti(text)


def test_pcr_selection_round_trip():
    selection = parse_pcr_selection("sha256:0-3,7+sha1:14")
    assert selection == {HashAlg.SHA256: (0, 1, 2, 3, 7), HashAlg.SHA1: (14,)}
    assert format_pcr_selection(selection) == "sha1:14+sha256:0,1,2,3,7"


@pytest.mark.parametrize("text", ["", "sha256", "sha256:", "md5:0", "sha256:24",
                                  "sha256:7-3", "sha256:0+sha256:1", "sha256:x"])
def test_invalid_pcr_selections_are_refused(text):
    with pytest.raises(InvalidPCRSelection, match="PCR selection"):
        parse_pcr_selection(text)


def test_tpm_options_register_with_defaults():
    conf = cfg.ConfigOpts()
    tpm_conf.register_opts(conf)
    conf([])
    group = conf.trusted_launch
    assert group.tcti == "device:/dev/tpmrm0"
    assert group.bind_key_algorithm == "ecc"
    assert parse_pcr_selection(group.bind_key_pcrs) == {HashAlg.SHA256: tuple(range(8))}
    assert group.attestation_key_handle == 0x81010002
    assert all(opt.help for _, opts in tpm_conf.list_opts() for opt in opts)


def test_bind_key_algorithm_choices_are_enforced():
    conf = cfg.ConfigOpts()
    tpm_conf.register_opts(conf)
    conf([])
    with pytest.raises(ValueError):
        conf.set_override("bind_key_algorithm", "dsa", group="trusted_launch")
