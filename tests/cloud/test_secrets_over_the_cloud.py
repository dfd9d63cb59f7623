"""After the scenarios, N appears nowhere in the cloud, and no password in any log.

Every nonce the scenarios used (the tenant's nonce files) is searched for, in
every encoding (tests/fixtures/secrets_scan.py), in: every service's log
(.cloud/log) and both computes' libvirt and QEMU logs; a dump of every
``<name>cloud_*`` MariaDB database (mysqldump) and of the TTP's PostgreSQL
database (pg_dump); the domain XML of every guest (``virsh dumpxml``, taken
before the scenarios deleted their servers, and of any guest still defined);
and every notification on the cloud's RabbitMQ (Nova's versioned and legacy
ones and the driver's attestation notifications; nothing else consumes them).
The cloud's passwords are searched for in the same logs. A control plants a
nonce in a scratch copy of a real log and of a real dump and must find it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from tests.fixtures.secrets_scan import Haystack, encodings, files_under, scan
from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.sandbox.cloud import configs

pytestmark = pytest.mark.timeout(2400)
NOTIFICATION_QUEUE_PREFIXES = ("notifications.", "versioned_notifications.")


def scenario_nonces(cloud_target) -> list[bytes]:
    """Every N the scenarios' tenant made (their nonce files, including the wrong one)."""
    files = sorted((pathlib.Path(cloud_target.work_dir) / "nonces").iterdir())
    return [read_nonce_file(path) for path in files if path.is_file()]


def log_files(cloud) -> list[pathlib.Path]:
    """The services' logs and each compute's libvirt log folder (QEMU's guest logs too)."""
    return [cloud.paths.log, *(cloud.paths.data / host.name / "libvirt" / "log"
                               for host in cloud.hosts)]


def mariadb_dumps() -> list[Haystack]:
    import pymysql

    from trusted_launch.sandbox.databases import MYSQL_ADMIN

    with pymysql.connect(connect_timeout=5, **MYSQL_ADMIN) as mysql, mysql.cursor() as cursor:
        pattern = configs.DB_PREFIX.replace("_", r"\_") + "%"
        cursor.execute("SHOW DATABASES LIKE %s", (pattern,))
        names = sorted(row[0] for row in cursor.fetchall())
    dumps = []
    for name in names:
        dump = subprocess.run(["mysqldump", "-h", "127.0.0.1", "-u", "root", "--hex-blob",
                               "--skip-lock-tables", name], capture_output=True, timeout=600,
                              check=True)
        dumps.append(Haystack(f"MariaDB {name}", dump.stdout))
    return dumps


def postgres_dump(name: str) -> Haystack:
    dump = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", name],
                          capture_output=True, timeout=600, check=True)
    return Haystack(f"PostgreSQL {name}", dump.stdout)


def notification_queues() -> list[str]:
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", configs.RABBIT_VHOST,
                             "name"], capture_output=True, text=True, check=True).stdout
    return sorted(name for name in listed.split() if name.startswith(NOTIFICATION_QUEUE_PREFIXES))


def drain_notifications(transport_url: str) -> list[Haystack]:
    """Every message waiting in the vhost's notification queues (consumed: no one else reads
    them)."""
    import kombu

    messages = []
    with kombu.Connection(transport_url.replace("rabbit://", "amqp://", 1),
                          connect_timeout=10) as connection:
        channel = connection.channel()
        for queue in notification_queues():
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                body = message.body  # str when the message says it is UTF-8 text
                messages.append(Haystack(f"notification on {queue}", body if isinstance(
                    body, bytes) else body.encode("utf-8", "surrogateescape")))
        channel.close()
    return messages


@pytest.fixture(scope="module")
def after_the_scenarios(scenario_run, cloud, domain_xml_dir):
    """The scenarios have run (their servers are gone); any guest left is dumped too."""
    domain_xml_dir.mkdir(parents=True, exist_ok=True)
    for name, xml in cloud.domain_xml().items():
        (domain_xml_dir / f"left-{name}.xml").write_text(xml)
    return scenario_run


@pytest.fixture(scope="module")
def nonces(after_the_scenarios, cloud_target) -> list[bytes]:
    found = scenario_nonces(cloud_target)
    trusted = [r for r in after_the_scenarios["results"] if r["name"].startswith("trusted_")]
    assert trusted and len(found) >= len(trusted), "the scenarios left no nonce files"
    return found


def test_n_is_in_no_log(nonces, cloud):
    haystacks = list(files_under(*log_files(cloud)))
    names = " ".join(h.name for h in haystacks)
    for expected in ("nova-compute-tl-compute-high.log", "nova-compute-tl-compute-low.log",
                     "ttp.log", "ttp-rpc.log", "qemu/"):
        assert expected in names, f"no {expected} among the logs searched"
    assert scan(haystacks, nonces) == []


def test_n_is_in_no_database(nonces):
    dumps = mariadb_dumps()
    names = {dump.name for dump in dumps}
    for database in ("nova_cell1", "nova_api", "neutron", "glance", "keystone"):
        assert f"MariaDB {configs.DB_PREFIX}{database}" in names, names
    ttp = postgres_dump(configs.DB_PREFIX + "ttp")
    assert b"COPY public.attestations" in ttp.data  # the audit records were dumped
    assert scan([*dumps, ttp], nonces) == []


def test_n_is_in_no_domain_xml(nonces, cloud_target, domain_xml_dir):
    xml = list(files_under(domain_xml_dir))
    hosts = {pathlib.Path(h.name).name.removeprefix("left-").split("-instance-")[0]
             for h in xml}
    assert {cloud_target.high_host, cloud_target.low_host} <= hosts, \
        f"no domain XML of guests on both computes: {sorted(hosts)}"
    assert all(b"<domain" in h.data for h in xml)
    assert scan(xml, nonces) == []


def test_n_is_in_no_notification(nonces, cloud):
    messages = drain_notifications(configs.transport_url(cloud.state))
    text = b"\n".join(m.data for m in messages)
    assert b"instance.create.end" in text, "Nova's notifications did not reach the queues"
    assert b"trusted_launch.attestation.success" in text, \
        "the driver's attestation notifications did not reach the queues"
    assert scan(messages, nonces) == []


def test_no_password_in_any_log(cloud):
    passwords = [value.encode() for value in cloud.state.passwords.values()]
    assert passwords
    assert scan(files_under(*log_files(cloud)), passwords) == []


def test_the_scan_finds_a_nonce_planted_in_a_scratch_copy(nonces, cloud, tmp_path):
    """Control: the same scan over a copy of a real log and a real dump, with N planted."""
    log = cloud.paths.log / "nova-compute-tl-compute-high.log"
    copy = tmp_path / log.name
    shutil.copy(log, copy)
    dump = postgres_dump(configs.DB_PREFIX + "ttp")
    assert scan([*files_under(copy), dump], nonces) == []
    for form in encodings(nonces[0]):
        with open(copy, "ab") as handle:
            handle.write(b"planted " + form + b"\n")
        assert scan(files_under(copy), nonces), f"{form!r} planted and not found"
        copy.write_bytes(log.read_bytes())
    planted = Haystack(dump.name, dump.data + json.dumps({"n": nonces[-1].hex()}).encode())
    assert scan([planted], nonces)
