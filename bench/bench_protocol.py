"""The host side of the protocol end to end: two swtpm hosts + the TTP over HTTPS.

Each launch is ``TrustedLaunchHost.release()`` (steps 5-12: warm bind key,
TPM2_Certify, POST /v1/attestations, ECDH_ZGen in the PolicyPCR session),
timed per step with StepTimer. Baselines measured in the same run: the TPM
work alone (Certify + decrypt, no TTP) and a plain HTTPS round trip to the
same TTP (GET /v1/keys on a keep-alive session). Between launches the pool is
refilled off the clock, as the driver's PoolRefiller does after each launch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import secrets
import statistics
import subprocess
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
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey  # noqa: E402

from trusted_launch.compute.launch import StepTimer, TrustedLaunchHost  # noqa: E402
from trusted_launch.compute.ttp_client import TTPClient  # noqa: E402
from trusted_launch.crypto.token import ImageDigest, LaunchToken, seal_token  # noqa: E402
from trusted_launch.sandbox.hosts import running_host  # noqa: E402
from trusted_launch.sandbox.pki import CertificateAuthority  # noqa: E402
from trusted_launch.sandbox.swtpm import StateCache  # noqa: E402
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp  # noqa: E402
from trusted_launch.tpm import BindKeyPool, TPMDevice, bindkeys  # noqa: E402

DATA = ROOT / "tests" / "data" / "eventlogs"
PROFILES_DIR = ROOT / "examples" / "profiles"
HOSTS = {"host-a": ("secureboot_binary_bios_measurements", "high"),
         "host-b": ("coreos_36_shielded_vm_no_secure_boot_eventlog", "low")}
LAUNCHES = 60
NOVA_LAUNCHES = int(os.environ.get("TRUSTED_LAUNCH_BENCH_NOVA_LAUNCHES", "50"))
NOVA_TIMEOUT_S = 1500
BASELINE_REPEAT = 50
BURST = 20
IMAGE = ImageDigest("sha512", bytes(range(64)))
# Published discrete-TPM latencies in ms (best, worst); every other command >= 3 ms.
DISCRETE_TPM_MS = {"certify": (17, 190), "ecdh_zgen": (64, 247), "rsa_decrypt": (50, 540),
                   "other": (3, 3)}


@dataclass
class Host:
    name: str
    profile: str
    device: TPMDevice
    pool: BindKeyPool
    runner: TrustedLaunchHost


@dataclass
class Sandbox:
    ttp: TTPServer
    hosts: dict[str, Host]
    ttp_key: tuple[str, X25519PublicKey]
    clients: list[TTPClient] = field(default_factory=list)

    def client(self) -> TTPClient:
        client = TTPClient(self.ttp.url, ca_file=str(self.ttp.ca_file), timeout=30,
                           connect_retries=0)
        self.clients.append(client)
        return client

    def token(self, profile: str) -> str:
        key_id, public = self.ttp_key
        token = LaunchToken(nonce=secrets.token_bytes(32), profile=profile, image_digest=IMAGE,
                            expires_at=int(time.time()) + 3600)
        return seal_token(token, public, key_id)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def _stats(samples: list[float]) -> dict:
    return {"p50": round(statistics.median(samples), 3), "p95": round(percentile(samples, 95), 3),
            "n": len(samples)}


@contextlib.contextmanager
def sandbox(tmp: pathlib.Path, *, database_url: str | None = None,
            workers: int = 2, host_names: tuple[str, ...] = tuple(HOSTS),
            more_ek_ca_files: tuple[pathlib.Path, ...] = ()) -> Iterator[Sandbox]:
    """The TTP over HTTPS with profiles installed and enrolled swtpm hosts.

    ``more_ek_ca_files``: EK CAs the TTP trusts besides the swtpm local CA.
    """
    states = StateCache(tmp / "tpm-states")
    states.state(0)
    with contextlib.ExitStack() as stack:
        ttp = stack.enter_context(start_ttp(
            tmp / "ttp", tls_ca=CertificateAuthority(tmp / "tls-ca"),
            ek_ca_files=[*states.ca.ek_ca_certs, *more_ek_ca_files],
            database_url=database_url, workers=workers, profiles_dir=PROFILES_DIR))
        hosts = {name: stack.enter_context(_host(name, index, states, ttp))
                 for index, name in enumerate(host_names)}
        yield Sandbox(ttp, hosts, _ttp_key(ttp))


def _ttp_key(ttp: TTPServer) -> tuple[str, X25519PublicKey]:
    entry = ttp.request("GET", "/v1/keys").json()["keys"][0]
    raw = base64.urlsafe_b64decode(entry["public_key"] + "=" * (-len(entry["public_key"]) % 4))
    return entry["id"], X25519PublicKey.from_public_bytes(raw)


@contextlib.contextmanager
def _host(name: str, index: int, states: StateCache, ttp: TTPServer) -> Iterator[Host]:
    log_name, profile = HOSTS[name]
    with running_host(name, states.state(index), states.ca, DATA / log_name, ttp,
                      pool_size=BURST + 4) as host:
        yield Host(name, profile, host.device, host.pool, host.runner)


def _launch(host: Host, client: TTPClient, token: str) -> tuple[float, dict, list[str]]:
    """One release(): (ms, per-step ms, TPM commands sent)."""
    timer = StepTimer()
    host.device.command_log.clear()
    started = time.perf_counter()
    host.runner.release(client, token=token, launch_id=str(uuid.uuid4()), timer=timer)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, dict(timer.steps), list(host.device.command_log)


def sequential_launches(env: Sandbox, count: int) -> dict:
    """``count`` launches alternating between the hosts, pool refilled off the clock."""
    clients = {name: env.client() for name in env.hosts}
    hosts = list(env.hosts.values())
    for host in hosts:  # warm-up: TLS session and first-use caches
        _launch(host, clients[host.name], env.token(host.profile))
        host.pool.fill()
    totals, steps, commands = [], {}, []
    for index in range(count):
        host = hosts[index % len(hosts)]
        token = env.token(host.profile)
        elapsed, step_ms, sent = _launch(host, clients[host.name], token)
        host.pool.fill()
        totals.append(elapsed)
        commands.append(len(sent))
        for name, value in step_ms.items():
            steps.setdefault(name, []).append(value)
    return {"total": _stats(totals),
            "steps": {name: _stats(values) for name, values in steps.items()},
            "commands": commands, "command_names": sent}


def bare_tpm_path(host: Host, *, preload: bool) -> tuple[dict, int]:
    """Certify + ECDH_ZGen alone (no TTP): (ms stats, commands), warm or fallback key."""
    samples, count = [], 0
    for _ in range(BASELINE_REPEAT):
        host.pool.fill()
        key = host.pool.acquire()
        if not preload:
            bindkeys.release(host.device, key)  # as if another launch took the slot
        point = _point()
        host.device.command_log.clear()
        started = time.perf_counter()
        bindkeys.certify(host.device, key, secrets.token_bytes(32))
        bindkeys.ecdh_zgen(host.device, key, point)
        samples.append((time.perf_counter() - started) * 1000)
        count = len(host.device.command_log)
    host.pool.fill()
    return _stats(samples), count


def _point() -> tuple[bytes, bytes]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


def https_round_trip(ttp: TTPServer) -> dict:
    """GET /v1/keys on one keep-alive TLS session."""
    verify = str(ttp.ca_file)
    with requests.Session() as session:
        session.get(ttp.url + "/v1/keys", timeout=10, verify=verify).raise_for_status()
        samples = []
        for _ in range(BASELINE_REPEAT):
            started = time.perf_counter()
            session.get(ttp.url + "/v1/keys", timeout=10, verify=verify).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return _stats(samples)


def burst(env: Sandbox, host: Host, *, concurrent: bool) -> tuple[bool, float, list[str]]:
    """BURST launches on one host/TPM: all succeeded?, wall seconds, failures.

    A refiller thread tops the pool up after each launch, as the driver does.
    """
    host.pool.fill()
    tokens = [env.token(host.profile) for _ in range(BURST)]
    clients = [env.client() for _ in range(BURST)]  # one TLS connection per launch, both ways
    failures: list[str] = []
    refiller = _Refiller(host.pool)

    def one(index: int) -> None:
        try:
            host.runner.release(clients[index % len(clients)], token=tokens[index],
                                launch_id=str(uuid.uuid4()))
        except Exception as exc:  # a failed launch is counted, not raised
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            refiller.request()

    started = time.perf_counter()
    with refiller:
        if concurrent:
            _run_threads(one, BURST)
        else:
            for index in range(BURST):
                one(index)
        elapsed = time.perf_counter() - started
    return not failures, elapsed, failures


def _run_threads(func: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=func, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _Refiller:
    """The driver's PoolRefiller in miniature: fill() on request in a daemon thread."""

    def __init__(self, pool: BindKeyPool) -> None:
        self._pool = pool
        self._wanted = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def request(self) -> None:
        self._wanted.set()

    def __enter__(self) -> _Refiller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            self._pool.fill()


