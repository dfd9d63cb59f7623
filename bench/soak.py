"""Bounded soak: concurrent trusted launches and TTP requests for minutes, loopback only.

Real parts: the ``trusted-launch-ttp`` process (2 pre-forked workers) over
HTTPS on a throw-away PostgreSQL database, three simulated compute hosts,
each its own swtpm booted from a real firmware event log and enrolled at the
TTP. While it runs:

* two launcher threads per host: tenant token (``create_launch_token``) ->
  host attestation (TPM2_Certify, POST /v1/attestations) -> open {N, H} in the
  TPM (PolicyPCR + ECDH_ZGen); the released N must equal the tenant's N; a
  refiller thread per host tops its bind-key pool up, as the driver does;
* one API thread: GET /v1/keys, the launch's audit record
  (GET /v1/attestations/{id}), its signed receipt verified by the tenant
  library (GET /v1/receipts/{digest}), GET /v1/hosts/{name} and
  GET /v1/hosts?status=1;
* one continuous-attestation thread: each host's :class:`HostMonitor` round
  (challenge + quote), its reported profile must be the expected one.

Sampled every ``--sample`` seconds: RSS of the TTP's processes and of this
(host-side) process, open fds. Before vs after (once the pools are refilled):
open fds of the TTP processes (database sockets counted apart: the pool keeps
them by design) and of this process, TPM transient objects and loaded sessions
per swtpm (the pool's resident next key and spare policy session are the
baseline, counted after warm-up). At the end every trusted launch must have
its audit record in the database (items lost = 0).

Exit status 1 if any request failed, an fd or TPM handle leaked, an item was
lost or a process's RSS grew faster than ``--max-growth`` KiB/min after
warm-up (the first 20 % of the run; least-squares slope, judged when at least
two minutes remain after warm-up). Two leaks this found are fixed: ~1.2 KiB
per TLS connection in the TTP (cheroot reading ``SSLSocket.session``) and
~1.2 KiB per decryption on the host (ESAPI's object of a TPM-flushed session).

    python bench/soak.py --minutes 5        # writes bench/soak.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from keystoneauth1 import session as ks_session  # noqa: E402

from trusted_launch.client.launch_token import create_launch_token  # noqa: E402
from trusted_launch.client.receipts import fetch_receipt  # noqa: E402
from trusted_launch.compute.host_monitor import HostMonitor  # noqa: E402
from trusted_launch.compute.ttp_client import TTPClient  # noqa: E402
from trusted_launch.crypto.nonce import read_nonce_file  # noqa: E402
from trusted_launch.crypto.token import ImageDigest  # noqa: E402
from trusted_launch.sandbox import monitoring  # noqa: E402
from trusted_launch.sandbox.databases import PG_ADMIN, postgres_database  # noqa: E402
from trusted_launch.sandbox.hosts import BIND_KEY_PCRS, SandboxHost, running_host  # noqa: E402
from trusted_launch.sandbox.pki import CertificateAuthority  # noqa: E402
from trusted_launch.sandbox.swtpm import StateCache  # noqa: E402
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp  # noqa: E402

DATA = ROOT / "tests" / "data" / "eventlogs"
PROFILES_DIR = ROOT / "examples" / "profiles"
SECUREBOOT = DATA / "secureboot_binary_bios_measurements"
NO_SECUREBOOT = DATA / "coreos_36_shielded_vm_no_secure_boot_eventlog"
#: host name -> (event log, profile its launches ask for and its monitor must report)
HOSTS = {"soak-a": (SECUREBOOT, "high"), "soak-b": (SECUREBOOT, "high"),
         "soak-c": (NO_SECUREBOOT, "low")}
LAUNCHERS_PER_HOST = 2
TTP_WORKERS = 2
POOL_SIZE = 4
#: SQLAlchemy's default QueuePool: 5 + 10 overflow connections per worker process.
DB_CONNECTIONS_PER_WORKER = 15
MONITOR_PAUSE_S = 0.2
ERROR_PAUSE_S = 0.5
FD_SETTLE_S = 15.0
WARMUP_FRACTION = 0.2
#: RSS growth rate allowed per process after warm-up (least-squares slope); judged only
#: over a window of at least MIN_JUDGED_WINDOW_S (shorter windows are too noisy).
MAX_GROWTH_KIB_PER_MIN = 768.0
MIN_JUDGED_WINDOW_S = 120.0
IMAGE = ImageDigest("sha512", bytes(range(64)))
DEFAULT_OUT = ROOT / "bench" / "soak.json"


@dataclass
class Launch:
    """What the API thread needs to look a finished launch up (N stays in memory)."""

    token: str = field(repr=False)
    nonce: bytes = field(repr=False)
    attestation_id: str


class Tally:
    """Thread-safe counters, error texts and the launch budget."""

    def __init__(self, launch_budget: int | None) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.launch_ids: list[str] = []
        self.recent: collections.deque[Launch] = collections.deque(maxlen=64)
        self._budget = launch_budget
        self.budget_spent = threading.Event()

    def claim_launch(self) -> bool:
        """Take one launch from the budget; False once it is spent."""
        with self._lock:
            if self._budget is not None and self.counts["launches_started"] >= self._budget:
                self.budget_spent.set()
                return False
            self.counts["launches_started"] += 1
            return True

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self.counts[name] += count

    def launched(self, launch: Launch, requests_made: int) -> None:
        with self._lock:
            self.counts["launches_ok"] += 1
            self.counts["requests"] += requests_made
            self.launch_ids.append(launch.attestation_id)
            self.recent.append(launch)

    def error(self, where: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.counts["errors"] += 1
            if len(self.errors) < 20:
                self.errors.append(f"{where}: {text}"[:300])

    def a_recent_launch(self) -> Launch | None:
        with self._lock:
            return self.recent[-1] if self.recent else None


@dataclass
class SoakHost:
    host: SandboxHost
    profile: str
    refiller: PoolRefiller


class PoolRefiller:
    """The driver's PoolRefiller in miniature: fill() on request, from a daemon thread."""

    def __init__(self, host: SandboxHost, tally: Tally) -> None:
        self._host, self._tally = host, tally
        self._wanted = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"refill-{host.name}")

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stop = True
        self._wanted.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            try:
                self._host.pool.fill()
            except Exception as exc:  # counted, the soak goes on
                self._tally.error(f"refill {self._host.name}", exc)


