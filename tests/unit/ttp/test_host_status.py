"""Continuous host attestation at the TTP, on real TPM2_Quotes from swtpm.

Each test gets a fresh swtpm "booted" with a real Secure Boot event log, its
AK enrolled (active) in a fresh SQLite TTP database migrated with the real
Alembic scripts, and a :class:`HostStatusService` over the example profiles
plus a "runtime" profile (high + an IMA allowlist). IMA is simulated the way
the kernel does it: each ima-ng entry's template data is extended into PCR 10.
"""

from __future__ import annotations

import base64
import hashlib
import pathlib
import secrets

import pytest

from tests.conftest import EVENTLOG_DIR
from tests.fixtures.swtpm import SECUREBOOT_LOG, SwtpmProcess
from trusted_launch.evidence.ima import encode_ima_ng_entry, format_ascii
from trusted_launch.policy import ProfileSet, load_profile
from trusted_launch.sandbox.swtpm import extend_pcr
from trusted_launch.tpm.device import TPMDevice
from trusted_launch.ttp.db.access import AccessStore, NewChallenge, Outcome
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.migration import db_sync
from trusted_launch.ttp.errors import Refused
from trusted_launch.ttp.host_status import HostStatusService
from trusted_launch.ttp.requests import RequestInvalid

pytestmark = pytest.mark.swtpm

EXAMPLES = pathlib.Path(__file__).parents[3] / "examples" / "profiles"
STATIC = "sha256:0,1,2,3,4,5,6,7"
WITH_IMA = "sha1:10+sha256:0,1,2,3,4,5,6,7,10"
HOST = "compute-1"
GOOD_FILES = {f"/usr/bin/tool{i}": hashlib.sha256(b"tool%d" % i).digest() for i in range(4)}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for the message bus: records host_status_changed calls."""

    def __init__(self) -> None:
        self.changes: list[tuple] = []

    def host_status_changed(self, host, profile, previous, reason, time, *, dropped=True):
        self.changes.append((host, profile, previous, reason, time, dropped))
        return True


def profiles() -> ProfileSet:
    docs = [load_profile((EXAMPLES / f"{n}.yaml").read_text()).to_document()
            for n in ("low", "medium", "high")]
    runtime = dict(docs[2], name="runtime", level=40, ima={
        "require_fresh_quote": True,
        "allowlist": {path: [digest.hex()] for path, digest in GOOD_FILES.items()}})
    return ProfileSet([*(load_profile(d) for d in docs), load_profile(runtime)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enroll(db: TTPDatabase, name: str, ak_public: bytes) -> None:
    store = AccessStore(db)
    store.register(name, "0" * 64)
    store.open_challenge(NewChallenge(
        host=name, ak_name="00", ek_cert_fingerprint="0" * 64, ek_public="AA==",
        ak_public=_b64(ak_public), credential_digest="c" * 64, expires_at=2**40), 0, 4)
    assert store.answer_challenge(name, "c" * 64, 0) == (Outcome.DONE, _b64(ak_public))


def _booted_device(states, index: int = 0):
    tpm = SwtpmProcess(states.state(index), states.ca)
    tpm.start()
    try:
        tpm.boot(SECUREBOOT_LOG)
        with TPMDevice(tpm.tcti) as dev:
            dev.ak = dev.ensure_attestation_key()
            yield dev
    finally:
        tpm.stop()


@pytest.fixture(scope="module")
def shared_device(swtpm_state_cache):
    """A booted TPM for tests that leave its PCRs alone."""
    yield from _booted_device(swtpm_state_cache)


@pytest.fixture
def fresh_device(swtpm_state_cache):
    """A booted TPM of its own, for tests that extend PCRs."""
    yield from _booted_device(swtpm_state_cache)


@pytest.fixture
def device(request, shared_device):
    if "fresh_device" in request.fixturenames:  # the test extends PCRs
        return request.getfixturevalue("fresh_device")
    return shared_device


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'ttp.sqlite'}"
    db_sync(url)
    database = TTPDatabase(url)
    yield database
    database.dispose()


@pytest.fixture
def service(db, device):
    enroll(db, HOST, device.ak.public)
    from trusted_launch.evidence.tpm2 import PCRSelection
    return HostStatusService(db, profiles, PCRSelection.from_spec(STATIC), challenge_ttl=30,
                             notifier=Recorder(), clock=Clock())


class ImaHost:
    """A simulated IMA measurement list kept in step with the TPM's PCR 10."""

    def __init__(self, device: TPMDevice) -> None:
        self.device = device
        self.entries: list = []

    def measure(self, path: str, digest: bytes) -> None:
        entry = encode_ima_ng_entry(path, digest, index=len(self.entries))
        extend_pcr(self.device, 10, entry.template_data)
        self.entries.append(entry)

    @property
    def data(self) -> bytes:
        return format_ascii(self.entries)


