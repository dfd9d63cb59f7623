"""``trusted-launch ima``: replay output, saved state, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import IMA_DIR
from trusted_launch.cmd.cli import main
from trusted_launch.evidence import ima
from trusted_launch.evidence.algorithms import HashAlg

SHA256_LIST = IMA_DIR / "ima-ng-sha256_ascii_runtime_measurements"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["ima", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_replay_json_prints_exactly_the_pcr10_object(capsys):
    status, out, err = _run(capsys, "replay", str(SHA256_LIST), "--json")
    assert (status, err) == (0, "")
    expected = ima.replay(ima.parse_ascii(SHA256_LIST.read_bytes())).pcr_values()
    assert json.loads(out) == expected
    assert set(expected) == {"sha1", "sha256"} and list(expected["sha1"]) == ["10"]
    assert out.count("\n") == 1


def test_replay_of_binary_list_with_chosen_banks(capsys, tmp_path):
    path = tmp_path / "binary_runtime_measurements"
    path.write_bytes(ima.synthetic_ima_ng_list(30, binary=True))
    status, out, _ = _run(capsys, "replay", str(path), "--json", "--bank", "sha384")
    assert status == 0
    state = ima.replay_ascii(ima.synthetic_ima_ng_list(30), (HashAlg.SHA384,))
    assert json.loads(out) == {"sha384": {"10": state.pcrs[HashAlg.SHA384].hex()}}


def test_state_file_is_created_then_resumed(capsys, tmp_path):
    full = ima.synthetic_ima_ng_list(60)
    lines = full.splitlines(keepends=True)
    listing, state_file = tmp_path / "ascii_runtime_measurements", tmp_path / "state.json"
    listing.write_bytes(b"".join(lines[:45]))
    assert _run(capsys, "replay", str(listing), "--state", str(state_file))[0] == 0
    assert ima.ImaReplayState.from_json(json.loads(state_file.read_text())).count == 45
    listing.write_bytes(full)
    status, out, _ = _run(capsys, "replay", str(listing), "--state", str(state_file), "--json")
    assert status == 0
    assert json.loads(out) == ima.replay_ascii(full).pcr_values()
    assert json.loads(state_file.read_text())["count"] == 60


@pytest.mark.parametrize(("content", "message"), [
    (b"10 0011 ima-ng sha256:00 /x\n", "template hash of 2 bytes"),
    (SHA256_LIST.read_bytes().replace(b"80255d9c", b"90255d9c"), "does not match"),
])
def test_bad_list_exits_1_with_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "list"
    path.write_bytes(content)
    status, out, err = _run(capsys, "replay", str(path), "--json")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and message in err and err.startswith("trusted-launch ima: error")


def test_bad_state_file_exits_1(capsys, tmp_path):
    state_file = tmp_path / "state.json"
    state_file.write_text("{not json")
    status, _, err = _run(capsys, "replay", str(SHA256_LIST), "--state", str(state_file))
    assert status == 1 and "not JSON" in err
    state_file.write_text(json.dumps({"version": 1, "count": 1, "pcrs": {}}))
    assert _run(capsys, "replay", str(SHA256_LIST), "--state", str(state_file))[0] == 1


def test_generate_writes_a_list_that_replays(capsys, tmp_path):
    out_file = tmp_path / "generated"
    status, out, _ = _run(capsys, "generate", "--count", "25", str(out_file))
    assert status == 0 and "25 entries" in out
    assert ima.replay_ima_list(out_file.read_bytes()).count == 25
    assert _run(capsys, "generate", "--count", "-1", str(out_file))[0] == 1


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    path = tmp_path / "list"
    path.write_bytes(b"10 zz ima-ng sha256:00 /x\n")
    proc = subprocess.run([sys.executable, "-m", "trusted_launch.cmd.cli", "ima", "replay",
                           str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "template hash is not hex" in proc.stderr
