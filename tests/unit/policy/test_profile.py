"""Loading, validating and dumping security profile documents."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.policy import PolicyError, dump_profile, load_profile
from trusted_launch.policy.profile import EVENT_TYPES, MAX_DIGESTS

D1 = "11" * 32
D2 = "22" * 32
SHA1 = "33" * 20


def doc(**overrides) -> dict:
    base = {
        "name": "high",
        "level": 30,
        "description": "test profile",
        "require_secure_boot": True,
        "pcrs": {"sha256": {"0": [D1, D2]}, "sha1": {"7": [SHA1]}},
        "event_digests": {"sha256": {"4": [D1], "5": []}},
        "forbid_event_types": ["EV_EFI_ACTION", 5],
        "ima": {"require_fresh_quote": True, "allowlist": {"/usr/bin/bash": [D2]}},
    }
    base.update(overrides)
    return base


def test_full_document_loads_into_typed_fields():
    profile = load_profile(doc())
    assert profile.name == "high" and profile.level == 30
    assert profile.require_secure_boot is True
    assert profile.pcrs[HashAlg.SHA256][0] == frozenset({bytes.fromhex(D1), bytes.fromhex(D2)})
    assert profile.pcrs[HashAlg.SHA1][7] == frozenset({bytes.fromhex(SHA1)})
    assert profile.event_digests[HashAlg.SHA256][5] == frozenset()
    assert profile.forbid_event_types == frozenset({EVENT_TYPES["EV_EFI_ACTION"], 5})
    assert profile.ima is not None
    assert profile.ima.allowlist["/usr/bin/bash"] == frozenset({bytes.fromhex(D2)})


def test_minimal_document_has_safe_defaults():
    profile = load_profile({"name": "low", "level": 0})
    assert profile.require_secure_boot is False
    assert not profile.pcrs and not profile.event_digests and profile.ima is None


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_dump_and_load_round_trip(fmt):
    profile = load_profile(doc())
    text = dump_profile(profile, fmt=fmt)
    assert load_profile(text) == profile
    assert load_profile(text.encode()) == profile
    assert load_profile(profile.to_document()).to_document() == profile.to_document()


def test_yaml_with_integer_pcr_keys_and_comments():
    text = f"""
# a comment
name: medium
level: 20
pcrs:
  sha256:
    0: ["{D1}"]
