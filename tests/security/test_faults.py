"""Faults: the TTP killed mid-request, its database down, the TPM killed, clocks skewed.

Each fault must leave no half-state: no N released, the token not spent by a
launch that did not happen, no audit record of a decision that was not
answered, and the next launch works once the fault is gone.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.security.conftest import TRUSTED_LOG, Host, running_ttp, start_host
from trusted_launch.client import launch_token
from trusted_launch.compute.errors import AttestationRefused, TTPUnreachable
from trusted_launch.compute.launch import TrustedLaunchHost
from trusted_launch.sandbox.hosts import ttp_client
from trusted_launch.sandbox.ttp_process import TTPServer
from trusted_launch.tpm import BindKeyPool, TPMDevice, TPMUnavailable

pytestmark = pytest.mark.swtpm

PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
POLL_S = 0.02
WAIT_S = 20.0
FAULTS: list[str] = []


def _launch() -> str:
    return str(uuid.uuid4())


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _in_background(call: Callable[[], object]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@contextlib.contextmanager
def _host_at(ttp: TTPServer, states, index: int = 0) -> Iterator[Host]:
    host = start_host(f"fault-{secrets.token_hex(3)}", states.state(index), states.ca,
                      TRUSTED_LOG, ttp)
    try:
        yield host
    finally:
        host.close()


def _attestation_rows(ttp: TTPServer, launch_id: str) -> int:
    """Audit records of ``launch_id``, read through the TTP's own database layer."""
    from sqlalchemy import func, select

    from trusted_launch.ttp.db.api import TTPDatabase
    from trusted_launch.ttp.db.models import Attestation

    url = next(line.split("=", 1)[1].strip() for line in ttp.config_file.read_text()
               .splitlines() if line.startswith("connection"))
    db = TTPDatabase(url)
    try:
        with db.engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(Attestation)
                                     .where(Attestation.launch_id == launch_id))
    finally:
        db.dispose()


@pytest.fixture(scope="module", autouse=True)
def _report_faults() -> Iterator[None]:
    yield
    print(f"\nfaults injected: {len(FAULTS)}: {FAULTS}")


# -- PostgreSQL: a throw-away database per test --------------------------------------

@pytest.fixture(scope="module")
def postgres_url() -> Iterator[tuple[str, Callable[[str], None]]]:
    """(URL of a fresh database, run(sql) as the admin); dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not reachable: {exc}")
    admin.autocommit = True
    name = f"ttp_fault_{secrets.token_hex(6)}"

    def run(sql: str) -> list:
        with admin.cursor() as cursor:
            cursor.execute(sql.replace("{db}", name))
            return cursor.fetchall() if cursor.description else []

    run("CREATE DATABASE {db}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", run
    finally:
        run("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true")
        run("DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def pg_ttp(postgres_url, swtpm_state_cache, tls_ca, tmp_path_factory) -> Iterator[TTPServer]:
    """A TTP of its own on a throw-away PostgreSQL database (killed and restarted here)."""
    with running_ttp(tmp_path_factory.mktemp("fault-pg-ttp"), tls_ca=tls_ca,
                     database_url=postgres_url[0],
                     ek_ca_files=swtpm_state_cache.ca.ek_ca_certs) as ttp:
        yield ttp


@pytest.fixture(scope="module")
def pg_host(pg_ttp, swtpm_state_cache) -> Iterator[Host]:
    with _host_at(pg_ttp, swtpm_state_cache) as host:
        yield host


@pytest.fixture(scope="module")
def sqlite_ttp(swtpm_state_cache, tls_ca, tmp_path_factory) -> Iterator[TTPServer]:
    """A TTP of its own on SQLite (killed and restarted here)."""
    with running_ttp(tmp_path_factory.mktemp("fault-sqlite-ttp"), tls_ca=tls_ca,
                     ek_ca_files=swtpm_state_cache.ca.ek_ca_certs) as ttp:
        yield ttp


@pytest.fixture(scope="module")
def sqlite_host(sqlite_ttp, swtpm_state_cache) -> Iterator[Host]:
    with _host_at(sqlite_ttp, swtpm_state_cache) as host:
        yield host


# -- the TTP dies while a host waits for its answer ----------------------------------

def test_ttp_killed_while_recording_the_decision(postgres_url, pg_ttp, pg_host, tenant):
    """Killed after verifying, while committing the release: nothing leaks, nothing is spent.

    The test locks the replay table, so the TTP blocks exactly where it
    records the token as used (with the sealed N already computed), and is
    killed there.
    """
    url, sql = postgres_url
    psycopg2 = pytest.importorskip("psycopg2")
    ttp, host = pg_ttp, pg_host
    token, nonce = tenant("high", server=ttp)
    launch_id = _launch()
    locker = psycopg2.connect(connect_timeout=3, **dict(PG, dbname=url.rsplit("/", 1)[1]))
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE used_tokens IN ACCESS EXCLUSIVE MODE")
        thread, outcome = _in_background(lambda: host.runner.release(
            ttp_client(ttp, timeout=60), token=token, launch_id=launch_id))
        _wait_for(lambda: sql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "'{db}' AND wait_event_type = 'Lock'")[0][0] > 0,
                  "the TTP to block on the replay table")
        ttp.process.kill()
        ttp.process.wait(10)
        FAULTS.append("TTP SIGKILL while recording")
        thread.join(WAIT_S)
    finally:
        locker.rollback()
        locker.close()
    assert isinstance(outcome.get("error"), TTPUnreachable), outcome
    assert "value" not in outcome
    ttp.start()
    assert _attestation_rows(ttp, launch_id) == 0
    released = host.runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    assert released.nonce == nonce  # the token was not spent by the dead request


def _established_to(port: int) -> bool:
    """True once some TCP connection to 127.0.0.1:port is established."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
                return True
    return False


