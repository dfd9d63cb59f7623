"""IMA measurement lists: parsing, template hashes, PCR 10 replay, resuming."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest

from tests.conftest import IMA_DIR
from trusted_launch.evidence import ima
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import (
    EvidenceError,
    ParseError,
    PcrIndexMismatch,
    ReplayStateError,
    TemplateHashMismatch,
    UnknownAlgorithmError,
    UnknownTemplateError,
)

SHA1_LIST = IMA_DIR / "ima-ng-sha1_ascii_runtime_measurements"
SHA256_LIST = IMA_DIR / "ima-ng-sha256_ascii_runtime_measurements"
ALL_BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _reference_pcr10(text: bytes, bank: str) -> bytes:
    """Independent, deliberately naive replay of an ima-ng ascii list."""
    pcr = bytes(hashlib.new(bank).digest_size)
    for line in text.decode().splitlines():
        _, template_hash, _, digest_field, path = line.split(" ", 4)
        alg, hex_digest = digest_field.split(":")
        d_ng = alg.encode() + b":\x00" + bytes.fromhex(hex_digest)
        n_ng = path.encode() + b"\x00"
        data = _u32(len(d_ng)) + d_ng + _u32(len(n_ng)) + n_ng
        if set(template_hash) == {"0"}:
            measurement = b"\xff" * len(pcr)
        else:
            measurement = hashlib.new(bank, data).digest()
        pcr = hashlib.new(bank, pcr + measurement).digest()
    return pcr


def _mixed_entries() -> list[ima.ImaEntry]:
    """Every template, spaces and non-UTF-8 bytes in names, a violation."""
    sha256 = hashlib.sha256
    entries = [
        ima.encode_ima_ng_entry("boot_aggregate", sha256(b"boot").digest()),
        ima.encode_entry("ima", "/sbin/init", hashlib.sha1(b"init").digest()),
        ima.encode_ima_ng_entry("/opt/my app/run me", sha256(b"a").digest()),
        ima.encode_ima_ng_entry("/usr/bin/signed", sha256(b"s").digest(), signature=b"\x03\x02sig"),
        ima.encode_entry("ima-sig", "/usr/bin/unsigned app", sha256(b"u").digest()),
        ima.encode_entry("ima-buf", "kexec-cmdline", sha256(b"c").digest(), buffer=b"root=/x"),
        ima.encode_ima_ng_entry("/lib/caf\udce9.so", hashlib.sha512(b"l").digest(), "sha512"),
        ima.encode_ima_ng_entry("/etc/sha1", hashlib.sha1(b"e").digest(), "sha1"),
    ]
    violation = ima.encode_ima_ng_entry("/var/log/open-writers", bytes(32))
    entries.append(dataclasses.replace(violation, template_hash=bytes(20)))
    entries.append(ima.encode_ima_ng_entry("/usr/bin/last", sha256(b"z").digest()))
    return [dataclasses.replace(e, index=i) for i, e in enumerate(entries)]


# -- real lists -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [SHA1_LIST, SHA256_LIST], ids=["sha1", "sha256"])
def test_real_list_replays_to_independently_computed_pcr10(path):
    text = path.read_bytes()
    state = ima.replay_ascii(text, ALL_BANKS)
    for bank in ALL_BANKS:
        assert state.pcrs[bank] == _reference_pcr10(text, bank.bank_name)
    assert state.count == 2


@pytest.mark.parametrize("path", [SHA1_LIST, SHA256_LIST], ids=["sha1", "sha256"])
def test_real_list_round_trips_byte_for_byte(path):
    text = path.read_bytes()
    entries = ima.parse_ascii(text)
    assert ima.format_ascii(entries) == text
    assert ima.parse_binary(ima.format_binary(entries)) == entries


def test_reencoded_template_data_hashes_to_the_printed_template_hash():
    entry = ima.parse_ascii(SHA256_LIST.read_bytes())[1]
    digest = bytes.fromhex("96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754")
    assert entry.template_data == (b"\x28\0\0\0sha256:\0" + digest + b"\x06\0\0\0/data\0")
    assert hashlib.sha1(entry.template_data).hexdigest() == \
        "80255d9c7dad91ef5f21b18560a47642d6f4d653"
    assert (entry.path, entry.file_digest_alg, entry.file_digest) == ("/data", "sha256", digest)


def test_zero_template_hash_extends_ff_not_the_template_digest():
    entries = ima.parse_ascii(SHA1_LIST.read_bytes())
    assert entries[0].is_violation and not entries[1].is_violation
    state = ima.replay(entries[:1], (HashAlg.SHA256,))
    ff_extended = hashlib.sha256(bytes(32) + b"\xff" * 32).digest()
    assert state.pcrs[HashAlg.SHA256] == ff_extended


# -- templates and formats ------------------------------------------------------------------

def test_mixed_templates_round_trip_ascii_and_binary():
    entries = _mixed_entries()
    text = ima.format_ascii(entries)
    assert ima.parse_ascii(text) == entries
    assert ima.parse_binary(ima.format_binary(entries)) == entries
    assert ima.parse_ima_list(ima.format_binary(entries)) == entries
    assert ima.parse_ima_list(text) == entries


@pytest.mark.parametrize("banks", [ima.DEFAULT_BANKS, (HashAlg.SHA1,), ALL_BANKS,
                                   (HashAlg.SHA384, HashAlg.SHA1)])
def test_fast_ascii_binary_and_entry_replays_agree(banks):
    entries = _mixed_entries()
    from_entries = ima.replay(entries, banks)
    assert ima.replay_ascii(ima.format_ascii(entries), banks).pcrs == from_entries.pcrs
    assert ima.replay_binary(ima.format_binary(entries), banks).pcrs == from_entries.pcrs
    assert from_entries.count == len(entries)
    assert from_entries.pcrs[banks[0]] != bytes(banks[0].digest_size)


def test_ima_sig_without_signature_keeps_the_kernels_trailing_space():
    entry = ima.encode_entry("ima-sig", "/bin/a b", hashlib.sha256(b"x").digest())
    line = ima.format_ascii([entry])
    assert line.endswith(b" /bin/a b \n")
    assert entry.signature is None
    assert entry.template_data.endswith(b"/bin/a b\0" + _u32(0))
    assert ima.parse_ascii(line) == [entry]


def test_legacy_ima_template_hashes_the_name_padded_to_256_bytes():
    digest = hashlib.sha1(b"init").digest()
    padded = b"/sbin/init".ljust(256, b"\0")
    template_hash = hashlib.sha1(digest + padded).digest()
    raw = (_u32(10) + template_hash + _u32(3) + b"ima" + digest + _u32(10) + b"/sbin/init")
    [entry] = ima.parse_binary(raw)
    assert entry.template_data == digest + padded
    assert ima.replay([entry]).pcrs[HashAlg.SHA1] == \
        hashlib.sha1(bytes(20) + template_hash).digest()
    assert ima.format_binary([entry]) == raw


def test_non_utf8_path_survives_as_surrogates_and_hashes_the_raw_bytes():
    raw_path = b"/lib/caf\xe9.so"
    digest = hashlib.sha256(b"l").digest()
    entry = ima.encode_ima_ng_entry(raw_path.decode("utf-8", "surrogateescape"), digest)
    assert raw_path + b"\0" in entry.template_data
    [parsed] = ima.parse_ascii(ima.format_ascii([entry]))
    assert parsed.path_bytes == raw_path and parsed.path == "/lib/caf\udce9.so"


def test_single_digit_pcr_is_padded_like_the_kernel_and_replayed_only_on_request():
    entry = ima.encode_ima_ng_entry("/x", hashlib.sha256(b"x").digest(), pcr=9)
    text = ima.format_ascii([entry])
    assert text.startswith(b" 9 ")
    assert ima.replay_ascii(text, pcr=9).count == 1
    with pytest.raises(PcrIndexMismatch, match="extends PCR 9, not the replayed PCR 10"):
        ima.replay_ascii(text)


def test_per_bank_ascii_list_with_sha256_template_hashes():
    entries = _mixed_entries()
    per_bank = [e if e.is_violation else dataclasses.replace(
        e, template_hash=hashlib.sha256(e.template_data).digest()) for e in entries]
    per_bank[-2] = dataclasses.replace(per_bank[-2], template_hash=bytes(32))
    text = ima.format_ascii(per_bank)
    assert ima.replay_ascii(text).pcrs == ima.replay(entries).pcrs


def test_synthetic_list_is_correct_and_deterministic():
    text = ima.synthetic_ima_ng_list(20)
    assert text == ima.synthetic_ima_ng_list(20)
    assert text.count(b"\n") == 20
    assert ima.replay_ascii(text).pcrs == ima.replay_binary(
        ima.synthetic_ima_ng_list(20, binary=True)).pcrs
    assert ima.synthetic_ima_ng_list(0) == b""


def test_encode_refuses_what_the_kernel_cannot_produce():
    with pytest.raises(EvidenceError, match="no signature field"):
        ima.encode_entry("ima-ng", "/x", bytes(32), signature=b"s")
    with pytest.raises(UnknownTemplateError):
        ima.encode_entry("ima-modsig", "/x", bytes(32))
    with pytest.raises(EvidenceError, match="newline"):
        ima.format_ascii([ima.encode_ima_ng_entry("/a\nb", bytes(32))])


def test_empty_list_replays_to_zero_pcrs():
    state = ima.replay_ima_list(b"")
    assert state.count == 0 and state.pcrs[HashAlg.SHA256] == bytes(32)


# -- hostile ascii ----------------------------------------------------------------------------

GOOD_LINE = SHA256_LIST.read_bytes().splitlines()[1]


@pytest.mark.parametrize(("line", "error", "message"), [
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng", ParseError, "found 3 fields"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d65z ima-ng sha256:00 /x", ParseError,
     "template hash is not hex"),
    (b"1x 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:00 /x", ParseError,
     "PCR index '1x' is not a number"),
    (b"99999999999 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:00 /x", ParseError,
     "is not a number"),
    (b"10 8025 ima-ng sha256:00 /x", ParseError, "template hash of 2 bytes"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-foo sha256:00 /x",
     UnknownTemplateError, "unknown template 'ima-foo'"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng whirl:00 /x",
     UnknownAlgorithmError, "unknown file digest algorithm 'whirl'"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng md5:" + b"00" * 16 + b" /x",
     UnknownAlgorithmError, "md5 is not accepted"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:0011 /x", ParseError,
     "sha256 file digest has 2 bytes, not 32"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:" + b"00" * 32, ParseError,
     "missing file name field"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng " + b"00" * 32 + b" /x", ParseError,
     "no 'alg:' prefix"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-sig sha256:" + b"00" * 32,
     ParseError, "missing file name field"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-sig sha256:" + b"00" * 32 + b" /x",
     ParseError, "missing signature field"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-buf sha256:" + b"00" * 32 + b" n zz",
     ParseError, "buffer is not hex"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima " + b"00" * 19 + b" /x", ParseError,
     "sha1 file digest has 19 bytes"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima " + b"00" * 20 + b" " + b"a" * 256,
     ParseError, "exceeds 255"),
    (b"10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:" + b"00" * 32 + b" /\0",
     ParseError, "NUL byte"),
    (b"", ParseError, "found 1 fields"),
])
def test_malformed_ascii_line_names_the_line_offset_and_problem(line, error, message):
    text = GOOD_LINE + b"\n" + line + b"\n"
    for call in (ima.parse_ascii, ima.replay_ascii, ima.parse_ima_list):
        with pytest.raises(error, match=message) as caught:
            call(text)
        assert f"line 2 at offset {len(GOOD_LINE) + 1}:" in str(caught.value)


def test_template_hash_mismatch_names_entry_line_and_path():
    bad = GOOD_LINE.replace(b"10 80255d9c", b"10 00255d9c")
    text = GOOD_LINE + b"\n" + bad + b"\n"
    for call in (ima.replay_ascii, lambda t: ima.replay(ima.parse_ascii(t))):
        with pytest.raises(TemplateHashMismatch, match=r"IMA entry 1 \(line 2, '/data'\)"):
            call(text)
    with pytest.raises(TemplateHashMismatch, match=r"entry 1 \(offset \d+, '/data'\)"):
        ima.replay_binary(ima.format_binary(ima.parse_ascii(GOOD_LINE)) +
                          ima.format_binary(ima.parse_ascii(bad)))


# -- hostile binary ---------------------------------------------------------------------------

def _binary_ng(template: bytes, data: bytes, pcr: int = 10) -> bytes:
    return _u32(pcr) + hashlib.sha1(data).digest() + _u32(len(template)) + template + \
        _u32(len(data)) + data


def _field(data: bytes) -> bytes:
    return _u32(len(data)) + data


def test_every_truncation_of_a_binary_list_is_a_parse_error():
    entries = _mixed_entries()
    raw = ima.format_binary(entries)
    boundaries = {len(ima.format_binary(entries[:n])) for n in range(len(entries) + 1)}
    for cut in sorted(set(range(len(raw))) - boundaries):
        with pytest.raises(ParseError, match="IMA binary measurement list entry"):
            ima.parse_binary(raw[:cut])
    for cut in boundaries:
        assert len(ima.parse_binary(raw[:cut])) == sorted(boundaries).index(cut)


@pytest.mark.parametrize(("raw", "error", "message"), [
    (_u32(10) + bytes(20) + _u32(6) + b"ima-ng" + _u32(0xFFFFFFFF) + b"\0" * 8, ParseError,
     "template data length 4294967295 runs past the end"),
    (_u32(10) + bytes(20) + _u32(0xFFFFFFFF) + b"x", ParseError, "name length 4294967295"),
    (_u32(10) + bytes(20) + _u32(7) + b"ima-foo" + _field(b""), UnknownTemplateError,
     "unknown template 'ima-foo'"),
    (_binary_ng(b"ima-ng", _field(b"sha256:\0" + bytes(32)) + _field(b"/x")), ParseError,
     "not NUL-terminated"),
    (_binary_ng(b"ima-ng", _field(b"sha256" + bytes(32)) + _field(b"/x\0")), ParseError,
     "no 'alg:' NUL prefix"),
    (_binary_ng(b"ima-ng", _field(b"rot13:\0" + bytes(32)) + _field(b"/x\0")),
     UnknownAlgorithmError, "unknown file digest algorithm 'rot13'"),
    (_binary_ng(b"ima-ng", _field(b"sha256:\0" + bytes(32)) + _field(b"/\0x\0")), ParseError,
     "NUL byte"),
    (_binary_ng(b"ima-ng", _field(b"sha256:\0" + bytes(32)) + _field(b"/x\0") + b"!"),
     ParseError, "1 unexpected trailing bytes"),
    (_binary_ng(b"ima-sig", _field(b"sha256:\0" + bytes(32)) + _field(b"/x\0")), ParseError,
     "sig length needs 4 bytes"),
    (_u32(10) + bytes(20) + _u32(3) + b"ima" + bytes(20) + _u32(300) + b"a" * 300, ParseError,
     "'ima' file name length 300 exceeds 255"),
])
def test_malformed_binary_entry_is_a_specific_error(raw, error, message):
    good = ima.format_binary(_mixed_entries()[:2])
    with pytest.raises(error, match=message) as caught:
        ima.parse_binary(good + raw)
    assert "IMA binary measurement list entry 2 at offset" in str(caught.value)
    with pytest.raises(error):
        ima.replay_ima_list(good + raw)


# -- incremental replay -----------------------------------------------------------------------

def _split(text: bytes, lines: int) -> bytes:
    return b"".join(text.splitlines(keepends=True)[:lines])


@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_resuming_in_chunks_equals_one_full_replay(binary):
    entries = _mixed_entries()
    encode = ima.format_binary if binary else ima.format_ascii
    full = ima.replay_ima_list(encode(entries))
    state = None
    for end in (1, 4, 4, 7, len(entries)):
        state = ima.replay_ima_list(encode(entries[:end]), state=state)
        assert state.count == end
    assert state == full
    assert ima.ImaReplayState.from_json(state.to_json()) == state


def test_resume_reads_only_the_new_lines():
    text = ima.synthetic_ima_ng_list(50)
    head = _split(text, 40)
    state = ima.replay_ascii(head)
    assert state.last_entry_offset == head.rindex(b"\n", 0, len(head) - 1) + 1
    tampered_early_line = text.replace(b"/module-3.so", b"/modulX-3.so", 1)
    with pytest.raises(TemplateHashMismatch):
        ima.replay_ascii(tampered_early_line)
    assert ima.replay_ascii(tampered_early_line, state=state) == ima.replay_ascii(text)


def test_state_without_offset_resumes_by_counting_entries():
    entries = _mixed_entries()
    state = ima.replay(entries[:5])
    assert state.last_entry_offset is None
    full = ima.replay(entries)
    assert ima.replay(entries, state=state).pcrs == full.pcrs
    assert ima.replay_ascii(ima.format_ascii(entries), state=state).pcrs == full.pcrs
    assert ima.replay_binary(ima.format_binary(entries), state=state).pcrs == full.pcrs


@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_state_from_another_list_is_refused(binary):
    encode = ima.format_binary if binary else ima.format_ascii
    entries = _mixed_entries()
    state = ima.replay_ima_list(encode(entries[:6]))
    other = [*entries[:5], ima.encode_ima_ng_entry("/other", bytes(32), index=5), *entries[6:]]
    with pytest.raises(ReplayStateError, match="not the state's last entry"):
        ima.replay_ima_list(encode(other), state=state)
    shorter = r"list is shorter|no entry of this list|not the start of a line"
    with pytest.raises(ReplayStateError, match=shorter):
        ima.replay_ima_list(encode(entries[:3]), state=state)
    shifted = dataclasses.replace(state, last_entry_offset=state.last_entry_offset + 1)
    with pytest.raises(ReplayStateError):
        ima.replay_ima_list(encode(entries), state=shifted)


def test_state_must_hold_every_requested_bank():
    state = ima.replay_ascii(SHA1_LIST.read_bytes(), (HashAlg.SHA1,))
    with pytest.raises(ReplayStateError, match="no value for bank\\(s\\) sha256"):
        ima.replay_ascii(SHA1_LIST.read_bytes(), state=state)
    assert ima.replay_ascii(SHA1_LIST.read_bytes(), (HashAlg.SHA1,), state) == state


@pytest.mark.parametrize("obj", [
    None, [], {"version": 2}, {"version": 1, "count": 1},
    {"version": 1, "count": -1, "pcrs": {"sha1": "00" * 20}},
    {"version": 1, "count": True, "pcrs": {"sha1": "00" * 20}},
    {"version": 1, "count": 1, "pcrs": {"sha1": "00" * 19}},
    {"version": 1, "count": 1, "pcrs": {"md5": "00" * 16}},
    {"version": 1, "count": 1, "pcrs": {"sha1": "zz" * 20}},
    {"version": 1, "count": 1, "pcrs": {"sha1": 5}},
    {"version": 1, "count": 1, "pcrs": {"sha1": "00" * 20}, "last_entry_offset": -3},
    {"version": 1, "count": 0, "pcrs": {"sha1": "00" * 20}, "last_entry_offset": 0},
    {"version": 1, "count": 1, "pcrs": {"sha1": "00" * 20}, "last_template_hash": "00"},
])
def test_malformed_state_json_is_refused(obj):
    with pytest.raises(ReplayStateError, match="IMA replay state"):
        ima.ImaReplayState.from_json(obj)


@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_state_counting_far_past_the_list_fails_fast(binary):
    encode = ima.format_binary if binary else ima.format_ascii
    huge = ima.ImaReplayState(10**15, {HashAlg.SHA1: bytes(20), HashAlg.SHA256: bytes(32)})
    with pytest.raises(ReplayStateError, match="the list is shorter"):
        ima.replay_ima_list(encode(_mixed_entries()), state=huge)
    with pytest.raises(ReplayStateError, match="the list is shorter"):
        ima.replay(_mixed_entries(), state=huge)


def test_unsupported_or_empty_bank_list_is_refused():
    text = SHA256_LIST.read_bytes()
    with pytest.raises(UnknownAlgorithmError, match="sm3_256"):
        ima.replay_ascii(text, (HashAlg.SM3_256,))
    with pytest.raises(UnknownAlgorithmError, match="none"):
        ima.replay(ima.parse_ascii(text), ())


def _variant(transform) -> bytes:
    entry = ima.encode_ima_ng_entry("/usr/bin/tab\there", hashlib.sha256(b"t").digest())
    return transform(ima.format_ascii([entry]))


@pytest.mark.parametrize("text", [
    _variant(lambda t: t),
    _variant(lambda t: t[:3] + t[3:43].upper() + t[43:]),
    _variant(lambda t: t.replace(hashlib.sha256(b"t").hexdigest().encode(),
                                 hashlib.sha256(b"t").hexdigest().upper().encode())),
    _variant(lambda t: b"0" + t),
    _variant(lambda t: t.replace(b"\n", b"\r\n")),
    _variant(lambda t: t.rstrip(b"\n")),
    _variant(lambda t: t.replace(b"sha256:", b"sha256:\t")),
    _variant(lambda t: t.replace(b" ima-ng", b"\tima-ng")),
], ids=["plain", "upper-hash", "upper-digest", "pcr-010", "crlf", "no-final-newline",
        "tab-in-hex", "tab-separator"])
def test_fast_path_and_general_decoder_agree_on_odd_but_possible_lines(text):
    def outcome(call):
        try:
            return call(text).pcrs
        except EvidenceError as exc:
            return type(exc)
    assert outcome(ima.replay_ascii) == outcome(lambda t: ima.replay(ima.parse_ascii(t)))


def test_replaying_no_new_entries_returns_the_same_state():
    entries = _mixed_entries()
    for encode, replay in ((ima.format_ascii, ima.replay_ascii),
                           (ima.format_binary, ima.replay_binary)):
        state = replay(encode(entries))
        assert replay(encode(entries), state=state) == state
    state = ima.replay(entries)
    assert ima.replay(entries, state=state) == state


def test_state_without_offset_on_a_list_without_final_newline():
    text = ima.synthetic_ima_ng_list(5)
    state = ima.replay(ima.parse_ascii(text)[:5])
    assert ima.replay_ascii(text.rstrip(b"\n"), state=state).pcrs == state.pcrs
    with pytest.raises(ReplayStateError, match="the list is shorter"):
        ima.replay_ascii(_split(text, 4).rstrip(b"\n"), state=state)


def test_state_pointing_at_a_broken_line_is_refused():
    text = ima.synthetic_ima_ng_list(5)
    state = ima.replay_ascii(_split(text, 3))
    broken = text[:state.last_entry_offset] + b"garbage\n" + text[state.last_entry_offset:]
    with pytest.raises(ReplayStateError, match="no entry of this list at its offset"):
        ima.replay_ascii(broken, state=state)
