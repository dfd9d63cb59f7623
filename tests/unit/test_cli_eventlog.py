"""Tests for ``trusted-launch eventlog``."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.cmd.cli import main

CLI = pathlib.Path(sys.executable).parent / "trusted-launch"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["fedora41_uefi_binary_bios_measurements",
                                  "windows_gcp_shielded_vm_eventlog", "short_no_action_eventlog"])
def test_replay_json_prints_exactly_the_expected_pcrs(name, expected_pcrs, capsys):
    code, out, err = run(["eventlog", "replay", str(EVENTLOG_DIR / name), "--json"], capsys)
    assert code == 0 and err == ""
    assert json.loads(out) == expected_pcrs[name]
    assert out.count("\n") == 1


def test_replay_table_lists_every_pcr(expected_pcrs, capsys):
    name = "coreos_36_shielded_vm_no_secure_boot_eventlog"
    code, out, _ = run(["eventlog", "replay", str(EVENTLOG_DIR / name)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == sum(len(bank) for bank in expected_pcrs[name].values())
    assert f"sha384  PCR14  {expected_pcrs[name]['sha384']['14']}" in lines


def test_replay_table_of_a_log_without_measurements(capsys):
    code, out, _ = run(["eventlog", "replay", str(EVENTLOG_DIR / "short_no_action_eventlog")],
                       capsys)
    assert code == 0 and out.strip() == "no PCR was extended"


def test_show_lists_events_with_decoded_summaries(capsys):
    path = EVENTLOG_DIR / "fedora41_uefi_binary_bios_measurements"
    code, out, _ = run(["eventlog", "show", str(path)], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("crypto-agile log, 121 events, banks sha1,sha256")
    assert "startup locality 3" in lines[0] and "secure boot off" in lines[0]
    assert len(lines) == 1 + 121
    assert "StartupLocality 3" in lines[2]
    secure_boot = next(line for line in lines if "EV_EFI_VARIABLE_DRIVER_CONFIG" in line)
    assert "SecureBoot {8be4df61-93ca-11d2-aa0d-00e098032b8c} (1 bytes)" in secure_boot
    assert any("EV_EFI_BOOT_SERVICES_APPLICATION" in line and "device path" in line
               for line in lines)
    assert any("'ACPI DATA'" in line for line in lines)
    assert all(len(line) < 200 for line in lines)


def test_show_marks_undecodable_data(capsys):
    code, out, _ = run(["eventlog", "show", str(EVENTLOG_DIR / "sb_cert_eventlog")], capsys)
    assert code == 0 and "undecodable (UEFI_IMAGE_LOAD_EVENT at offset 24" in out


@pytest.mark.parametrize("action", ["replay", "show"])
def test_malformed_log_is_one_line_on_stderr(action, tmp_path, capsys):
    bad = tmp_path / "truncated"
    bad.write_bytes((EVENTLOG_DIR / "crypto_agile_eventlog").read_bytes()[:100])
    code, out, err = run(["eventlog", action, str(bad)], capsys)
    assert code == 1 and out == ""
    assert err == ("trusted-launch eventlog: error: event log at offset 79: "
                   "digest of 32 bytes runs past the end\n")


def test_missing_file_is_an_error(tmp_path, capsys):
    code, _, err = run(["eventlog", "replay", str(tmp_path / "nope")], capsys)
    assert code == 1 and "No such file" in err and err.count("\n") == 1


def test_console_script_end_to_end(tmp_path, expected_pcrs):
    good = subprocess.run([str(CLI), "eventlog", "replay", "--json",
                           str(EVENTLOG_DIR / "option_rom_eventlog")],
                          capture_output=True, text=True, check=False)
    assert good.returncode == 0
    assert json.loads(good.stdout) == expected_pcrs["option_rom_eventlog"]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    bad = subprocess.run([str(CLI), "eventlog", "show", str(empty)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr == ("trusted-launch eventlog: error: event log at offset 0: "
                          "empty event log\n")


@pytest.mark.parametrize("content", [b"[api]\nbind_port = 8443\ncert_file = /etc/ttp.pem\n",
                                     b"\x7fELF\x02\x01\x01" + bytes(60)])
def test_a_file_that_is_no_event_log_is_named_as_such(tmp_path, capsys, content):
    other = tmp_path / "ttp.conf"
    other.write_bytes(content)
    code, _, err = run(["eventlog", "replay", str(other)], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "not a TCG event log" in err and "out of range" in err  # the reason stays visible
    assert "binary_bios_measurements" in err
