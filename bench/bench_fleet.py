"""Fleet scale: N simulated hosts attested every T seconds by one TTP while launches go on.

One TTP as an operator runs it (``trusted-launch-ttp``, 2 pre-forked workers,
PostgreSQL, HTTPS) with the example profiles. The fleet's hosts are
:mod:`bench.fleet_hosts` software TPMs (real firmware event logs, TPM2_Quote
marshalled as a TPM does, software keys standing in for AKs), enrolled through
the TTP's enrollment API with the product's ``enroll_host`` (the bench's
vendor CA is in ``ek_ca_files``, as any TPM vendor's CA would be). Load
generator processes (fork, asyncio) run each host as HostMonitor does: first
round after a random delay below one interval, then one round every interval
after the previous one ended, each round on a fresh TLS connection (challenge,
quote over its nonce, attestation). Meanwhile two real swtpm hosts launch at a
steady pace (``TrustedLaunchHost.release()``, as bench_protocol times it).

Baselines from the same run: the same launches and single rounds with the
fleet enrolled but idle; the rate the fleet needs (hosts / interval) and the
interval itself for the worst "last attested at" staleness. Knobs: the
``TRUSTED_LAUNCH_FLEET_*`` environment variables or the command line
(``python bench/bench_fleet.py --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import multiprocessing
import os
import pathlib
import random
import resource
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.bench_protocol import DATA, Sandbox, _launch, percentile, sandbox  # noqa: E402
from bench.bench_ttp import (  # noqa: E402
    _backend_pids,
    _cpu_seconds,
    _server_pids,
    postgres_database,
)
from bench.fleet_hosts import (  # noqa: E402
    FirmwareLog,
    FleetHost,
    RoundResult,
    SoftwareTPM,
    VendorCA,
    attest_round,
)
from trusted_launch.compute.enrollment import enroll_host  # noqa: E402
from trusted_launch.compute.errors import LaunchRefused  # noqa: E402
from trusted_launch.compute.host_monitor import quote_selection  # noqa: E402
from trusted_launch.compute.ttp_client import TTPClient  # noqa: E402
from trusted_launch.sandbox.ttp_process import TTPServer  # noqa: E402

# The two real firmware logs bench_protocol boots its swtpm hosts with (high / low).
FLEET_LOGS = ("secureboot_binary_bios_measurements",
              "coreos_36_shielded_vm_no_secure_boot_eventlog")
SELECTION = quote_selection("sha256:0,1,2,3,4,5,6,7", with_ima=False)
IDLE_ROUNDS = 40
STATUS_EVERY_S = 60.0  # one nova-scheduler pulling at host_status_pull_interval's default
KEYLIME_NOTE = "Keylime's users reported one verifier overwhelmed by 2,500 nodes"


@dataclass(frozen=True)
class FleetPlan:
    """The knobs of one run."""

    hosts: int = 10_000
    interval: float = 60.0
    duration: float = 180.0
    processes: int = 2
    launch_every: float = 1.0  # seconds between trusted launches (both phases)
    idle_launches: int = 40
    enroll_threads: int = 6
    timeout: float = 10.0  # a host's round deadline (TTPClient's default)
    search_phases: int = 4  # runs in all, when the fleet is not sustained: smaller fleets

    @classmethod
    def from_env(cls) -> FleetPlan:
        env = os.environ.get
        return cls(hosts=int(env("TRUSTED_LAUNCH_FLEET_HOSTS", cls.hosts)),
                   interval=float(env("TRUSTED_LAUNCH_FLEET_INTERVAL", cls.interval)),
                   duration=float(env("TRUSTED_LAUNCH_FLEET_DURATION", cls.duration)),
                   processes=int(env("TRUSTED_LAUNCH_FLEET_PROCESSES", cls.processes)),
                   launch_every=float(env("TRUSTED_LAUNCH_FLEET_LAUNCH_EVERY",
                                          cls.launch_every)),
                   search_phases=int(env("TRUSTED_LAUNCH_FLEET_SEARCH_PHASES",
                                         cls.search_phases)))


def host_name(index: int) -> str:
    return f"fleet-{index:05d}"


def host_index(name: str) -> int:
    """The index in ``fleet-NNNNN``; -1 for any other host."""
    prefix, _, number = name.partition("-")
    return int(number) if prefix == "fleet" and number.isdigit() else -1


def make_hosts(indexes: range, vendor: VendorCA) -> list[FleetHost]:
    """Simulated hosts, alternating between the fleet's firmware logs."""
    logs = [FirmwareLog.read(DATA / name) for name in FLEET_LOGS]
    return [FleetHost(host_name(i), SoftwareTPM(logs[i % len(logs)], vendor), SELECTION)
            for i in indexes]


