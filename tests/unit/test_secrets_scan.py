"""The secrets scan (tests/fixtures/secrets_scan.py) finds a planted N in every place it searches.

Scratch copies of what the cloud's scan reads (a service log line, a
mysqldump --hex-blob row, a pg_dump COPY row, a domain XML, an
oslo.messaging notification), first clean (nothing found), then with N
planted in each encoding (found, naming where).
"""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from tests.fixtures.secrets_scan import Haystack, encodings, files_under, leaks, scan

N = secrets.token_bytes(32)
OTHER = secrets.token_bytes(32)

SCRATCH = {
    "nova-compute.log": b"2026-12-02 17:50:01.123 4242 INFO nova.compute.manager [None "
                        b"req-1] [instance: 6f1c] Took 31.2 seconds to spawn the instance\n",
    "mysqldump.sql": b"INSERT INTO `instance_system_metadata` VALUES (1,'2026-12-02 17:50:01',"
                     b"NULL,NULL,'6f1c','image_trusted_sp','high',0),(2,NULL,NULL,NULL,'6f1c',"
                     b"'blob',0x00FF10,0);\n",
    "pg_dump.sql": b"COPY public.receipts (attestation_id, document) FROM stdin;\n"
                   b"0d9a\t\\x7b2270617966\n\\.\n",
    "domain.xml": b"<domain type='qemu'><name>instance-00000001</name><metadata>"
                  b"<nova:instance/></metadata></domain>\n",
    "notification.json": json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
        {"event_type": "instance.create.end", "payload": {"uuid": "6f1c"}})}).encode(),
}


@pytest.fixture
def scratch(tmp_path):
    for name, data in SCRATCH.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_clean_copies_have_nothing(scratch):
    assert scan(files_under(scratch), [N, OTHER]) == []


@pytest.mark.parametrize("name", sorted(SCRATCH))
@pytest.mark.parametrize("form", range(len(encodings(N))))
def test_n_planted_in_any_form_anywhere_is_found(scratch, name, form):
    planted = encodings(N)[form]
    path = scratch / name
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + planted + data[middle:])
    found = scan(files_under(scratch), [OTHER, N])
    assert found and all(item.startswith(f"{path}: secret 1 as ") for item in found), found


def test_n_inside_a_longer_base64_blob_is_found_at_every_alignment():
    for prefix in (b"", b"a", b"ab", b"abc"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(prefix + N + b"trailing bytes")
            assert leaks(blob, [N]), (prefix, encode.__name__)


def test_hex_in_upper_case_as_mysqldump_writes_blobs_and_in_a_json_string():
    assert leaks(b"0x" + N.hex().upper().encode(), [N])
    assert leaks(json.dumps({"oslo.message": json.dumps({"nonce": N.hex()})}), [N])


def test_a_password_is_found_in_a_log_line():
    password = "kXy2-Q_7vV0pLmN3rT8uWz9a"
    assert scan([Haystack("keystone.log", f"auth with {password} failed".encode())],
                [password.encode()]) == ["keystone.log: secret 0 as b'kXy2-Q_7vV0pLmN3rT8uWz9a'"]


def test_files_under_takes_a_file_or_a_folder(scratch):
    assert [h.name for h in files_under(scratch / "domain.xml")] == [str(scratch / "domain.xml")]
    assert len(list(files_under(scratch))) == len(SCRATCH)