def body_for(service, device, *, selection=STATIC, event_log=None, nonce=None,
             quote_nonce=None, ima: bytes | None = None, ima_offset: int = 0,
             host: str = HOST) -> dict:
    if nonce is None:
        nonce = base64.b64decode(service.challenge(host)["nonce"])
    attest, signature = device.quote(selection, quote_nonce or nonce)
    body = {"nonce": _b64(nonce), "quote": _b64(attest), "signature": _b64(signature),
            "event_log": _b64(event_log or SECUREBOOT_LOG.read_bytes())}
    if ima is not None:
        body.update(ima_log=_b64(ima), ima_offset=ima_offset)
    return body


def test_trusted_host_gets_its_strongest_profile_and_is_listed(service, device):
    answer = service.attest(HOST, body_for(service, device))
    assert answer["profile"] == "high" and answer["trusted"] is True
    assert answer["previous_profile"] is None
    assert answer["check"] == "stronger_profile" and "runtime" in answer["reason"]
    listing = service.statuses()["hosts"]
    assert [(h["host"], h["profile"]) for h in listing] == [(HOST, "high")]
    assert service.notifier.changes[0][:3] == (HOST, "high", None)


def test_nonce_is_single_use(service, device):
    body = body_for(service, device)
    service.attest(HOST, body)
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body)
    assert refused.value.check == "nonce_unknown"


def test_stale_nonce_refused(service, device):
    body = body_for(service, device)
    service.clock.now += 31
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body)
    assert refused.value.check == "nonce_expired"
    assert service.store.get(HOST) is None  # refusals of this kind change no status


def test_nonce_issued_to_another_host_refused(service, device, db):
    enroll(db, "compute-2", device.ak.public)
    nonce = base64.b64decode(service.challenge("compute-2")["nonce"])
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body_for(service, device, nonce=nonce))
    assert refused.value.check == "nonce_unknown"


def test_never_issued_nonce_refused(service, device):
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body_for(service, device, nonce=secrets.token_bytes(32)))
    assert refused.value.check == "nonce_unknown"


def test_quote_over_another_nonce_refused(service, device):
    body = body_for(service, device, quote_nonce=secrets.token_bytes(32))
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body)
    assert refused.value.check == "quote_nonce"


def test_quote_by_another_tpms_ak_refused_and_status_kept(service, device, swtpm_state_cache):
    assert service.attest(HOST, body_for(service, device))["profile"] == "high"
    other = SwtpmProcess(swtpm_state_cache.state(1), swtpm_state_cache.ca)
    other.start()
    try:
        other.boot(SECUREBOOT_LOG)  # same PCRs, different AK
        with TPMDevice(other.tcti) as impostor:
            impostor.ensure_attestation_key()
            body = body_for(service, impostor)
    finally:
        other.stop()
    with pytest.raises(Refused) as refused:
        service.attest(HOST, body)
    assert refused.value.check == "quote_signature"
    assert service.store.get(HOST).profile == "high"


def test_unenrolled_host_gets_no_challenge(service):
    with pytest.raises(Refused) as refused:
        service.challenge("stranger")
    assert refused.value.check == "host_unknown"