def enroll_all(hosts: list[FleetHost], ttp: TTPServer, threads: int) -> None:
    """As an operator would: register each host's EK and make its token; then it enrolls.

    Enrollment is the product's enroll_host over HTTPS with the host's token.
    """
    local = threading.local()

    def enroll(host: FleetHost) -> None:
        if not hasattr(local, "operator"):  # one HTTPS session per thread
            local.operator = dataclasses.replace(ttp, session=requests.Session())
        local.operator.register_host(host.name, host.tpm.ek_certificate())
        host.token = local.operator.create_token("host", host.name)
        client = TTPClient(ttp.url, ca_file=str(ttp.ca_file), timeout=60, connect_retries=3,
                           auth_token=host.token)
        host.ak_certificate = enroll_host(host.tpm, client, host.name)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(enroll, hosts))


# the load generator (one process per share of the fleet) -------------------------

@dataclass
class DriveOutcome:
    results: list[RoundResult]
    start_lag_ms: list[float]
    peak_in_flight: int


async def drive(hosts: list[FleetHost], plan: FleetPlan, port: int, context: ssl.SSLContext,
                start: float, end: float, seed: int) -> DriveOutcome:
    """Every host as HostMonitor runs it: random first delay, then interval after each round."""
    rng = random.Random(seed)
    outcome = DriveOutcome([], [], 0)
    in_flight = 0

    async def monitor(host: FleetHost, due: float) -> None:
        nonlocal in_flight
        while due < end:
            await asyncio.sleep(max(0.0, due - time.time()))
            outcome.start_lag_ms.append((time.time() - due) * 1000)
            in_flight += 1
            outcome.peak_in_flight = max(outcome.peak_in_flight, in_flight)
            result = await attest_round(host, port, context, plan.timeout)
            in_flight -= 1
            outcome.results.append(result)
            due = result.ended + plan.interval

    await asyncio.gather(*(monitor(h, start + rng.uniform(0, plan.interval)) for h in hosts))
    return outcome


def generator_process(share: int, plan: FleetPlan, vendor: VendorCA, ttp: TTPServer,
                      connection) -> None:
    """Make and enroll this process's hosts, then drive them from the start time it is sent."""
    try:
        began = time.perf_counter()
        hosts = make_hosts(range(share, plan.hosts, plan.processes), vendor)
        made = time.perf_counter()
        enroll_all(hosts, ttp, plan.enroll_threads)
        connection.send({"made_s": made - began, "enrolled_s": time.perf_counter() - made,
                         "hosts": len(hosts)})
        context = ssl.create_default_context(cafile=str(ttp.ca_file))
        while (phase := connection.recv()) is not None:
            start, end, count = phase
            active = [h for h in hosts if host_index(h.name) < count]
            cpu_before = _own_cpu()
            outcome = asyncio.run(drive(active, plan, ttp.port, context, start, end,
                                        seed=share))
            connection.send({"results": [asdict(r) for r in outcome.results],
                             "start_lag_ms": outcome.start_lag_ms,
                             "peak_in_flight": outcome.peak_in_flight,
                             "cpu_s": _own_cpu() - cpu_before})
    except BaseException as exc:  # the parent must hear of it rather than wait
        connection.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        connection.close()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Generators:
    """The load generator processes and their pipes."""

    def __init__(self, plan: FleetPlan, vendor: VendorCA, ttp: TTPServer) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes, self.processes = [], []
        for share in range(plan.processes):
            parent, child = context.Pipe()
            process = context.Process(target=generator_process, daemon=True,
                                      args=(share, plan, vendor, ttp, child))
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def receive(self, timeout: float) -> list[dict]:
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a load generator did not answer within {timeout:.0f} s")
            answer = pipe.recv()
            if "error" in answer:
                raise RuntimeError(f"load generator failed: {answer['error']}")
            answers.append(answer)
        return answers

    def start(self, start: float, end: float, count: int) -> None:
        """Drive the hosts with index < ``count`` from ``start`` to ``end``."""
        for pipe in self.pipes:
            pipe.send((start, end, count))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)


