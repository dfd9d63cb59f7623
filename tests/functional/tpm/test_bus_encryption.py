"""Secrets leave the TPM encrypted: record the TCTI traffic through a TCP proxy."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from tpm2_pytss.types import TPM2B_PUBLIC

from trusted_launch.sandbox.swtpm import free_port_pair
from trusted_launch.tpm.bindkeys import create_bind_key, ecdh_zgen, rsa_decrypt
from trusted_launch.tpm.device import TPMDevice

pytestmark = pytest.mark.swtpm

LABEL = b"trusted-launch/v1 release\0"


class RecordingProxy:
    """Forwards a swtpm port pair (data, control) and records the data channel."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port_pair()
        self.sent = bytearray()      # client -> TPM
        self.received = bytearray()  # TPM -> client
        self._listeners = []
        for offset in (0, 1):
            listener = socket.create_server(("127.0.0.1", self.port + offset))
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, target_port + offset,
                                                        offset == 0), daemon=True).start()

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()

    def _accept(self, listener: socket.socket, target: int, record: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", target))
                for src, dst, log in ((client, upstream, self.sent),
                                      (upstream, client, self.received)):
                    threading.Thread(target=self._pump, daemon=True,
                                     args=(src, dst, log if record else None)).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if log is not None:
                    log.extend(chunk)
                dst.sendall(chunk)
        for sock in (src, dst):  # shutdown wakes the other direction's blocked recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def proxied(booted_swtpm):
    proxy = RecordingProxy(booted_swtpm.port)
    with TPMDevice(proxy.tcti) as device:
        device.ensure_attestation_key()
        yield device, proxy
    proxy.close()


def test_ecdh_shared_secret_is_encrypted_on_the_wire(proxied):
    device, proxy = proxied
    key = create_bind_key(device, "ecc", "sha256:0-7")
    area = TPM2B_PUBLIC.unmarshal(key.public)[0].publicArea
    bind_public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(area.unique.ecc.x), "big"),
        int.from_bytes(bytes(area.unique.ecc.y), "big"), ec.SECP256R1()).public_key()
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    peer_x = ephemeral.public_key().public_numbers().x.to_bytes(32, "big")
    peer_y = ephemeral.public_key().public_numbers().y.to_bytes(32, "big")
    proxy.sent.clear()
    proxy.received.clear()
    shared = ecdh_zgen(device, key, (peer_x, peer_y))
    assert shared == ephemeral.exchange(ec.ECDH(), bind_public)
    assert peer_x in proxy.sent          # the recording sees plain parameters ...
    assert shared not in proxy.received  # ... but not the shared secret


def test_rsa_plaintext_is_encrypted_on_the_wire(proxied):
    device, proxy = proxied
    key = create_bind_key(device, "rsa", "sha256:0-7")
    modulus = bytes(TPM2B_PUBLIC.unmarshal(key.public)[0].publicArea.unique.rsa)
    message = secrets.token_bytes(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=LABEL)
    ciphertext = rsa.RSAPublicNumbers(65537, int.from_bytes(modulus, "big")).public_key(
    ).encrypt(message, oaep)
    proxy.received.clear()
    assert rsa_decrypt(device, key, ciphertext, LABEL) == message
    assert len(proxy.received) > len(message)
    assert message not in proxy.received
