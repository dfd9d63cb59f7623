"""Property tests: the event log parser fails closed on any input."""

from __future__ import annotations

import dataclasses
import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EVENTLOG_DIR
from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.eventlog import (
    EventLog,
    EventType,
    decode_event_data,
    parse_event_log,
    replay,
)

LOG_NAMES = sorted(p.name for p in EVENTLOG_DIR.iterdir() if not p.name.endswith(".json"))
# Every real log but the one whose only event is EV_NO_ACTION.
MEASURED_LOGS = [name for name in LOG_NAMES if name != "short_no_action_eventlog"]
NO_ACTION = EventType.EV_NO_ACTION
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def real_log(name: str) -> bytes:
    return (EVENTLOG_DIR / name).read_bytes()


def parse_fully_or_fail_closed(data: bytes) -> EventLog | None:
    """Parse, decode every event and replay; only EvidenceError may escape."""
    try:
        log = parse_event_log(data)
    except EvidenceError:
        return None
    for event in log.events:
        _ = event.decoded
    replay(log)
    return log


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    parse_fully_or_fail_closed(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_after_a_valid_spec_id_header(tail):
    data = real_log("crypto_agile_eventlog")
    header = data[:parse_event_log(data).events[1].offset]
    assert parse_event_log(header).spec_id is not None
    parse_fully_or_fail_closed(header + tail)


@functools.cache
def real_replay(name: str) -> dict:
    return replay(parse_event_log(real_log(name)))


@functools.cache
def measured_events(name: str) -> list:
    return [e for e in parse_event_log(real_log(name)).events if e.event_type != NO_ACTION]


@FUZZ
@given(st.sampled_from(sorted(EventType)), st.binary(max_size=600))
def test_every_decoder_on_random_data(event_type, data):
    decoded = decode_event_data(event_type, data)
    assert decoded is None or dataclasses.is_dataclass(decoded)


@st.composite
def mutated_logs(draw) -> bytes:
    data = bytearray(real_log(draw(st.sampled_from(LOG_NAMES))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(mutated_logs())
def test_mutated_real_logs(data):
    parse_fully_or_fail_closed(data)


@st.composite
def digest_byte_of_a_real_event(draw):
    name = draw(st.sampled_from(MEASURED_LOGS))
    event = draw(st.sampled_from(measured_events(name)))
    alg = draw(st.sampled_from(sorted(event.digests)))
    return name, event, alg, draw(st.integers(0, alg.digest_size - 1))


@settings(max_examples=100, deadline=None)
@given(digest_byte_of_a_real_event(), st.integers(1, 255))
def test_changing_any_event_digest_byte_changes_its_pcr(choice, xor):
    name, event, alg, index = choice
    data = bytearray(real_log(name))
    position = data.find(event.digests[alg], event.offset)
    assert position > event.offset
    data[position + index] ^= xor
    before = real_replay(name)
    after = replay(parse_event_log(bytes(data)))
    assert after[alg][event.pcr] != before[alg][event.pcr]
    changed = {(bank, pcr) for bank in before for pcr in before[bank]
               if after[bank][pcr] != before[bank][pcr]}
    assert changed == {(alg, event.pcr)}
