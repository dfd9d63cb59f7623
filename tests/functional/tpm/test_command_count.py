"""TPM commands on the launch path, counted from device.command_log on a real swtpm.

A warm launch (its bind key pre-loaded by BindKeyPool.fill) sends exactly
Certify, PolicyPCR, ECDH_ZGen, FlushContext. Keys that were not pre-loaded
fall back to Load; no launch leaves a key loaded, and between launches the
TPM holds at most the one pre-loaded key (TPMDevice.resident).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trusted_launch.compute.errors import TTPUnreachable
from trusted_launch.compute.launch import HostIdentity, PendingRelease, TrustedLaunchHost
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.crypto.sealing import ReleasedSecrets, release_aad, seal_to_bind_key
from trusted_launch.crypto.token import ImageDigest, LaunchToken, key_id_for, seal_token
from trusted_launch.evidence.tpm2 import parse_public
from trusted_launch.tpm import bindkeys
from trusted_launch.tpm.bindkeys import BindKeyPool, certify, ecdh_zgen

pytestmark = pytest.mark.swtpm

SELECTION = "sha256:0,1,2,3,4,5,6,7"
WARM_LAUNCH = ["certify", "policy_pcr", "ecdh_zgen", "flush_context"]


def _peer() -> tuple[ec.EllipticCurvePrivateKey, tuple[bytes, bytes]]:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    return private, (numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big"))


def _software_shared_x(peer: ec.EllipticCurvePrivateKey, key: bindkeys.BindKey) -> bytes:
    return peer.exchange(ec.ECDH(), parse_public(key.public).public_key())


def _launch(device, key) -> bytes:
    """Certify then decrypt with ``key``; check the TPM's ECDH against software."""
    certify(device, key, b"q" * 32)
    peer, point = _peer()
    shared = ecdh_zgen(device, key, point)
    assert shared == _software_shared_x(peer, key)
    return shared


def _warm_pool(device, size: int = 2) -> BindKeyPool:
    pool = BindKeyPool(device, algorithm="ecc", pcr_selection=SELECTION, size=size)
    pool.fill()
    return pool


def test_warm_launch_sends_four_tpm_commands(booted_device):
    pool = _warm_pool(booted_device)
    key = pool.acquire()
    booted_device.command_log.clear()
    _launch(booted_device, key)
    assert list(booted_device.command_log) == WARM_LAUNCH
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def test_fill_keeps_exactly_the_next_key_loaded(booted_device):
    pool = _warm_pool(booted_device, size=3)
    assert len(booted_device.transient_handles()) == 1
    assert booted_device.transient_handles() == booted_device.resident_handles()
    assert booted_device.resident.name == pool.acquire().name


def test_key_not_preloaded_falls_back_to_load(booted_device):
    pool = _warm_pool(booted_device)
    preloaded, other = pool.acquire(), pool.acquire()
    booted_device.command_log.clear()
    _launch(booted_device, other)
    assert list(booted_device.command_log) == ["load", "certify", "flush_context",
                                               "load", "policy_pcr", "ecdh_zgen",
                                               "flush_context"]
    assert booted_device.resident.name == preloaded.name  # untouched by the fallback
    booted_device.command_log.clear()
    _launch(booted_device, preloaded)
    assert booted_device.command_log[0] == "certify"
    assert booted_device.transient_handles() == []


def test_fill_leaves_a_certified_key_in_flight_alone(booted_device):
    pool = _warm_pool(booted_device, size=2)
    key = pool.acquire()
    certify(booted_device, key, b"q" * 32)
    pool.fill()  # the driver refills while this launch waits for the TTP
    assert booted_device.resident.name == key.name
    booted_device.command_log.clear()
    ecdh_zgen(booted_device, key, _peer()[1])
    assert list(booted_device.command_log) == WARM_LAUNCH[1:]
    pool.fill()
    assert booted_device.resident.name == pool.acquire().name


