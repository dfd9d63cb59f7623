"""``trusted-launch verify`` against the real agent."""

from __future__ import annotations

import json
import os

from tests.unit.guest.conftest import SERVER_ID
from trusted_launch.cmd import cli


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(["verify", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_verify_prints_fingerprint_and_known_hosts_line(agent, capsys):
    status, out, _ = run(capsys, "--server-id", SERVER_ID, "--address", agent.address,
                         "--nonce-file", agent.nonce_file)
    assert status == 0
    assert agent.identity.ssh_host_key_fingerprint in out
    assert f"127.0.0.1 {agent.identity.ssh_host_key}" in out
    assert agent.nonce.hex() not in out


def test_verify_json_with_pinned_fingerprint(agent, capsys):
    status, out, _ = run(capsys, "--server-id", SERVER_ID, "--address", agent.address,
                         "--nonce-file", agent.nonce_file, "--json",
                         "--expect-fingerprint", agent.identity.ssh_host_key_fingerprint)
    document = json.loads(out)
    assert status == 0 and document["verified"] is True
    assert document["known_hosts"] == f"127.0.0.1 {agent.identity.ssh_host_key}"


def test_verify_with_wrong_nonce_fails_in_one_line(agent, capsys, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text(os.urandom(32).hex())
    status, out, err = run(capsys, "--server-id", SERVER_ID, "--address", agent.address,
                           "--nonce-file", str(wrong))
    assert status == 1 and out == ""
    assert err.startswith("trusted-launch verify: error:") and "MAC mismatch" in err
    assert err.count("\n") == 1


def test_verify_with_unreadable_nonce_file(agent, capsys, tmp_path):
    status, _, err = run(capsys, "--server-id", SERVER_ID, "--address", agent.address,
                         "--nonce-file", str(tmp_path / "absent"))
    assert status == 1 and "absent" in err