def test_pcr_extended_after_boot_drops_the_host(fresh_device, service, device):
    service.attest(HOST, body_for(service, device))
    extend_pcr(device, 7, b"an unmeasured change")
    answer = service.attest(HOST, body_for(service, device))
    assert answer["profile"] is None and answer["trusted"] is False
    assert answer["check"] == "quote_pcrs" and answer["previous_profile"] == "high"
    host, profile, previous, reason, _, dropped = service.notifier.changes[-1]
    assert (host, profile, previous, dropped) == (HOST, None, "high", True)
    assert "not in the state its logs describe" in reason


def test_event_log_of_another_boot_does_not_match_quote(service, device):
    other_log = (EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog").read_bytes()
    answer = service.attest(HOST, body_for(service, device, event_log=other_log))
    assert (answer["profile"], answer["check"]) == (None, "quote_pcrs")


def test_quote_missing_required_pcrs_drops_the_host(service, device):
    answer = service.attest(HOST, body_for(service, device, selection="sha256:0,1,2"))
    assert (answer["profile"], answer["check"]) == (None, "quote_selection")
    assert "sha256:3,4,5,6,7" in answer["reason"]


def test_malformed_body_is_a_bad_request(service):
    with pytest.raises(RequestInvalid) as invalid:
        service.attest(HOST, {"nonce": "AAAA", "quote": "x"})
    assert invalid.value.check == "nonce"


def test_ima_replayed_incrementally_across_rounds(fresh_device, service, device):
    ima = ImaHost(device)
    ima.measure("boot_aggregate", hashlib.sha256(b"boot").digest())
    for path in list(GOOD_FILES)[:2]:
        ima.measure(path, GOOD_FILES[path])
    first = service.attest(HOST, body_for(service, device, selection=WITH_IMA, ima=ima.data))
    assert first["profile"] == "runtime" and first["ima_count"] == 3
    offset = first["ima_offset"]
    assert ima.data[offset:].startswith(format_ascii(ima.entries[2:3]))  # the last entry

    for path in list(GOOD_FILES)[2:]:
        ima.measure(path, GOOD_FILES[path])
    tail = ima.data[offset:]
    second = service.attest(HOST, body_for(service, device, selection=WITH_IMA, ima=tail,
                                           ima_offset=offset))
    assert second["profile"] == "runtime" and second["ima_count"] == 5
    assert tail == format_ascii(ima.entries[2:])  # the last replayed entry + the new ones

    ima.measure("/tmp/dropper", hashlib.sha256(b"malware").digest())
    offset = second["ima_offset"]
    third = service.attest(HOST, body_for(service, device, selection=WITH_IMA,
                                          ima=ima.data[offset:], ima_offset=offset))
    assert third["profile"] == "high" and "/tmp/dropper" in third["reason"]
    offset = third["ima_offset"]
    fourth = service.attest(HOST, body_for(service, device, selection=WITH_IMA,
                                           ima=ima.data[offset:], ima_offset=offset))
    assert fourth["profile"] == "high"  # the bad entry was seen once; it still counts
    assert fourth["ima_count"] == 6


def test_ima_part_from_the_wrong_offset_drops_the_host(fresh_device, service, device):
    ima = ImaHost(device)
    ima.measure("boot_aggregate", hashlib.sha256(b"boot").digest())
    ima.measure("/usr/bin/tool0", GOOD_FILES["/usr/bin/tool0"])
    first = service.attest(HOST, body_for(service, device, selection=WITH_IMA, ima=ima.data))
    wrong = first["ima_offset"] + 1
    answer = service.attest(HOST, body_for(service, device, selection=WITH_IMA,
                                           ima=ima.data[wrong:], ima_offset=wrong))
    assert (answer["profile"], answer["check"]) == (None, "ima_continuity")
    again = service.attest(HOST, body_for(service, device, selection=WITH_IMA, ima=ima.data))
    assert again["profile"] == "runtime"  # starting over from byte 0 is always possible


def test_ima_list_not_matching_pcr10_drops_the_host(fresh_device, service, device):
    ima = ImaHost(device)
    ima.measure("boot_aggregate", hashlib.sha256(b"boot").digest())
    forged = format_ascii([encode_ima_ng_entry("boot_aggregate", bytes(32))])
    answer = service.attest(HOST, body_for(service, device, selection=WITH_IMA, ima=forged))
    assert (answer["profile"], answer["check"]) == (None, "quote_pcrs")