# the launches and the TTP's view ---------------------------------------------------

@dataclass
class Launches:
    """Paced trusted launches: the ms of those that succeeded, why the others failed."""

    ms: list[float]
    failures: Counter


def paced_launches(env: Sandbox, count: int | None, every: float, until: float | None = None
                   ) -> Launches:
    """Trusted launches (release()) every ``every`` s, alternating hosts."""
    clients = {name: env.client() for name in env.hosts}
    hosts = list(env.hosts.values())
    launches = Launches([], Counter())
    index, next_at = 0, time.monotonic()
    while (count is None or index < count) and (until is None or time.time() < until):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every
        host = hosts[index % len(hosts)]
        try:
            elapsed, _, _ = _launch(host, clients[host.name], env.token(host.profile))
            launches.ms.append(elapsed)
        except LaunchRefused as exc:  # an overwhelmed TTP refuses or drops launches too
            launches.failures[exc.check] += 1
        host.pool.fill()  # off the clock, as the driver's refiller does
        index += 1
    return launches


def warm_up(env: Sandbox) -> None:
    """One launch per host: TLS sessions and first-use caches."""
    for host in env.hosts.values():
        _launch(host, env.client(), env.token(host.profile))
        host.pool.fill()


class StatusSampler(threading.Thread):
    """GET /v1/hosts?status=1 every STATUS_EVERY_S: the TTP's "last attested at" per host."""

    def __init__(self, env: Sandbox, hosts: int, from_time: float, until: float) -> None:
        super().__init__(daemon=True)
        self.env, self.hosts, self.from_time, self.until = env, hosts, from_time, until
        self.worst_s = 0.0
        self.samples = 0
        self.listing_ms: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while time.time() < self.until:
            time.sleep(min(STATUS_EVERY_S, max(0.0, self.until - time.time())))
            try:
                self._sample()
            except Exception as exc:  # reported, never fatal to the run
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _sample(self) -> None:
        started = time.perf_counter()
        answer = self.env.ttp.admin("GET", "/v1/hosts?status=1", timeout=60)
        self.listing_ms.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        body = answer.json()
        if body["now"] < self.from_time:
            return
        checked = {s["host"]: s["checked_at"] for s in body["hosts"]
                   if 0 <= host_index(s["host"]) < self.hosts}
        oldest = min(checked.values(), default=0.0)
        missing = self.hosts - len(checked)
        stale = body["now"] - (oldest if not missing else min(oldest, self.from_time))
        self.worst_s = max(self.worst_s, stale)
        self.samples += 1


# figures ----------------------------------------------------------------------------

def worst_staleness(results: list[dict], start: float, end: float) -> tuple[float, str]:
    """Largest gap between a host's successive accepted attestations (TTP times), and whose.

    A host counts as attested at ``start`` (its first round falls in the
    first interval) and is judged up to ``end``.
    """
    by_host: dict[str, list[float]] = {}
    for result in results:
        if result["ok"] and result["checked_at"] is not None:
            by_host.setdefault(result["host"], []).append(result["checked_at"])
    hosts = {r["host"] for r in results}
    worst, whose = 0.0, ""
    for host in hosts:
        times = [start, *sorted(by_host.get(host, [])), end]
        gap = max(b - a for a, b in itertools.pairwise(times))
        if gap > worst:
            worst, whose = gap, host
    return worst, whose


