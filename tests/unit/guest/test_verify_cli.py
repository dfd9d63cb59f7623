"""``trusted-launch verify`` against the real agent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from tests.unit.guest.conftest import SERVER_ID
from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.errors import VMVerificationFailed
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_guest_console_script_process_end_to_end(config_drive):
    """``trusted-launch-guest`` as its own process, found via the config drive meta data."""
    root, nonce = config_drive
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "trusted_launch.cmd.guest", "--listen", f"127.0.0.1:{port}",
         "--nonce-file", str(root / "trusted_launch/nonce"),
         "--meta-data", str(root / "openstack/latest/meta_data.json"),
         "--ssh-host-key", str(root / "ssh_host_ed25519_key.pub")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        vm = _verify_when_up(f"127.0.0.1:{port}", nonce, process)
        assert vm.server_id == SERVER_ID
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "answering challenges" in err
    assert nonce.hex() not in err


def _verify_when_up(address: str, nonce: bytes, process: subprocess.Popen):
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"agent exited: {process.communicate()[1]}")
        try:
            return verify_vm(address, SERVER_ID, nonce, timeout=2)
        except VMVerificationFailed as exc:
            if "cannot reach" not in str(exc):
                raise
            time.sleep(0.05)
    raise AssertionError("agent did not start")