def discrete_tpm_estimate() -> dict:
    """Launch-path TPM time on a discrete TPM from published per-command latencies (ms)."""
    estimate = {}
    for key_alg, use in (("ecc", "ecdh_zgen"), ("rsa", "rsa_decrypt")):
        for case, pick in (("best", 0), ("worst", 1)):
            other = DISCRETE_TPM_MS["other"][pick]
            warm = DISCRETE_TPM_MS["certify"][pick] + DISCRETE_TPM_MS[use][pick] + 2 * other
            estimate[f"{key_alg}_{case}_ms"] = warm  # Certify, PolicyPCR, use, Flush
            estimate[f"{key_alg}_{case}_before_ms"] = warm + 3 * other  # + Load, Flush, Load
    return estimate


def nova_launch_times(tmp: pathlib.Path) -> tuple[dict | None, str]:
    """Plain, plain+config drive and trusted launches in tests/nova's harness.

    Per kind (bench/nova_launch.py's KINDS): p50/p95/n of the launch times and
    the p50 of each timed driver phase; "paired": p50/p95 of the per-round
    differences trusted - plain_config_drive and plain_config_drive - plain;
    "load_average" at the end of the run.
    """
    if NOVA_LAUNCHES <= 0:
        return None, "Nova launch comparison skipped (TRUSTED_LAUNCH_BENCH_NOVA_LAUNCHES=0)"
    out = tmp / "nova-launch.json"
    env = dict(os.environ, OS_NOVA_DISABLE_EVENTLET_PATCHING="1",
               TRUSTED_LAUNCH_BENCH_OUT=str(out),
               TRUSTED_LAUNCH_BENCH_LAUNCHES=str(NOVA_LAUNCHES))
    command = [sys.executable, "-m", "pytest", str(ROOT / "bench" / "nova_launch.py"), "-q",
               "-x", "-p", "no:cacheprovider", f"--timeout={NOVA_TIMEOUT_S}"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=NOVA_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"Nova launch comparison timed out after {NOVA_TIMEOUT_S} s"
    if result.returncode != 0 or not out.exists():
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return None, f"Nova launch comparison failed: {' / '.join(tail)}"
    outcome = json.loads(out.read_text())
    failures = outcome["failures"]
    problem = (f"{len(failures)} Nova launch(es) failed, e.g. {failures[0]}" if failures
               else "")
    if min(len(v) for v in outcome["samples"].values()) == 0:
        return None, problem or "no Nova launch succeeded"
    figures: dict = {kind: _stats(values) for kind, values in outcome["samples"].items()}
    for kind, phases in outcome["phases"].items():
        figures[kind]["phases_ms_p50"] = {
            phase: round(statistics.median(values), 1) for phase, values in phases.items()}
    figures["paired"] = {
        name: _stats([r[high] - r[low] for r in outcome["rounds"] if high in r and low in r])
        for name, high, low in (("trusted_vs_config_drive", "trusted", "plain_config_drive"),
                                ("config_drive_vs_plain", "plain_config_drive", "plain"))}
    figures["load_average"] = [round(v, 2) for v in outcome["load_average"]]
    return figures, problem


def _added(nova: dict | None, kind: str, baseline: str, q: str) -> float | None:
    """Launch time ``kind`` - ``baseline`` at percentile ``q`` ("p50"/"p95"), ms."""
    return round(nova[kind][q] - nova[baseline][q], 1) if nova else None


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-protocol-") as tmp, \
            sandbox(pathlib.Path(tmp)) as env:
        launches = sequential_launches(env, LAUNCHES)
        host_a = env.hosts["host-a"]
        tpm_warm, warm_commands = bare_tpm_path(host_a, preload=True)
        tpm_fallback, fallback_commands = bare_tpm_path(host_a, preload=False)
        https = https_round_trip(env.ttp)
        sequential_ok, sequential_s, _ = burst(env, host_a, concurrent=False)
        concurrent_ok, concurrent_s, failures = burst(env, host_a, concurrent=True)
    with tempfile.TemporaryDirectory(prefix="bench-nova-") as tmp:
        nova, nova_problem = nova_launch_times(pathlib.Path(tmp))
    estimate = discrete_tpm_estimate()
    commands = launches["commands"]
    figures = {
        "launch_added_ms_p50": launches["total"]["p50"],
        "launch_added_ms_p95": launches["total"]["p95"],
        "plain_launch_ms_p50": nova["plain"]["p50"] if nova else None,
        "plain_launch_ms_p95": nova["plain"]["p95"] if nova else None,
        "trusted_launch_ms_p50": nova["trusted"]["p50"] if nova else None,
        "trusted_launch_ms_p95": nova["trusted"]["p95"] if nova else None,
        "plain_config_drive_launch_ms_p50": nova["plain_config_drive"]["p50"] if nova else None,
        "plain_config_drive_launch_ms_p95": nova["plain_config_drive"]["p95"] if nova else None,
        "nova_launch_added_ms_p50": _added(nova, "trusted", "plain", "p50"),
        "nova_launch_added_ms_p95": _added(nova, "trusted", "plain", "p95"),
        "nova_launch_added_vs_config_drive_ms_p50": _added(nova, "trusted",
                                                           "plain_config_drive", "p50"),
        "nova_launch_added_vs_config_drive_ms_p95": _added(nova, "trusted",
                                                           "plain_config_drive", "p95"),
        "nova_launch_added_vs_config_drive_paired_ms_p50": (
            nova["paired"]["trusted_vs_config_drive"]["p50"] if nova else None),
        "nova_config_drive_added_ms_p50": _added(nova, "plain_config_drive", "plain", "p50"),
        "nova_phases_ms_p50": ({kind: nova[kind]["phases_ms_p50"] for kind in
                                ("plain", "plain_config_drive", "trusted")} if nova else None),
        "nova_load_average": nova["load_average"] if nova else None,
        "nova_launches_each": nova["plain"]["n"] if nova else 0,
        "launch_steps_ms": launches["steps"],
        "launches": launches["total"]["n"],
        "tpm_commands_per_launch": max(commands),
        "tpm_commands_per_launch_min": min(commands),
        "tpm_commands_launch_path": " + ".join(launches["command_names"]),
        "baseline_tpm_only_ms_p50": tpm_warm["p50"],
        "baseline_tpm_only_ms_p95": tpm_warm["p95"],
        "baseline_tpm_only_commands": warm_commands,
        "tpm_only_fallback_ms_p50": tpm_fallback["p50"],
        "tpm_only_fallback_commands": fallback_commands,
        "baseline_https_round_trip_ms_p50": https["p50"],
        "baseline_https_round_trip_ms_p95": https["p95"],
        "concurrent_20_ok": concurrent_ok and sequential_ok,
        "concurrent_20_s": round(concurrent_s, 3),
        "sequential_20_s": round(sequential_s, 3),
        "discrete_tpm_estimate_ms": estimate,
        "notes": ("launch_added_ms = host-side protocol time per launch (release(): warm bind "
                  "key, Certify, POST /v1/attestations to a 2-worker TTP on SQLite, ECDH_ZGen), "
                  f"{LAUNCHES} launches alternating over 2 swtpm hosts. "
                  + ("plain/plain_config_drive/trusted_launch_ms: POST /servers to the "
                     "compute manager's commit of ACTIVE in tests/nova's harness (real Nova "
                     "services in one process, fakelibvirt, fake RPC polled every 10 ms), "
                     f"{nova['plain']['n']} launches of each kind, alternating on one host "
                     f"(load average at the end {nova['load_average']} on "
                     f"{os.cpu_count()} cores). A trusted launch always builds a config "
                     "drive (N goes there): nova_launch_added_vs_config_drive_ms_* compares "
                     "it with a plain launch with config_drive=True (like for like), "
                     "nova_config_drive_added_ms_p50 is Nova's own config drive cost "
                     "(metadata + genisoimage), nova_launch_added_ms_* is trusted - plain "
                     "(no drive); nova_phases_ms_p50 = driver phases per kind; all share "
                     "the CPU with Nova's threads, so launch_added_ms stays the host-side "
                     f"measurement. {nova_problem} " if nova
                     else f"plain_launch_ms_p50 null: {nova_problem}. ")
                  + "swtpm is 10-100x faster than a discrete TPM: see discrete_tpm_estimate_ms "
                  "(Certify=ECDSA sign, ECDH 64-247 ms, RSA decrypt 50-540 ms, >=3 ms other "
                  "commands; *_before_ms = the 7-command path before the resident-key change)."
                  + (f" burst failures: {failures[:3]}" if failures else "")),
    }
    _print(figures)
    return figures


def _print(figures: dict) -> None:
    for name, value in figures.items():
        if name != "notes":
            print(f"   {name:40s} {value}")


if __name__ == "__main__":
    run()
