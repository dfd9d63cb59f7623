"""The dashboard plugin's pure parts: trust status from Nova's server and the TTP's records.

These run without Django or Horizon: ``trusted_launch_dashboard.status``,
``.chart`` and ``.ttp``'s validation are plain Python.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.token import LaunchToken, key_id_for, seal_token
from trusted_launch_dashboard import chart, status
from trusted_launch_dashboard.ttp import TTPError, TTPSettings, check_proof

LEVELS = {"low": 1, "medium": 2, "high": 3}
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def token() -> str:
    public = X25519PrivateKey.generate().public_key()
    launch = LaunchToken(nonce=os.urandom(32), profile="high",
                         image_digest=ImageDigest("sha256", hashlib.sha256(b"img").digest()),
                         expires_at=int(NOW) + 3600)
    return seal_token(launch, public, key_id_for(public))


def server(status_: str = "ACTIVE", metadata: dict | None = None, fault: dict | None = None
           ) -> dict:
    return {"id": "5a7c", "name": "vm", "status": status_, "metadata": metadata or {},
            "fault": fault, "created": "2026-12-02T17:00:00Z"}


def trusted_metadata(token: str) -> dict:
    return {"trusted_sp": "high", "trusted_token": token, "trusted_ttp": "https://ttp:8443"}


def test_plain_instance_is_not_a_trusted_launch():
    trust = status.instance_trust(server())
    assert trust.verdict == status.PLAIN
    assert not trust.trusted_launch
    assert trust.requested_profile is None and trust.token_digest == ""


def test_active_trusted_instance_is_accepted_with_its_profile_and_digest(token):
    trust = status.instance_trust(server(metadata=trusted_metadata(token)))
    assert trust.verdict == status.ACCEPTED
    assert trust.requested_profile == "high"
    assert trust.host_level == "meets high or stricter"
    assert trust.token_digest == status.launch_token_digest(token)
    assert len(trust.token_digest) == 64
    assert trust.last_attested_at == "2026-12-02T17:00:00Z"  # no restart since the launch


def test_refused_launch_shows_the_fault_reason(token):
    fault = {"message": "trusted launch refused: host_profile_not_met: pcr 7 differs"}
    trust = status.instance_trust(server("ERROR", trusted_metadata(token), fault))
    assert trust.verdict == status.REFUSED
    assert "host_profile_not_met" in trust.reason
    assert trust.host_level == ""


def test_refused_reattestation_leaves_a_stopped_guest_refused(token):
    fault = {"message": "re-attestation refused: nonce commitment mismatch"}
    trust = status.instance_trust(server("SHUTOFF", trusted_metadata(token), fault))
    assert trust.verdict == status.REFUSED
    assert "commitment" in trust.reason


def test_building_instance_is_pending(token):
    trust = status.instance_trust(server("BUILD", trusted_metadata(token)))
    assert trust.verdict == status.PENDING


def test_metadata_that_is_not_a_token_is_refused_not_trusted():
    trust = status.instance_trust(server(metadata={"trusted_sp": "high",
                                                   "trusted_token": "not-a-token"}))
    assert trust.verdict == status.REFUSED
    assert trust.token_digest == ""


def test_last_attestation_is_the_latest_successful_restart(token):
    actions = [{"action": "create", "start_time": "2026-12-02T17:00:00Z", "message": None},
               {"action": "reboot", "start_time": "2026-12-02T17:10:00Z", "message": None},
               {"action": "reboot", "start_time": "2026-12-02T17:20:00Z", "message": "Error"},
               {"action": "stop", "start_time": "2026-12-02T17:30:00Z", "message": None}]
    trust = status.instance_trust(server(metadata=trusted_metadata(token)), actions)
    assert trust.last_attested_at == "2026-12-02T17:10:00Z"


def record(host: str, profile: str | None, age: float = 10.0, **extra) -> dict:
    return {"host": host, "profile": profile, "trusted": profile is not None,
            "checked_at": NOW - age, "last_attested_at": "2026-12-02T17:00:00Z",
            "check": extra.get("check"), "reason": extra.get("reason")}


def test_hosts_meeting_and_not_meeting_their_aggregate():
    aggregates = status.aggregate_profiles(
        [{"metadata": {"trusted_sp": "high"}, "hosts": ["hi"]},
         {"metadata": {"trusted_sp": "low"}, "hosts": ["lo"]},
         {"metadata": {}, "hosts": ["lo", "other"]}], LEVELS)
    assert aggregates == {"hi": "high", "lo": "low"}
    rows = status.hosts_trust(aggregates, [record("hi", "high"), record("lo", "low")],
                              LEVELS, now=NOW)
    assert [row.host for row in rows] == ["hi", "lo"]  # strongest aggregate first
    high, low = rows
    assert (high.state, high.profile_met, high.meets_aggregate) == (status.TRUSTED, "high", True)
    assert (low.state, low.profile_met, low.meets_aggregate) == (status.TRUSTED, "low", True)
    counts = dict((p, (m, o)) for p, m, o in status.profile_counts(rows, LEVELS))
    assert counts == {"low": (2, 0), "medium": (1, 1), "high": (1, 1)}


def test_aggregate_profile_unknown_to_the_ttp_is_still_shown():
    aggregates = status.aggregate_profiles([{"metadata": {"trusted_sp": "gold"},
                                             "hosts": ["h"]}], LEVELS)
    assert aggregates == {"h": "gold"}
    row = status.host_trust("h", "gold", record("h", "high"), LEVELS, NOW, 300)
    assert not row.meets_aggregate  # fails closed
    assert "unknown to the TTP" in row.reason


def test_host_below_its_aggregate_does_not_meet_it():
    row = status.host_trust("hi", "high", record("hi", "low"), LEVELS, NOW, 300)
    assert row.state == status.TRUSTED and not row.meets_aggregate
    assert "below" in row.reason


def test_untrusted_host_names_check_and_reason():
    row = status.host_trust("hi", "high", record("hi", None, check="pcr_mismatch",
                                                 reason="PCR 0 differs"), LEVELS, NOW, 300)
    assert row.state == status.UNTRUSTED and not row.meets_aggregate
    assert row.reason == "pcr_mismatch: PCR 0 differs"


def test_old_status_is_stale_and_does_not_count():
    row = status.host_trust("hi", "high", record("hi", "high", age=301), LEVELS, NOW, 300)
    assert row.state == status.STALE and not row.meets_aggregate
    counts = status.profile_counts([row], LEVELS)
    assert all(meeting == 0 for _, meeting, _ in counts)


def test_host_never_attested():
    rows = status.hosts_trust({"new": "low"}, [], LEVELS, now=NOW)
    assert rows[0].state == status.NEVER and rows[0].since == ""


def test_chart_escapes_profile_names_and_shows_counts():
    svg = chart.profile_chart([("<script>", 1, 1), ("high", 2, 0)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.startswith("<svg") and "2/2" in svg and "1/2" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


@pytest.mark.parametrize("proof", ["", "short", "A" * 44, "A" * 42 + "+/", None, 42])
def test_receipt_proof_must_be_base64url_of_32_bytes(proof):
    with pytest.raises(TTPError, match="43 base64url"):
        check_proof(proof)


def test_receipt_proof_of_the_right_form_passes():
    assert check_proof("A" * 43) == "A" * 43


@pytest.mark.parametrize(("setting", "message"), [
    (None, "ttp_url"), ({"ttp_url": "http://ttp"}, "https"),
    ({"ttp_url": "https://ttp", "auth": "basic"}, "auth"),
    ({"ttp_url": "https://ttp"}, "token_file")])
def test_settings_fail_closed(setting, message):
    with pytest.raises(TTPError, match=message):
        TTPSettings.from_mapping(setting)


def test_keystone_settings_need_no_token_file():
    settings = TTPSettings.from_mapping({"ttp_url": "https://ttp/", "auth": "keystone"})
    assert settings.ttp_url == "https://ttp" and settings.auth == "keystone"


def test_reader_token_goes_only_into_the_header_and_never_into_an_error(tmp_path):
    requests_mock = pytest.importorskip("requests_mock")
    from trusted_launch_dashboard.ttp import TTPClient

    token_file = tmp_path / "reader"
    token_file.write_text("secret-reader-token\n")
    client = TTPClient(TTPSettings.from_mapping({"ttp_url": "https://ttp.test",
                                                 "token_file": str(token_file)}))
    with requests_mock.Mocker() as mocker:
        mocker.get("https://ttp.test/v1/hosts?status=1",
                   json={"hosts": [{"host": "h", "profile": "high"}], "now": NOW})
        hosts, now = client.host_statuses()
        assert mocker.last_request.headers["X-Auth-Token"] == "secret-reader-token"
        assert hosts[0]["host"] == "h" and now == NOW
        mocker.get("https://ttp.test/v1/hosts?status=1", status_code=401,
                   json={"error": {"code": "invalid_token", "reason": "secret-reader-token"}})
        with pytest.raises(TTPError) as refused:
            client.host_statuses()
    assert "401 invalid_token" in str(refused.value)
    assert "secret-reader-token" not in str(refused.value)


def test_missing_reader_token_file_is_named(tmp_path):
    from trusted_launch_dashboard.ttp import TTPClient

    client = TTPClient(TTPSettings.from_mapping({"ttp_url": "https://ttp.test",
                                                 "token_file": str(tmp_path / "absent")}))
    with pytest.raises(TTPError, match=r"cannot read the TTP token file .*absent"):
        client.host_statuses()


def test_receipts_need_a_digest_and_a_proof_of_the_right_form():
    from trusted_launch_dashboard.ttp import TTPClient

    client = TTPClient(TTPSettings.from_mapping({"ttp_url": "https://ttp.test",
                                                 "auth": "keystone"}))
    with pytest.raises(TTPError, match="64 lower-case hex"):
        client.receipts("../v1/hosts", "A" * 43)
    with pytest.raises(TTPError, match="43 base64url"):
        client.receipts("0" * 64, "not a proof")