def test_full_object_memory_flushes_the_resident_key_and_retries(booted_device):
    pool = _warm_pool(booted_device)
    preloaded, other = pool.acquire(), pool.acquire()
    foreign = bindkeys.create_bind_key(booted_device, "ecc", SELECTION)
    with booted_device.esapi("Load") as ectx:  # another user takes the third slot
        foreign_handle = ectx.load(booted_device.srk(ectx), *_blobs(foreign))
    _launch(booted_device, other)  # Load hits TPM_RC_OBJECT_MEMORY, then succeeds
    assert booted_device.resident is None
    _launch(booted_device, preloaded)  # its launch falls back to Load
    with booted_device.esapi("FlushContext") as ectx:
        ectx.flush_context(foreign_handle)
    assert booted_device.transient_handles() == []


def _blobs(key: bindkeys.BindKey):
    from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC

    return TPM2B_PRIVATE.unmarshal(key.private)[0], TPM2B_PUBLIC.unmarshal(key.public)[0]


def test_twenty_concurrent_launches_on_one_tpm(booted_device):
    pool = _warm_pool(booted_device, size=6)
    stop = threading.Event()
    errors: list[BaseException] = []
    done: list[int] = []

    def refill() -> None:
        while not stop.is_set():
            pool.fill()

    def launch(index: int) -> None:
        try:
            key = pool.acquire()
            certify(booted_device, key, index.to_bytes(4, "big"))
            time.sleep(0.005)  # the TTP round trip; other launches interleave here
            peer, point = _peer()
            assert ecdh_zgen(booted_device, key, point) == _software_shared_x(peer, key)
            done.append(index)
        except BaseException as exc:
            errors.append(exc)

    filler = threading.Thread(target=refill)
    filler.start()
    threads = [threading.Thread(target=launch, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    filler.join()
    assert errors == []
    assert sorted(done) == list(range(20))
    assert booted_device.transient_handles() == booted_device.resident_handles()
    assert len(booted_device.transient_handles()) <= 1


def _token() -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    public = X25519PrivateKey.generate().public_key()
    token = LaunchToken(nonce=secrets.token_bytes(32), profile="high",
                        image_digest=ImageDigest("sha256", bytes(32)), expires_at=2**31)
    return seal_token(token, public, key_id_for(public))


def _host(device, pool) -> TrustedLaunchHost:
    return TrustedLaunchHost(device=device, pool=pool,
                             identity=HostIdentity("host-1", "-----BEGIN CERTIFICATE-----\n"),
                             read_event_log=lambda: b"log", bind_key_pcrs=SELECTION)


def test_trusted_launch_host_path_sends_four_tpm_commands(booted_device):
    host = _host(booted_device, _warm_pool(booted_device))
    token, launch_id = _token(), str(uuid.uuid4())
    booted_device.command_log.clear()
    key, body = host.evidence(token=token, launch_id=launch_id)
    sent = ReleasedSecrets(secrets.token_bytes(32), ImageDigest("sha256", bytes(32)))
    envelope = seal_to_bind_key(parse_public(key.public).public_key(), sent,
                                aad=release_aad(launch_id, key.name))
    opened = host.open(PendingRelease(key, launch_id, envelope))
    assert opened.nonce == sent.nonce
    assert list(booted_device.command_log) == WARM_LAUNCH
    assert body["launch_id"] == launch_id
    assert booted_device.transient_handles() == []


def test_failed_attestation_unloads_the_launch_key(booted_device):
    host = _host(booted_device, _warm_pool(booted_device))
    unreachable = TTPClient("https://127.0.0.1:9", timeout=2, connect_retries=0)
    with pytest.raises(TTPUnreachable):
        host.attest(unreachable, token=_token(), launch_id=str(uuid.uuid4()))
    assert booted_device.resident is None
    assert booted_device.transient_handles() == []


def test_unopenable_release_unloads_the_launch_key(booted_device):
    from trusted_launch.compute.errors import ReleaseUnusable

    host = _host(booted_device, _warm_pool(booted_device))
    key, _ = host.evidence(token=_token(), launch_id="launch-1")
    with pytest.raises(ReleaseUnusable):
        host.open(PendingRelease(key, "launch-1", b"\x01\x01" + bytes(100)))
    assert booted_device.transient_handles() == []