class Soak:
    """The running parts and the workers that load them."""

    def __init__(self, ttp: TTPServer, hosts: dict[str, SoakHost], tally: Tally,
                 nonce_dir: pathlib.Path) -> None:
        self.ttp, self.hosts, self.tally = ttp, hosts, tally
        self.nonce_dir = nonce_dir
        self.stop = threading.Event()
        self._reader: str | None = None

    # one unit of work each ------------------------------------------------------------
    def launch_once(self, name: str, client: TTPClient) -> None:
        """Token -> attestation -> open in the TPM; N must come back unchanged."""
        soak_host = self.hosts[name]
        token, nonce_path = create_launch_token(
            self.ttp.url, soak_host.profile, IMAGE, ca_file=str(self.ttp.ca_file),
            nonce_dir=self.nonce_dir)
        nonce = read_nonce_file(nonce_path)
        nonce_path.unlink()
        runner = soak_host.host.runner
        try:
            pending = runner.attest(client, token=token, launch_id=str(uuid.uuid4()))
            released = runner.open(pending)
        finally:
            soak_host.refiller.request()
        if released.nonce != nonce:
            raise AssertionError("the released N is not the tenant's N")
        self.tally.launched(Launch(token, nonce, pending.attestation_id), requests_made=2)

    def api_round(self, session: requests.Session) -> None:
        """The other API calls a deployment makes, each answer checked."""
        verify = str(self.ttp.ca_file)
        self._get(session, "/v1/keys", verify)
        launch = self.tally.a_recent_launch()
        if launch is not None:
            record = self._get(session, f"/v1/attestations/{launch.attestation_id}", verify)
            if record.json().get("verdict") != "trusted" or launch.nonce.hex() in record.text:
                raise AssertionError(f"audit record {launch.attestation_id} is wrong")
            receipt = fetch_receipt(self.ttp.url, launch.token, launch.nonce, ca_file=verify)
            if not receipt.trusted:
                raise AssertionError("the receipt of a trusted launch is not trusted")
            self.tally.add("requests", 2)
        for name in self.hosts:
            if self._get(session, f"/v1/hosts/{name}", verify).json().get("host") != name:
                raise AssertionError(f"GET /v1/hosts/{name} names another host")
        self._get(session, "/v1/hosts?status=1", verify)

    def _get(self, session: requests.Session, path: str, verify: str) -> requests.Response:
        answer = session.get(self.ttp.url + path, verify=verify, timeout=30,
                             headers={"X-Auth-Token": self._reader_token()})
        self.tally.add("requests")
        if answer.status_code != 200:
            raise AssertionError(f"GET {path}: HTTP {answer.status_code} {answer.text[:120]}")
        return answer

    def monitor_round(self, monitors: dict[str, HostMonitor]) -> None:
        """One continuous-attestation round per host (challenge + quote)."""
        for name, monitor in monitors.items():
            report = monitor.run_once()
            self.tally.add("requests", 2)
            self.tally.add("host_attestations")
            if report.profile != self.hosts[name].profile:
                raise AssertionError(f"host {name} reported {report.profile!r} "
                                     f"({report.check}: {report.reason})")

    # workers ----------------------------------------------------------------------------
    def launcher(self, name: str) -> None:
        with self._ttp_client() as client:
            while not self.stop.is_set() and self.tally.claim_launch():
                self._guarded(f"launch on {name}", lambda: self.launch_once(name, client))

    def api_worker(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                self._guarded("api", lambda: self.api_round(session))

    def monitor_worker(self) -> None:
        with self._monitors() as monitors:
            while not self.stop.wait(MONITOR_PAUSE_S):
                self._guarded("host monitor", lambda: self.monitor_round(monitors))

    def _guarded(self, where: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # counted and reported; the soak goes on
            self.tally.error(where, exc)
            self.stop.wait(ERROR_PAUSE_S)

    def _reader_token(self) -> str:
        """A reader token for the monitoring reads (made once)."""
        if self._reader is None:
            self._reader = self.ttp.create_token("reader")
        return self._reader

    @contextlib.contextmanager
    def _ttp_client(self, host: str | None = None) -> Iterator[TTPClient]:
        """A TTP client; with ``host``, carrying that host's token (continuous attestation)."""
        session = ks_session.Session(verify=str(self.ttp.ca_file), timeout=30)
        token = self.ttp.create_token("host", host) if host else None
        try:
            yield TTPClient(self.ttp.url, timeout=30, connect_retries=0, session=session,
                            auth_token=token)
        finally:
            session.session.close()

    @contextlib.contextmanager
    def _monitors(self) -> Iterator[dict[str, HostMonitor]]:
        with contextlib.ExitStack() as stack:
            monitors = {}
            for name, soak_host in self.hosts.items():
                client = stack.enter_context(self._ttp_client(name))
                host = soak_host.host
                monitors[name] = HostMonitor(
                    device=host.device, ttp=client, host_name=name,
                    read_event_log=host.event_log.read_bytes, pcr_selection=BIND_KEY_PCRS)
            yield monitors

    def warm_up(self) -> None:
        """One of everything, single-threaded: caches, TLS contexts, database pools."""
        for name in self.hosts:
            with self._ttp_client() as client:
                self.launch_once(name, client)
        with requests.Session() as session:
            self.api_round(session)
        with self._monitors() as monitors:
            self.monitor_round(monitors)

    def threads(self) -> list[threading.Thread]:
        workers = [threading.Thread(target=self.launcher, args=(name,), name=f"launch-{name}")
                   for name in self.hosts for _ in range(LAUNCHERS_PER_HOST)]
        workers.append(threading.Thread(target=self.api_worker, name="api"))
        workers.append(threading.Thread(target=self.monitor_worker, name="monitor"))
        return workers


# figures ----------------------------------------------------------------------------------

class Sampler:
    """RSS and fds of this process and of the TTP's processes, every ``interval`` s."""

    def __init__(self, ttp_pid: int, interval: float) -> None:
        self.ttp_pid, self.interval = ttp_pid, interval
        self.samples: list[dict] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        ttp = {_ttp_role(pid, self.ttp_pid): pid
               for pid in monitoring.process_tree(self.ttp_pid)}
        rss = {role: monitoring.rss_kib(pid) for role, pid in ttp.items()}
        rss["host_side"] = monitoring.rss_kib(os.getpid())
        self.samples.append({"t": round(time.monotonic() - self.started, 2), "rss_kib": rss,
                             "fds": {"host_side": monitoring.open_fds(os.getpid()),
                                     "ttp": sum(monitoring.open_fds(p) for p in ttp.values())}})


def _ttp_role(pid: int, master: int) -> str:
    return "ttp_master" if pid == master else f"ttp_worker_{pid}"


def fd_figures(ttp_pid: int) -> dict[str, int]:
    """Open fds: this process, the TTP's processes, and how many are database sockets."""
    pids = monitoring.process_tree(ttp_pid)
    return {"host_side": monitoring.open_fds(os.getpid()),
            "ttp": sum(monitoring.open_fds(pid) for pid in pids),
            "ttp_db_sockets": sum(monitoring.tcp_peers(pid, PG_ADMIN["port"]) for pid in pids),
            "ttp_processes": len(pids)}


def fds_leaked(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Why ``after`` leaked fds relative to ``before`` (empty if it did not)."""
    problems = []
    if after["host_side"] > before["host_side"]:
        problems.append(f"host side: {before['host_side']} -> {after['host_side']} fds")
    ttp_before = before["ttp"] - before["ttp_db_sockets"]
    ttp_after = after["ttp"] - after["ttp_db_sockets"]
    if ttp_after > ttp_before:
        problems.append(f"TTP (without database sockets): {ttp_before} -> {ttp_after} fds")
    limit = DB_CONNECTIONS_PER_WORKER * TTP_WORKERS
    if after["ttp_db_sockets"] > limit:
        problems.append(f"TTP database sockets {after['ttp_db_sockets']} > pool limit {limit}")
    return problems


def settled_fds(ttp_pid: int, baseline: dict[str, int]) -> dict[str, int]:
    """fd figures once closed connections are gone on both ends (or after FD_SETTLE_S)."""
    deadline = time.monotonic() + FD_SETTLE_S
    figures = fd_figures(ttp_pid)
    while fds_leaked(baseline, figures) and time.monotonic() < deadline:
        time.sleep(0.2)
        figures = fd_figures(ttp_pid)
    return figures


def tpm_figures(hosts: dict[str, SoakHost]) -> dict[str, dict[str, int]]:
    """Handle counts per swtpm with every pool full (resident key + spare session)."""
    for soak_host in hosts.values():
        soak_host.host.pool.fill()
    return {name: monitoring.tpm_handle_counts(h.host.device) for name, h in hosts.items()}


def memory_figures(samples: list[dict], warmup_s: float) -> dict[str, dict]:
    """Per process: start/end/peak RSS and the post-warm-up growth (KiB/min, MiB total)."""
    figures = {}
    roles = sorted({role for sample in samples for role in sample["rss_kib"]})
    for role in roles:
        series = [(s["t"], s["rss_kib"][role]) for s in samples if s["rss_kib"].get(role)]
        if not series:
            continue
        settled = [(t, v) for t, v in series if t >= warmup_s]
        slope = monitoring.growth_per_minute(settled)
        window_min = (settled[-1][0] - settled[0][0]) / 60 if len(settled) > 1 else 0.0
        figures[role] = {
            "start_kib": series[0][1], "after_warmup_kib": settled[0][1] if settled else None,
            "end_kib": series[-1][1], "peak_kib": max(v for _, v in series),
            "growth_kib_per_min": round(slope, 1),
            "growth_after_warmup_mib": round(slope * window_min / 1024, 2),
            "window_s": round(window_min * 60, 1)}
    return figures


def audit_records_missing(database_url: str, attestation_ids: list[str]) -> int:
    """Trusted launches whose audit record is not in the TTP's database."""
    import psycopg2

    name = database_url.rsplit("/", 1)[1]
    with contextlib.closing(psycopg2.connect(connect_timeout=5,
                                             **dict(PG_ADMIN, dbname=name))) as connection, \
            connection.cursor() as cursor:
        cursor.execute("SELECT id FROM attestations WHERE verdict = 'trusted'")
        recorded = {row[0] for row in cursor.fetchall()}
    return len(set(attestation_ids) - recorded)


# the run ------------------------------------------------------------------------------

@contextlib.contextmanager
def soak_environment(tmp: pathlib.Path, tally: Tally) -> Iterator[tuple[Soak, str]]:
    """The TTP on PostgreSQL and the enrolled hosts with their refillers."""
    states = StateCache(tmp / "tpm-states")
    states.state(0)
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(postgres_database("ttp_soak"))
        ttp = stack.enter_context(start_ttp(
            tmp / "ttp", tls_ca=CertificateAuthority(tmp / "tls-ca"),
            ek_ca_files=states.ca.ek_ca_certs, database_url=database_url,
            workers=TTP_WORKERS, profiles_dir=PROFILES_DIR))
        hosts = {}
        for index, (name, (log, profile)) in enumerate(HOSTS.items()):
            host = stack.enter_context(running_host(name, states.state(index), states.ca,
                                                    log, ttp, pool_size=POOL_SIZE))
            refiller = PoolRefiller(host, tally)
            refiller.start()
            stack.callback(refiller.stop)
            hosts[name] = SoakHost(host, profile, refiller)
        nonce_dir = tmp / "nonces"
        nonce_dir.mkdir()
        yield Soak(ttp, hosts, tally, nonce_dir), database_url


def run_soak(*, minutes: float | None = 5.0, launches: int | None = None,
             sample_s: float = 5.0, max_growth: float = MAX_GROWTH_KIB_PER_MIN,
             out: pathlib.Path | None = DEFAULT_OUT) -> dict:
    """Run the soak until ``minutes`` pass or ``launches`` were started; the report."""
    if minutes is None and launches is None:
        raise ValueError("bound the soak by minutes, launches or both")
    tally = Tally(launches)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, \
            soak_environment(pathlib.Path(tmp), tally) as (soak, database_url):
        ttp_pid = soak.ttp.process.pid
        soak.warm_up()
        fds_before = settled_fds(ttp_pid, fd_figures(ttp_pid))
        tpm_before = tpm_figures(soak.hosts)
        workers = soak.threads()
        with Sampler(ttp_pid, sample_s) as sampler:
            started = time.monotonic()
            for thread in workers:
                thread.start()
            deadline = started + minutes * 60 if minutes is not None else None
            while not tally.budget_spent.is_set() and \
                    (deadline is None or time.monotonic() < deadline):
                tally.budget_spent.wait(0.5)
            soak.stop.set()
            for thread in workers:
                thread.join()
            elapsed = time.monotonic() - started
        for soak_host in soak.hosts.values():
            soak_host.refiller.stop()
        tpm_after = tpm_figures(soak.hosts)
        fds_after = settled_fds(ttp_pid, fds_before)
        missing = audit_records_missing(database_url, tally.launch_ids)
    report = _report(tally, elapsed, sampler.samples, max_growth,
                     (fds_before, fds_after), (tpm_before, tpm_after), missing)
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _report(tally: Tally, elapsed: float, samples: list[dict], max_growth: float,
            fds: tuple[dict, dict], tpm: tuple[dict, dict], missing: int) -> dict:
    warmup_s = samples[-1]["t"] * WARMUP_FRACTION if samples else 0.0
    memory = memory_figures(samples, warmup_s)
    judged = bool(memory) and min(m["window_s"] for m in memory.values()) \
        >= MIN_JUDGED_WINDOW_S
    grown = {role: m["growth_kib_per_min"] for role, m in memory.items()
             if judged and m["growth_kib_per_min"] > max_growth}
    fd_problems = fds_leaked(*fds)
    tpm_leaks = {name: {"before": tpm[0][name], "after": tpm[1][name]}
                 for name in tpm[0] if tpm[1][name] != tpm[0][name]}
    counts = tally.counts
    failures = ([f"{counts['errors']} error(s)"] if counts["errors"] else []) + fd_problems \
        + ([f"TPM handles not back to baseline: {tpm_leaks}"] if tpm_leaks else []) \
        + ([f"{missing} launch(es) without an audit record"] if missing else []) \
        + ([f"RSS grew faster than {max_growth} KiB/min after warm-up: {grown}"] if grown
           else [])
    return {
        "ok": not failures, "failures": failures,
        "duration_s": round(elapsed, 1), "hosts": len(HOSTS),
        "concurrent_launchers": len(HOSTS) * LAUNCHERS_PER_HOST, "ttp_workers": TTP_WORKERS,
        "database": "postgresql",
        "requests_served": counts["requests"], "launches_ok": counts["launches_ok"],
        "host_attestations": counts["host_attestations"],
        "requests_per_s": round(counts["requests"] / elapsed, 1) if elapsed else None,
        "errors": counts["errors"], "error_samples": tally.errors, "items_lost": missing,
        "fds_before": fds[0], "fds_after": fds[1],
        "tpm_handles_before": tpm[0], "tpm_handles_after": tpm[1],
        "warmup_s": round(warmup_s, 1), "max_growth_kib_per_min": max_growth,
        "memory_judged": judged, "memory": memory,
        "samples": samples,
    }


def print_report(report: dict) -> None:
    for name, value in report.items():
        if name not in ("samples", "memory"):
            print(f"   {name:24s} {value}")
    for role, figures in report["memory"].items():
        print(f"   rss {role:20s} start {figures['start_kib']} KiB, end {figures['end_kib']}"
              f" KiB, peak {figures['peak_kib']} KiB, {figures['growth_kib_per_min']} KiB/min"
              f" after warm-up ({figures['growth_after_warmup_mib']} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth", type=float, default=MAX_GROWTH_KIB_PER_MIN,
                        help="allowed RSS growth per process after warm-up, KiB/min "
                             f"(judged from {MIN_JUDGED_WINDOW_S:.0f} s after warm-up on)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    report = run_soak(minutes=args.minutes, sample_s=args.sample,
                      max_growth=args.max_growth, out=args.out)
    print_report(report)
    print(f"soak {'passed' if report['ok'] else 'FAILED: ' + '; '.join(report['failures'])}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