def _ms(samples: list[float], q: float) -> float | None:
    return round(percentile(samples, q), 1) if samples else None


def idle_rounds(env: Sandbox, host: FleetHost, count: int, timeout: float) -> list[float]:
    """Round times (ms) of one host with the fleet idle: the round's own floor."""
    context = ssl.create_default_context(cafile=str(env.ttp.ca_file))

    async def rounds() -> list[float]:
        samples = []
        for _ in range(count):
            result = await attest_round(host, env.ttp.port, context, timeout)
            if not result.ok:
                raise RuntimeError(f"idle round refused: {result.check}")
            samples.append((result.ended - result.started) * 1000)
        return samples
    return asyncio.run(rounds())


def cpu_snapshot(env: Sandbox, generators: Generators, backends) -> dict[str, float]:
    """CPU seconds so far of the TTP, its PostgreSQL backends and the generator processes."""
    return {"ttp": _cpu_seconds(_server_pids(env.ttp.process.pid)),
            "postgres": sum(_cpu_seconds([pid]) for pid in backends()),
            "generators": _cpu_seconds(generators.pids),
            "launcher": _cpu_seconds([os.getpid(), *_swtpm_pids(
                {env.ttp.process.pid, *generators.pids})])}


def _swtpm_pids(others: set[int]) -> list[int]:
    """This process's children but ``others``: the swtpm processes of the launch hosts."""
    children = pathlib.Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in children.read_text().split() if int(p) not in others]
    return []


