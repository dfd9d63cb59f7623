"""Property tests: hostile bytes give entries or an EvidenceError, never anything else."""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trusted_launch.evidence import ima
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EvidenceError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SEED_ENTRIES = [
    ima.encode_ima_ng_entry("boot_aggregate", hashlib.sha256(b"b").digest()),
    ima.encode_entry("ima", "/sbin/init", hashlib.sha1(b"i").digest()),
    ima.encode_ima_ng_entry("/usr/bin/a b", hashlib.sha256(b"a").digest(), signature=b"\3\2s"),
    ima.encode_entry("ima-buf", "kexec-cmdline", hashlib.sha256(b"c").digest(), buffer=b"x=1"),
    ima.encode_ima_ng_entry("/lib/z.so", hashlib.sha384(b"z").digest(), "sha384"),
]
SEED_ASCII = ima.format_ascii(SEED_ENTRIES)
SEED_BINARY = ima.format_binary(SEED_ENTRIES)


def _consume(data: bytes) -> None:
    """Every entry point either succeeds with entries/state or raises EvidenceError."""
    for call in (ima.parse_ima_list, ima.replay_ima_list, ima.parse_ascii, ima.parse_binary,
                 ima.replay_ascii, ima.replay_binary):
        try:
            result = call(data)
        except EvidenceError:
            continue
        assert isinstance(result, list | ima.ImaReplayState)
        if isinstance(result, list):
            assert all(isinstance(entry, ima.ImaEntry) for entry in result)


@st.composite
def _mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "u32"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\x80"]))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    _consume(data)


@FUZZ
@given(_mutated(SEED_ASCII))
def test_mutated_ascii_list(data):
    _consume(data)


@FUZZ
@given(_mutated(SEED_BINARY))
def test_mutated_binary_list(data):
    _consume(data)


@FUZZ
@given(st.lists(st.text(st.characters(blacklist_characters="\n\0", codec="utf-8"),
                        min_size=0, max_size=40), min_size=1, max_size=6),
       st.sampled_from(["sha1", "sha256", "sha512"]))
def test_generated_entries_round_trip_and_all_replays_agree(paths, alg):
    size = HashAlg[alg.upper()].digest_size
    entries = [ima.encode_ima_ng_entry(p, hashlib.sha512(p.encode()).digest()[:size], alg,
                                       index=i) for i, p in enumerate(paths)]
    text = ima.format_ascii(entries)
    assert ima.parse_ascii(text) == entries
    assert ima.parse_binary(ima.format_binary(entries)) == entries
    state = ima.replay(entries)
    assert ima.replay_ascii(text).pcrs == state.pcrs
    assert ima.replay_ascii(text, (HashAlg.SHA256, HashAlg.SHA1)).pcrs == state.pcrs


def _outcome(call, data):
    try:
        return dict(call(data).pcrs)
    except EvidenceError as exc:
        return type(exc)


@FUZZ
@given(_mutated(SEED_ASCII))
def test_fast_ascii_path_agrees_with_the_general_decoder(data):
    fast = _outcome(ima.replay_ascii, data)
    general = _outcome(lambda d: ima.replay(ima.parse_ascii(d)), data)
    if isinstance(fast, dict) or isinstance(general, dict):
        assert fast == general


@FUZZ
@given(_mutated(SEED_BINARY + ima.format_binary(SEED_ENTRIES[:1])))
def test_fast_binary_path_agrees_with_the_general_decoder(data):
    fast = _outcome(ima.replay_binary, data)
    general = _outcome(lambda d: ima.replay(ima.parse_binary(d)), data)
    if isinstance(fast, dict) or isinstance(general, dict):
        assert fast == general