"""
    assert load_profile(text).pcrs[HashAlg.SHA256][0] == frozenset({bytes.fromhex(D1)})


@pytest.mark.parametrize(("change", "path", "problem"), [
    ({"name": "High"}, "name", "[a-z0-9_-]"),
    ({"name": "x" * 33}, "name", "1-32"),
    ({"level": 1001}, "level", "0 to 1000"),
    ({"level": True}, "level", "integer"),
    ({"level": "30"}, "level", "integer"),
    ({"description": 5}, "description", "string"),
    ({"require_secure_boot": "yes"}, "require_secure_boot", "true or false"),
    ({"pcrs": {"sha256": {"0": [D1, "zz" * 32]}}}, "pcrs.sha256.0[1]", "32-byte hex digest"),
    ({"pcrs": {"sha256": {"0": [SHA1]}}}, "pcrs.sha256.0[0]", "32-byte hex digest"),
    ({"pcrs": {"sha256": {"0": [D1, D1]}}}, "pcrs.sha256.0[1]", "duplicate"),
    ({"pcrs": {"sha256": {"0": []}}}, "pcrs.sha256.0", "empty list"),
    ({"pcrs": {"sha256": {"0": D1}}}, "pcrs.sha256.0", "list of hex digests"),
    ({"pcrs": {"sha256": {"0": [int("1" * 30)]}}}, "pcrs.sha256.0[0]", "quote digests"),
    ({"pcrs": {"sha256": {"24": [D1]}}}, "pcrs.sha256.24", "0-23"),
    ({"pcrs": {"sha256": {"x": [D1]}}}, "pcrs.sha256.x", "decimal"),
    ({"pcrs": {"md5": {"0": [D1]}}}, "pcrs.md5", "unknown PCR bank"),
    ({"pcrs": ["sha256"]}, "pcrs", "mapping"),
    ({"event_digests": {"sha256": {"4": ["ab"]}}}, "event_digests.sha256.4[0]", "hex digest"),
    ({"forbid_event_types": ["EV_NOT_A_TYPE"]}, "forbid_event_types[0]", "unknown event type"),
    ({"forbid_event_types": [-1]}, "forbid_event_types[0]", "32-bit"),
    ({"forbid_event_types": "EV_EFI_ACTION"}, "forbid_event_types", "list"),
    ({"ima": {"allowlist": {"/bin/sh": ["ab"]}}}, "ima.allowlist./bin/sh[0]", "hex digest"),
    ({"ima": {"require_fresh_quote": 1}}, "ima.require_fresh_quote", "true or false"),
    ({"ima": {"allow": {}}}, "ima", "unknown field(s) allow"),
    ({"surprise": 1}, "document", "unknown field(s) surprise"),
])
def test_invalid_fields_name_path_and_problem(change, path, problem):
    with pytest.raises(PolicyError) as info:
        load_profile(doc(**change))
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("missing", ["name", "level"])
def test_required_fields(missing):
    document = doc()
    del document[missing]
    with pytest.raises(PolicyError, match=f"^{missing}: required"):
        load_profile(document)


def test_digest_count_is_bounded():
    many = [f"{i:064x}" for i in range(MAX_DIGESTS // 2 + 1)]
    document = doc(pcrs={"sha256": {"0": many}}, event_digests={"sha256": {"4": many}})
    with pytest.raises(PolicyError, match="more than 100000 digests"):
        load_profile(document)


@pytest.mark.parametrize(("text", "problem"), [
    ("name: a\nname: b\nlevel: 1\n", "duplicate key 'name'"),
    ('{"name": "a", "name": "b", "level": 1}', "duplicate key 'name'"),
    ("base: &x [1]\nname: a\nlevel: 1\nother: *x\n", "aliases are not allowed"),
    ("name: [unclosed\n", "invalid YAML at line"),
    ('{"name": ', "invalid JSON at line 1"),
    ("!!python/object:os.system {}", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping, got list"),
    (b"\xff\xfe", "not UTF-8"),
    ("[" * 1_000_000, "nested too deeply"),
    ("a: " + "[" * 99 + "]" * 99 + "\n", "unknown field(s) a"),
    ("name: x\n" + "#" * (2 * 1024 * 1024), "use JSON for larger profiles"),
])
def test_hostile_or_broken_text_is_rejected(text, problem):
    with pytest.raises(PolicyError, match=r"^document: ") as info:
        load_profile(text)
    assert problem in str(info.value)


def test_deeply_nested_json_is_rejected():
    with pytest.raises(PolicyError, match=r"^document: "):
        load_profile("{" + '"a":{' * 100_000)


def test_oversized_document_is_rejected():
    with pytest.raises(PolicyError, match="larger than"):
        load_profile(" " * (16 * 1024 * 1024 + 1))


def test_json_document_equals_yaml_document():
    as_json = json.dumps(doc())
    as_yaml = dump_profile(load_profile(doc()))
    assert load_profile(as_json) == load_profile(as_yaml)


def test_unknown_dump_format():
    with pytest.raises(ValueError, match="unknown profile format"):
        dump_profile(load_profile(doc()), fmt="toml")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.text(max_size=70)
    | st.sampled_from([D1, SHA1, "EV_EFI_ACTION", "sha256", "0", "24"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "level", "pcrs", "sha256", "sha1", "0", "7",
                                       "event_digests", "ima", "allowlist", "x"]),
                      children, max_size=4),
    max_leaves=10)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(doc())), json_values, max_size=8))
def test_random_documents_load_or_raise_policy_error(document):
    try:
        profile = load_profile({"name": "fuzz", "level": 1, **document})
    except PolicyError:
        return
    assert load_profile(profile.to_document()) == profile


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_text_loads_or_raises_policy_error(text):
    try:
        load_profile(text)
    except PolicyError:
        pass