def test_ttp_killed_while_frozen_with_a_host_connected(sqlite_ttp, sqlite_host, tenant):
    """SQLite variant: the TTP is frozen, the host connects and waits, the TTP dies."""
    import signal

    ttp, host = sqlite_ttp, sqlite_host
    token, nonce = tenant("high", server=ttp)
    launch_id = _launch()
    ttp.process.send_signal(signal.SIGSTOP)
    thread, outcome = _in_background(lambda: host.runner.release(
        ttp_client(ttp, timeout=60), token=token, launch_id=launch_id))
    _wait_for(lambda: _established_to(ttp.port), "the host to connect")
    ttp.process.kill()
    ttp.process.wait(10)
    FAULTS.append("TTP SIGKILL while frozen")
    thread.join(WAIT_S)
    assert isinstance(outcome.get("error"), TTPUnreachable), outcome
    ttp.start()
    assert _attestation_rows(ttp, launch_id) == 0
    assert host.runner.release(ttp_client(ttp), token=token,
                               launch_id=_launch()).nonce == nonce


# -- the database goes away and comes back -------------------------------------------

def _refused_with_503(host: Host, ttp: TTPServer, token: str) -> str:
    _, body = host.runner.evidence(token=token, launch_id=_launch())
    answer = ttp.request("POST", "/v1/attestations", json=body)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert "released" not in answer.json() and "attestation_id" not in answer.json()
    with pytest.raises(TTPUnreachable, match="503"):
        host.runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    return answer.json()["error"]["check"]


def test_postgresql_down_then_read_only_then_back(postgres_url, pg_ttp, pg_host, tenant):
    _, sql = postgres_url
    ttp, host = pg_ttp, pg_host
    token, nonce = tenant("high", server=ttp)
    sql("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false")
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
    FAULTS.append("PostgreSQL refuses connections")
    _refused_with_503(host, ttp, token)
    # writes fail while reads work: the TTP verifies, cannot record, releases nothing
    sql("ALTER DATABASE {db} SET default_transaction_read_only = on")
    sql("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true")
    FAULTS.append("PostgreSQL read-only")
    assert _refused_with_503(host, ttp, token) == "database"
    sql("ALTER DATABASE {db} RESET default_transaction_read_only")
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
    released = host.runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    assert released.nonce == nonce


