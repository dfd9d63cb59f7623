"""verify_vm against the real agent: right N passes; wrong N, id, key or tampering fail."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os

import pytest

from tests.unit.guest.conftest import SERVER_ID, serve_in_thread, ssh_host_key_line
from trusted_launch.client.challenge import (
    VerifiedVM,
    known_hosts_line,
    split_address,
    verify_vm,
)
from trusted_launch.client.errors import VMVerificationFailed


def expected_fingerprint(pub_file: str) -> str:
    return line_fingerprint(open(pub_file).read())


def line_fingerprint(line: str) -> str:
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_right_nonce_verifies(agent):
    vm = verify_vm(agent.address, SERVER_ID, agent.nonce)
    assert vm.server_id == SERVER_ID
    assert vm.ssh_host_key_fingerprint == expected_fingerprint(agent.ssh_key_file)
    assert vm.ssh_host_key.split()[1] == open(agent.ssh_key_file).read().split()[1]


def test_expected_fingerprint(agent):
    fingerprint = expected_fingerprint(agent.ssh_key_file)
    vm = verify_vm(agent.address, SERVER_ID, agent.nonce, expected_fingerprint=fingerprint)
    assert vm.ssh_host_key_fingerprint == fingerprint
    with pytest.raises(VMVerificationFailed, match="expected SHA256:other"):
        verify_vm(agent.address, SERVER_ID, agent.nonce, expected_fingerprint="SHA256:other")


def test_wrong_nonce_fails(agent):
    with pytest.raises(VMVerificationFailed, match="MAC mismatch"):
        verify_vm(agent.address, SERVER_ID, os.urandom(32))


def test_wrong_server_id_is_refused_by_the_agent(agent):
    with pytest.raises(VMVerificationFailed, match=r"HTTP 400.*not this server's id"):
        verify_vm(agent.address, "another-server", agent.nonce)


def test_unreachable_agent(agent):
    with pytest.raises(VMVerificationFailed, match="cannot reach"):
        verify_vm("127.0.0.1:1", SERVER_ID, agent.nonce, timeout=2)


class TamperingProxy(http.server.ThreadingHTTPServer):
    """Forwards POSTs to the agent and rewrites the JSON answer with ``tamper``."""

    def __init__(self, upstream: str, tamper) -> None:
        self.upstream = split_address(upstream)
        self.tamper = tamper
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=5)
        upstream.request("POST", self.path, body=body,
                         headers={"Content-Type": "application/json"})
        answer = self.server.tamper(json.loads(upstream.getresponse().read()))
        upstream.close()
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def flip_mac(answer: dict) -> dict:
    mac = bytearray(base64.urlsafe_b64decode(answer["mac"] + "="))
    mac[0] ^= 1
    return {**answer, "mac": base64.urlsafe_b64encode(bytes(mac)).decode().rstrip("=")}


def other_key(answer: dict) -> dict:
    """Substitute an attacker's SSH host key and fingerprint (MAC left alone)."""
    line = ssh_host_key_line()
    return {**answer, "ssh_host_key": line, "ssh_host_key_fingerprint": line_fingerprint(line)}


def swap_key_only(answer: dict) -> dict:
    """Substitute only the key; its fingerprint no longer matches the MAC'd one."""
    return {**answer, "ssh_host_key": ssh_host_key_line()}


@pytest.mark.parametrize("tamper,problem", [
    (flip_mac, "MAC mismatch"),
    (lambda a: {**a, "mac": "not*base64"}, "not base64url"),
    (lambda a: {**a, "mac": None}, "no 'mac'"),
    (lambda a: {**a, "server_id": "other"}, "answered for server 'other'"),
    (other_key, "MAC mismatch"),
    (swap_key_only, "does not match its authenticated fingerprint"),
    (lambda a: [a], "did not answer a JSON object"),
], ids=["flip-mac", "bad-mac", "no-mac", "server-id", "attacker-key", "key-only", "not-object"])
def test_tampered_answers_fail(agent, tamper, problem):
    proxy = TamperingProxy(agent.address, tamper)
    thread = serve_in_thread(proxy)
    try:
        with pytest.raises(VMVerificationFailed, match=problem):
            verify_vm(f"127.0.0.1:{proxy.server_address[1]}", SERVER_ID, agent.nonce)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def test_untampered_proxy_passes(agent):
    """The proxy itself does not break verification (so the failures above are tampering)."""
    proxy = TamperingProxy(agent.address, lambda answer: answer)
    thread = serve_in_thread(proxy)
    try:
        vm = verify_vm(f"127.0.0.1:{proxy.server_address[1]}", SERVER_ID, agent.nonce)
        assert vm.server_id == SERVER_ID
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def test_known_hosts_line():
    vm = VerifiedVM("id", "SHA256:x", "ssh-ed25519 AAAAC3")
    assert known_hosts_line("[fd00::5]:8950", vm) == "fd00::5 ssh-ed25519 AAAAC3"
    assert known_hosts_line("10.0.0.5:8950", VerifiedVM("id", "SHA256:x")) is None


@pytest.mark.parametrize("address", ["host", "host:", "host:0", "host:99999", ":80"])
def test_bad_addresses(address):
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address(address)