def _machine_busy_s() -> float:
    """CPU seconds all processes on the machine used so far (every core)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(v) for v in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def summarise(plan: FleetPlan, hosts: int, window: tuple[float, float], results: list[dict],
              lags: list[float], peak: int, cpu: dict[str, float], machine_s: float,
              generator_cpu_s: float) -> dict:
    """The fleet figures of one phase of ``hosts`` hosts."""
    start, end = window
    wall = end - start
    steady = [r for r in results if r["started"] >= start + plan.interval]
    steady_wall = max(1e-9, end - (start + plan.interval))
    accepted = [r for r in results if r["ok"]]
    failures = Counter(r["check"] for r in results if not r["ok"])
    verdicts = Counter(r["profile"] or "untrusted" for r in accepted)
    rounds_ms = [(r["ended"] - r["started"]) * 1000 for r in accepted]
    attest_ms = [r["attest_ms"] for r in accepted]
    worst, whose = worst_staleness(results, start, end)
    rounds = max(1, len(accepted))
    rate = sum(1 for r in steady if r["ok"]) / steady_wall
    target = hosts / plan.interval
    sustained = not failures and worst <= plan.interval + plan.timeout
    ttp_ms = cpu["ttp"] / rounds * 1000
    db_ms = cpu["postgres"] / rounds * 1000
    generator_ms = generator_cpu_s / rounds * 1000
    cores = os.cpu_count() or 1
    return {
        "fleet_hosts": hosts, "fleet_interval_s": plan.interval,
        "fleet_duration_s": round(wall, 1),
        "fleet_target_per_s": round(target, 1),
        "fleet_attestations_per_s": round(rate, 1),
        "fleet_rounds_ok": len(accepted), "fleet_rounds_failed": sum(failures.values()),
        "fleet_failures": dict(failures.most_common(8)),
        "fleet_verdicts": dict(verdicts),
        "fleet_round_ms_p50": _ms(rounds_ms, 50), "fleet_round_ms_p95": _ms(rounds_ms, 95),
        "fleet_round_ms_max": _ms(rounds_ms, 100),
        "fleet_attest_request_ms_p95": _ms(attest_ms, 95),
        "fleet_worst_staleness_s": round(worst, 2), "fleet_worst_staleness_host": whose,
        "fleet_staleness_bound_s": plan.interval + plan.timeout,
        "fleet_generator_start_lag_ms_p95": _ms(lags, 95),
        "fleet_generator_start_lag_ms_max": _ms(lags, 100),
        "fleet_peak_rounds_in_flight": peak,
        "fleet_sustained": sustained,
        "fleet_cpu_cores": {name: round(seconds / wall, 2) for name, seconds in cpu.items()},
        "fleet_machine_cores_busy": round(machine_s / wall, 2),
        "fleet_ttp_cpu_ms_per_round": round(ttp_ms, 2),
        "fleet_db_cpu_ms_per_round": round(db_ms, 2),
        "fleet_generator_cpu_ms_per_round": round(generator_ms, 2),
        # What the cores could sustain at the measured CPU cost per round.
        "fleet_max_hosts_cpu_bound": int(cores / ((ttp_ms + db_ms + generator_ms) / 1000)
                                         * plan.interval),
        "fleet_max_hosts_cpu_bound_ttp_only": int(cores / ((ttp_ms + db_ms) / 1000)
                                                  * plan.interval),
    }


def run_fleet(plan: FleetPlan) -> dict:
    """One fleet run; the figures (without notes)."""
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp_name, \
            postgres_database() as database_url:
        if database_url is None:
            raise RuntimeError("PostgreSQL on 127.0.0.1:5432 is unreachable; the fleet bench "
                               "measures the TTP as operators run it, on PostgreSQL")
        tmp = pathlib.Path(tmp_name)
        vendor = VendorCA()
        vendor_ca = vendor.write(tmp / "vendor-ca.pem")
        with sandbox(tmp, database_url=database_url, workers=2,
                     more_ek_ca_files=(vendor_ca,)) as env:
            return _measure(plan, env, vendor, database_url)


def _measure(plan: FleetPlan, env: Sandbox, vendor: VendorCA, database_url: str) -> dict:
    began = time.perf_counter()
    generators = Generators(plan, vendor, env.ttp)
    try:
        ready = generators.receive(timeout=3600)
        enroll_s = time.perf_counter() - began
        probe = FleetHost("probe-fleet", SoftwareTPM(FirmwareLog.read(DATA / FLEET_LOGS[0]),
                                                     vendor), SELECTION)
        enroll_all([probe], env.ttp, 1)
        warm_up(env)
        idle_round_ms = idle_rounds(env, probe, IDLE_ROUNDS, plan.timeout)
        idle_launches = paced_launches(env, plan.idle_launches, plan.launch_every)
        backends = _backend_pids(database_url)
        phases = [_phase(plan, plan.hosts, env, generators, backends)]
        while len(phases) < plan.search_phases:
            size = next_size(plan, phases)
            if size is None:
                break
            phases.append(_phase(plan, size, env, generators, backends))
    finally:
        generators.stop()
    figures = dict(phases[0])
    sustained = [p["fleet_hosts"] for p in phases if p["fleet_sustained"]]
    figures.update({
        "fleet_max_sustained_hosts": max(sustained) if sustained else None,
        "fleet_phases": [{key.removeprefix("fleet_"): phase[key] for key in PHASE_KEYS}
                         for phase in phases],
        "fleet_enroll_per_s": round(plan.hosts / enroll_s, 1),
        "fleet_enroll_s": round(enroll_s, 1),
        "fleet_make_hosts_s": round(max(r["made_s"] for r in ready), 1),
        "fleet_idle_round_ms_p50": _ms(idle_round_ms, 50),
        "fleet_idle_round_ms_p95": _ms(idle_round_ms, 95),
        "fleet_baseline_launch_ms_p50": _ms(idle_launches.ms, 50),
        "fleet_baseline_launch_ms_p95": _ms(idle_launches.ms, 95),
        "fleet_baseline_launch_failures": dict(idle_launches.failures),
        "fleet_launch_every_s": plan.launch_every,
    })
    return figures


PHASE_KEYS = ("fleet_hosts", "fleet_attestations_per_s", "fleet_target_per_s",
              "fleet_round_ms_p95", "fleet_worst_staleness_s", "fleet_rounds_failed",
              "fleet_launch_ms_p95", "fleet_launch_failures", "fleet_cpu_cores",
              "fleet_machine_cores_busy", "fleet_sustained")


def next_size(plan: FleetPlan, phases: list[dict]) -> int | None:
    """The next fleet size to try, or None when the search is done.

    Below the smallest failed size: 80% of what its accepted rate could
    serve until one is sustained, then the geometric middle between the
    largest sustained and the smallest failed size (while they differ by
    more than 25%).
    """
    failed = [p for p in phases if not p["fleet_sustained"]]
    if not failed:
        return None
    smallest_failed = min(failed, key=lambda p: p["fleet_hosts"])
    high = smallest_failed["fleet_hosts"]
    low = max((p["fleet_hosts"] for p in phases if p["fleet_sustained"]), default=0)
    if low == 0:
        served = int(0.8 * smallest_failed["fleet_attestations_per_s"] * plan.interval)
        size = min(served, int(high * 0.8))
        return size if size >= 1 else None
    if high / low <= 1.25:
        return None
    return int(math.sqrt(low * high))


def _phase(plan: FleetPlan, hosts: int, env: Sandbox, generators: Generators,
           backends) -> dict:
    """``hosts`` hosts attested for plan.duration while launches go on: their figures."""
    start = time.time() + 1.0
    end = start + plan.duration
    generators.start(start, end, hosts)
    sampler = StatusSampler(env, hosts, start + plan.interval + plan.timeout, end)
    sampler.start()
    time.sleep(max(0.0, start - time.time()))
    cpu_before, machine_before = cpu_snapshot(env, generators, backends), _machine_busy_s()
    load_launches = paced_launches(env, None, plan.launch_every, until=end)
    time.sleep(max(0.0, end - time.time()))
    cpu_after, machine_after = cpu_snapshot(env, generators, backends), _machine_busy_s()
    outcomes = generators.receive(timeout=plan.timeout + 120)
    sampler.join(60)
    results = [r for o in outcomes for r in o["results"]]
    lags = [lag for o in outcomes for lag in o["start_lag_ms"]]
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    figures = summarise(plan, hosts, (start, end), results, lags,
                        sum(o["peak_in_flight"] for o in outcomes), cpu,
                        machine_after - machine_before, sum(o["cpu_s"] for o in outcomes))
    figures.update({
        "fleet_launch_ms_p50": _ms(load_launches.ms, 50),
        "fleet_launch_ms_p95": _ms(load_launches.ms, 95),
        "fleet_launches": len(load_launches.ms),
        "fleet_launch_failures": dict(load_launches.failures),
        "fleet_ttp_view_worst_staleness_s": round(sampler.worst_s, 2),
        "fleet_ttp_view_samples": sampler.samples,
        "fleet_status_listing_ms_p50": _ms(sampler.listing_ms, 50),
        "fleet_load_average": [round(v, 2) for v in os.getloadavg()],
    })
    if sampler.errors:
        figures["fleet_status_errors"] = sampler.errors[:3]
    figures["fleet_sustained"] = figures["fleet_sustained"] and not load_launches.failures
    print(f"   phase: {hosts} hosts, {figures['fleet_attestations_per_s']}/s of "
          f"{figures['fleet_target_per_s']}/s, p95 {figures['fleet_round_ms_p95']} ms, "
          f"worst staleness {figures['fleet_worst_staleness_s']} s, sustained "
          f"{figures['fleet_sustained']}", flush=True)
    return figures


def notes(plan: FleetPlan, figures: dict) -> str:
    """How the figures were measured and, if the fleet was not sustained, what bounds it."""
    cores = figures["fleet_cpu_cores"]
    text = (f"{plan.hosts} software-TPM hosts (real firmware logs, 2 kinds; quotes as "
            f"TPMS_ATTEST/TPMT_SIGNATURE, P-256 software AKs enrolled through the TTP's own "
            f"enrollment API) attested every {plan.interval:g} s for {plan.duration:g} s by "
            f"{plan.processes} asyncio generator processes, each round a fresh TLS "
            "connection + challenge + attestation with the 41/30 KB event log, against "
            "trusted-launch-ttp with 2 workers x 4 threads on PostgreSQL; meanwhile one "
            f"trusted launch every {plan.launch_every:g} s on 2 swtpm hosts. Rate = accepted "
            "rounds/s after the first interval; staleness = largest gap between a host's "
            "successive TTP checked_at times (start and end of the run included); sustained "
            "= no failed round or launch and worst staleness <= interval + the 10 s client timeout "
            "(each host as HostMonitor runs it: the next round one interval after the last "
            "ended, so the rate is hosts / (interval + round time)). Cores used during "
            f"the run: {cores}; the whole "
            f"machine {figures['fleet_machine_cores_busy']} of {os.cpu_count()} (other "
            "processes shared it). CPU per round: TTP "
            f"{figures['fleet_ttp_cpu_ms_per_round']} ms, PostgreSQL "
            f"{figures['fleet_db_cpu_ms_per_round']} ms, generator "
            f"{figures['fleet_generator_cpu_ms_per_round']} ms; "
            "fleet_max_hosts_cpu_bound = cores / that sum x interval (generator on the same "
            "cores), *_ttp_only without the generator's share. " + KEYLIME_NOTE + ".")
    if not figures["fleet_sustained"]:
        text += (f" NOT sustained at {figures['fleet_hosts']} hosts: failures "
                 f"{figures['fleet_failures']}, worst staleness "
                 f"{figures['fleet_worst_staleness_s']} s, rate "
                 f"{figures['fleet_attestations_per_s']}/s of "
                 f"{figures['fleet_target_per_s']}/s needed; at the measured CPU per round "
                 f"these {os.cpu_count()} cores sustain about "
                 f"{figures['fleet_max_hosts_cpu_bound']} hosts at {plan.interval:g} s; "
                 f"smaller fleets tried: {figures['fleet_phases'][1:]}; the largest "
                 f"sustained: {figures['fleet_max_sustained_hosts']}.")
    return text


def run(plan: FleetPlan | None = None) -> dict:
    plan = plan or FleetPlan.from_env()
    figures = run_fleet(plan)
    for name, value in figures.items():
        print(f"   {name:40s} {value}", flush=True)
    figures["notes"] = notes(plan, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    defaults = FleetPlan.from_env()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=defaults.hosts)
    parser.add_argument("--interval", type=float, default=defaults.interval,
                        help="seconds between a host's rounds")
    parser.add_argument("--duration", type=float, default=defaults.duration,
                        help="seconds of fleet load")
    parser.add_argument("--processes", type=int, default=defaults.processes,
                        help="load generator processes")
    parser.add_argument("--launch-every", type=float, default=defaults.launch_every,
                        help="seconds between trusted launches")
    parser.add_argument("--idle-launches", type=int, default=defaults.idle_launches,
                        help="launches measured with the fleet idle (the baseline)")
    parser.add_argument("--search-phases", type=int, default=defaults.search_phases,
                        help="runs in all: after a fleet that is not sustained, smaller ones")
    args = parser.parse_args(argv)
    plan = FleetPlan(hosts=args.hosts, interval=args.interval, duration=args.duration,
                     processes=args.processes, launch_every=args.launch_every,
                     idle_launches=args.idle_launches, search_phases=args.search_phases)
    figures = run(plan)
    print(figures["notes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