def test_sqlite_file_made_immutable_then_writable(sqlite_ttp, sqlite_host, tenant):
    ttp, host = sqlite_ttp, sqlite_host
    database = ttp.directory / "ttp.sqlite"
    token, nonce = tenant("high", server=ttp)
    if subprocess.run(["chattr", "+i", str(database)], check=False).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        FAULTS.append("SQLite file immutable")
        assert _refused_with_503(host, ttp, token) == "database"
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    released = host.runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    assert released.nonce == nonce


# -- the TPM dies during a launch ----------------------------------------------------

def _runner_on_new_device(host: Host) -> tuple[TPMDevice, TrustedLaunchHost]:
    device = TPMDevice(host.tpm.tcti)
    pool = BindKeyPool(device, algorithm="ecc", pcr_selection=host.pool.pcr_selection, size=1)
    runner = TrustedLaunchHost(device=device, pool=pool, identity=host.runner._identity,
                               read_event_log=host.event_log.read_bytes,
                               bind_key_pcrs=host.runner._bind_key_pcrs)
    return device, runner


def test_swtpm_killed_between_attest_and_open(ttp, swtpm_state_cache, tenant):
    with _host_at(ttp, swtpm_state_cache, index=2) as host:
        token, nonce = tenant("high")
        pending = host.runner.attest(ttp_client(ttp), token=token, launch_id=_launch())
        host.tpm.kill()
        FAULTS.append("swtpm SIGKILL after attest")
        with pytest.raises(TPMUnavailable, match="unreachable"):  # this host's fault
            host.runner.open(pending)
        with pytest.raises(TPMUnavailable):  # the broken device stays refused
            host.runner.evidence(token=token, launch_id=_launch())
        host.tpm.restart()
        host.tpm.boot(TRUSTED_LOG)
        device, runner = _runner_on_new_device(host)
        try:
            assert device.transient_handles() == [] and device.loaded_sessions() == []
            assert runner.open(pending).nonce == nonce  # the same release still opens
            token, nonce = tenant("high")
            assert runner.release(ttp_client(ttp), token=token,
                                  launch_id=_launch()).nonce == nonce
            assert device.transient_handles() == [] and device.loaded_sessions() == []
        finally:
            device.close()


def test_swtpm_killed_before_certify_spends_no_token(ttp, swtpm_state_cache, tenant):
    with _host_at(ttp, swtpm_state_cache, index=2) as host:
        token, nonce = tenant("high")
        host.tpm.kill()
        FAULTS.append("swtpm SIGKILL before certify")
        with pytest.raises(TPMUnavailable):
            host.runner.release(ttp_client(ttp), token=token, launch_id=_launch())
        host.tpm.restart()
        host.tpm.boot(TRUSTED_LOG)
        device, runner = _runner_on_new_device(host)
        try:
            assert runner.release(ttp_client(ttp), token=token,
                                  launch_id=_launch()).nonce == nonce
        finally:
            device.close()


# -- clocks ---------------------------------------------------------------------------

def _skewed_tenant(monkeypatch, skew_s: float) -> None:
    monkeypatch.setattr(launch_token, "time",
                        types.SimpleNamespace(time=lambda: time.time() + skew_s))


def test_tenant_clock_behind_makes_an_expired_token(ttp, hosts, tenant, monkeypatch):
    _skewed_tenant(monkeypatch, -2 * 3600)  # 1 h lifetime ends 1 h before the TTP's now
    FAULTS.append("tenant clock 2 h behind")
    token, _ = tenant("high")
    with pytest.raises(AttestationRefused) as refused:
        hosts["trusted"].runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    assert refused.value.check == "token_expired"


def test_tenant_clock_ahead_still_redeems_once(ttp, hosts, tenant, monkeypatch):
    _skewed_tenant(monkeypatch, 2 * 3600)
    FAULTS.append("tenant clock 2 h ahead")
    token, nonce = tenant("high")
    runner = hosts["trusted"].runner
    assert runner.release(ttp_client(ttp), token=token, launch_id=_launch()).nonce == nonce
    with pytest.raises(AttestationRefused) as refused:
        runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    assert refused.value.check == "token_replayed"

