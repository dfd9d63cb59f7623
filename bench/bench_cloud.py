"""Launch times on the real cloud: plain, plain with a config drive, trusted (issue 12).

Runs against the cloud ``tools/run-cloud.sh`` started (its scenario target,
:class:`trusted_launch.sandbox.cloud.scenarios.CloudTarget`; skipped when
there is none). The three kinds alternate (plain, plain with a config drive,
trusted, plain, ...), so the machine's load hits every kind alike; with
``--concurrency K`` up to K of that sequence run at once (default 1: one at a
time, each deleted before the next). The trusted kind is launched as the
scenarios launch one: a token from ``openstack trusted token create --sp high``
(:meth:`Scenarios.token`), then the server with ``trusted_sp``/``trusted_ttp``/
``trusted_token`` and a config drive. Per launch, from the create call
(openstacksdk, as the tenant):

* ``active_ms``: until the API shows ACTIVE (polled every POLL_S);
* ``agent_started_ms``: until the guest's console log (the API behind
  ``openstack console log show``) shows the line the image's status service
  prints once the guest agent's stage of boot is reached (any kind: network
  independent);
* ``answer_ms``: until the guest answers over the tenant network from the
  tenant namespace (:mod:`bench.cloud_probe`): the real challenge with N for
  the trusted kind, the agent's port (accepted or refused by the guest) for
  plain kinds; ``None`` with ``answer_note`` "no address" when the guest did
  not answer within ``--answer-grace`` seconds after its agent stage;
* from the nova-compute log: when the compute claimed it, Nova's own build and
  spawn seconds, and the driver's "trusted launch checks passed in X ms
  (steps)" line: the protocol's share inside ``spawn``.

``python bench/bench_cloud.py --launches 10 [--concurrency 1] [--json FILE]``
runs it alone; ``tox -e bench`` runs it with the others
(``--cloud-launches``, ``--cloud-concurrency``, ``--cloud-warmup``, or the
TRUSTED_LAUNCH_BENCH_CLOUD_LAUNCHES/_CONCURRENCY/_WARMUP variables). See
doc/real-cloud.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

if __package__ in (None, ""):  # run as a script: bench/ is not a package then
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.cloud_figures import (
    KINDS,
    add_log_figures,
    hypervisor_name,
    load_summary,
    parse_compute_log,
    summarize,
    text_report,
)
from trusted_launch.demo.report import Recorder
from trusted_launch.sandbox.cloud.layout import REPO
from trusted_launch.sandbox.cloud.scenarios import (
    AGENT_PORT,
    HOST_ATTR,
    Clients,
    CloudTarget,
    Scenarios,
    cloud_target,
)

LAUNCHES = int(os.environ.get("TRUSTED_LAUNCH_BENCH_CLOUD_LAUNCHES", "10"))
CONCURRENCY = int(os.environ.get("TRUSTED_LAUNCH_BENCH_CLOUD_CONCURRENCY", "1"))
WARMUP = int(os.environ.get("TRUSTED_LAUNCH_BENCH_CLOUD_WARMUP", "0"))
POLL_S = 0.2
CONSOLE_POLL_S = 1.0
ACTIVE_TIMEOUT_S = 900
AGENT_TIMEOUT_S = 900
ANSWER_GRACE_S = 60.0
PROBE = pathlib.Path(__file__).resolve().parent / "cloud_probe.py"
# The image's status service (after the agent's service) prints one of these: its status
# (trusted), or why there is none (plain: no launch nonce, or no config drive at all).
AGENT_STAGE_MARKERS = ("trusted launch: this VM holds its launch nonce",
                       "trusted-launch-guest: error: cannot read")


def _target() -> CloudTarget | None:
    """$TRUSTED_LAUNCH_CLOUD_TARGET (a JSON file), else the cloud run-cloud.sh keeps in .cloud."""
    if os.environ.get("TRUSTED_LAUNCH_CLOUD_TARGET"):
        return CloudTarget.from_file(os.environ["TRUSTED_LAUNCH_CLOUD_TARGET"])
    if not (REPO / ".cloud" / "state.json").is_file():
        return None
    return cloud_target(REPO / ".cloud",
                        pathlib.Path(os.environ.get("TL_CLOUD_VENV", REPO / ".cloud-venv")))


class CloudBench:
    """Timed launches of each kind on one cloud, as its demo tenant."""

    def __init__(self, target: CloudTarget, answer_grace_s: float = ANSWER_GRACE_S,
                 stop_at: float | None = None) -> None:
        """``stop_at``: time.monotonic() after which no launch starts (a time budget)."""
        import openstack

        self.target = target
        self.answer_grace_s = answer_grace_s
        self.stop_at = stop_at
        self.clients = Clients(target)
        self.scenarios = Scenarios(target, Recorder())
        os.environ["OS_CLIENT_CONFIG_FILE"] = target.clouds_yaml
        self._openstack = openstack
        self._local = threading.local()
        tenant = self._tenant()
        self.image = tenant.image.find_image(target.image, ignore_missing=False)
        self.flavor = tenant.compute.find_flavor(target.flavor, ignore_missing=False)
        self.network = tenant.network.find_network(target.network, ignore_missing=False)

    def _tenant(self):
        """The demo tenant's openstacksdk connection (one per thread)."""
        if getattr(self._local, "tenant", None) is None:
            self._local.tenant = self._openstack.connect(cloud=self.target.demo_cloud)
        return self._local.tenant

    def launch(self, kind: str, label: str, guest: bool = True) -> dict:
        """One launch of ``kind``, timed (to ACTIVE only unless ``guest``: then also the
        guest's agent and answer), then deleted; failures are a sample too."""
        if self.stop_at is not None and time.monotonic() > self.stop_at:
            return {"kind": kind, "not_run": "the time budget (--max-minutes) was spent"}
        metadata, nonce_file = {}, None
        if kind == "trusted":
            token = self.scenarios.token("high")  # openstack trusted token create, as scenarios
            metadata = {"trusted_sp": token["profile"], "trusted_ttp": token["ttp"],
                        "trusted_token": token["token"]}
            nonce_file = token["nonce_file"]
        attributes = {"name": f"tl-bench-{label}", "image_id": self.image.id,
                      "flavor_id": self.flavor.id, "networks": [{"uuid": self.network.id}],
                      "config_drive": kind != "plain", "metadata": metadata}
        load = os.getloadavg()[0]
        compute = self._tenant().compute
        created_at, started = time.time(), time.perf_counter()
        server = compute.create_server(**attributes)
        sample = {"kind": kind, "id": server.id, "created_at": created_at, "load_1m": [load],
                  "guest": guest}
        try:
            self._timed(sample, server, started, nonce_file if guest else None, guest)
        except Exception as exc:  # reported with the sample; the run goes on
            sample["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            sample["load_1m"].append(os.getloadavg()[0])
            try:
                nonce_file and pathlib.Path(nonce_file).unlink(missing_ok=True)
                compute.delete_server(server)
                compute.wait_for_delete(server, wait=ACTIVE_TIMEOUT_S)
            except Exception as exc:
                sample["cleanup_error"] = f"{type(exc).__name__}: {exc}"
        return sample

    def _timed(self, sample: dict, server, started: float, nonce_file: str | None,
               guest: bool = True) -> None:
        compute = self._tenant().compute
        deadline = started + ACTIVE_TIMEOUT_S
        while (server := compute.get_server(server.id)).status != "ACTIVE":
            if server.status == "ERROR" or time.perf_counter() > deadline:
                raise RuntimeError(f"ended {server.status}: {server.fault}")
            time.sleep(POLL_S)
        sample["active_ms"] = _ms_since(started)
        sample["host"] = self.clients.show(server.id).get(HOST_ATTR)  # admin-only attribute
        if not guest:
            return
        address = _ipv4(server, self.target.network)
        probe = self._probe(address, server.id, nonce_file) if address else None
        self._wait_for_agent_stage(sample, server, started)
        if "agent_started_ms" in sample:
            sample["boot_ms"] = sample["agent_started_ms"] - sample["active_ms"]
        if probe is None:
            sample["answer_ms"], sample["answer_note"] = None, "no address in the API"
            return
        answer = self._answer(probe, started)
        sample["answer_ms"] = (None if answer["at"] is None
                               else (answer["at"] - sample["created_at"]) * 1000)
        sample["answer_note"] = answer["how"] if answer["at"] is not None else (
            f"no address: the guest did not answer at {address} within "
            f"{self.answer_grace_s:.0f} s of its agent stage ({answer['how']})")

    def _wait_for_agent_stage(self, sample: dict, server, started: float) -> None:
        deadline = time.perf_counter() + AGENT_TIMEOUT_S
        while time.perf_counter() < deadline:
            console = self._console(server)
            if any(marker in console for marker in AGENT_STAGE_MARKERS):
                sample["agent_started_ms"] = _ms_since(started)
                sample["agent_line"] = next(m for m in AGENT_STAGE_MARKERS if m in console)
                return
            time.sleep(CONSOLE_POLL_S)
        sample["agent_note"] = f"no agent line on the console within {AGENT_TIMEOUT_S} s"

    def _console(self, server) -> str:
        try:
            return self._tenant().compute.get_server_console_output(server)["output"]
        except Exception:  # the console log may not exist yet
            return ""

    def _probe(self, address: str, server_id: str, nonce_file: str | None
               ) -> subprocess.Popen:
        """``bench/cloud_probe.py`` inside the tenant namespace (answers until a deadline)."""
        deadline = str(time.time() + AGENT_TIMEOUT_S + self.answer_grace_s)
        arguments = (["challenge", f"{address}:{AGENT_PORT}", server_id, nonce_file, deadline]
                     if nonce_file else ["port", address, str(AGENT_PORT), deadline])
        return subprocess.Popen(
            ["ip", "netns", "exec", self.target.namespace, sys.executable, str(PROBE),
             *arguments], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    def _answer(self, probe: subprocess.Popen, started: float) -> dict:
        """The probe's result, waiting at most ``answer_grace_s`` from now (the agent stage)."""
        try:
            output, _ = probe.communicate(timeout=self.answer_grace_s)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            return {"at": None, "how": "probe stopped"}
        try:
            return json.loads(output)
        except ValueError:
            return {"at": None, "how": f"probe failed (exit {probe.returncode})"}


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _ipv4(server, network: str) -> str | None:
    for entry in (server.addresses or {}).get(network) or []:
        if entry.get("version") == 4 or ":" not in str(entry.get("addr", ":")):
            return entry.get("addr")
    return None


def interleaved(launches: int, warmup: int = 0, guest_launches: int | None = None
                ) -> list[tuple[str, str, bool]]:
    """(kind, label, whether the guest is measured too) in the order they start: plain,
    plain_config_drive, trusted, plain, ...; the guest for the first ``guest_launches``
    counted rounds (all if None)."""
    order = []
    for index in range(-warmup, launches):
        guest = guest_launches is None or 0 <= index < guest_launches
        for kind in KINDS:
            order.append((kind, f"{kind}-{'warmup' if index < 0 else index}-{index + warmup}",
                          guest))
    return order


def run_launches(bench: CloudBench, launches: int, concurrency: int = 1, warmup: int = 0,
                 samples_file: str | None = None, guest_launches: int | None = None
                 ) -> list[dict]:
    """Every launch's sample (label set), in the order they ended; each also appended to
    ``samples_file`` (JSON lines) as it ends, so a run cut short keeps what it measured."""
    ended: list[dict] = []
    with concurrent.futures.ThreadPoolExecutor(max(1, concurrency)) as pool:
        futures = {}
        for kind, label, guest in interleaved(launches, warmup, guest_launches):
            futures[pool.submit(bench.launch, kind, label, guest)] = label
            if concurrency > 1:
                time.sleep(0.5)  # creates in order, still close together
        for future in concurrent.futures.as_completed(futures):
            sample = {**future.result(), "label": futures[future]}
            ended.append(sample)
            if "not_run" in sample:
                continue
            print(f"   {sample['label']}: " + ", ".join(
                f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in sample.items()
                if k in ("active_ms", "agent_started_ms", "answer_ms", "answer_note",
                         "host", "error")), flush=True)
            if samples_file:
                with open(samples_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(sample) + "\n")
    return ended


@contextlib.contextmanager
def only_high_host(bench: CloudBench) -> Iterator[None]:
    """Every kind on the high host: the low host's nova-compute is disabled meanwhile."""
    service = ("compute", "service", "set")
    low = bench.target.low_host
    bench.clients.openstack(*service, "--disable", "--disable-reason",
                            "bench_cloud --one-host", low, "nova-compute",
                            admin=True, output=False)
    try:
        yield
    finally:
        bench.clients.openstack(*service, "--enable", low, "nova-compute",
                                admin=True, output=False)


def split_samples(ended: list[dict]) -> tuple[dict[str, list[dict]], list[dict], int]:
    """(measured samples per kind, warm-ups and failures left out; the failed launches;
    how many launches the time budget left unstarted)."""
    samples: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    failed, not_run = [], 0
    for sample in ended:
        if "not_run" in sample:
            not_run += 1
        elif "error" in sample:
            failed.append(sample)
        elif "warmup" not in sample.get("label", ""):
            samples[sample["kind"]].append(sample)
    return samples, failed, not_run


def _compute_logs(target: CloudTarget, ids: list[str]) -> dict:
    text = "".join(pathlib.Path(path).read_text(errors="replace")
                   for path in target.compute_logs.values() if pathlib.Path(path).is_file())
    return parse_compute_log(text, ids)


def _virt_type_reason(report_file: str | None) -> str:
    """Why run-cloud.sh chose the virt type, from its --json report (if given)."""
    if not report_file:
        return ""
    try:
        return json.loads(pathlib.Path(report_file).read_text()).get("virt_type_reason", "")
    except (OSError, ValueError, AttributeError):
        return ""


def run(launches: int = LAUNCHES, concurrency: int = CONCURRENCY, warmup: int = WARMUP,
        answer_grace_s: float = ANSWER_GRACE_S, cloud_report: str | None = None,
        max_minutes: float | None = None, samples_file: str | None = None,
        from_samples: str | None = None, guest_launches: int | None = None,
        one_host: bool = False) -> dict:
    """Launch and measure (or, with ``from_samples``, report a saved run's samples)."""
    target = _target()
    if target is None:
        return {"skipped": "no cloud: start it with tools/run-cloud.sh (or name one with "
                           "TRUSTED_LAUNCH_CLOUD_TARGET)"}
    started = time.time()
    if from_samples:
        ended = [json.loads(line) for line in
                 pathlib.Path(from_samples).read_text(encoding="utf-8").splitlines() if line]
    else:
        stop_at = None if max_minutes is None else time.monotonic() + max_minutes * 60
        bench = CloudBench(target, answer_grace_s, stop_at)
        with only_high_host(bench) if one_host else contextlib.nullcontext():
            ended = run_launches(bench, launches, concurrency, warmup, samples_file,
                                 guest_launches)
    samples, failed, not_run = split_samples(ended)
    logs = _compute_logs(target, [s["id"] for kind in samples.values() for s in kind])
    for kind_samples in samples.values():
        for sample in kind_samples:
            add_log_figures(sample, logs.get(sample["id"]))
    loads = [load for sample in ended for load in sample.get("load_1m", [])]
    figures = {"cloud_launches_per_kind": launches, "cloud_concurrency": concurrency,
               "cloud_warmup_rounds": warmup, "cloud_virt_type": target.virt_type or "unknown",
               "cloud_hypervisor": hypervisor_name(target.virt_type),
               "cloud_virt_type_reason": _virt_type_reason(cloud_report),
               "cloud_cpus": os.cpu_count(), "cloud_one_host": one_host,
               "cloud_run_s": None if from_samples else round(time.time() - started),
               "cloud_not_run_launches": not_run,
               "cloud_failed_launches": [{k: s.get(k) for k in ("label", "id", "error")}
                                         for s in failed],
               **load_summary(loads), **summarize(samples)}
    print(text_report(figures), flush=True)
    figures["cloud_samples"] = samples
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=LAUNCHES,
                        help=f"launches of each kind (default {LAUNCHES})")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="launches in flight at once, in the interleaved order (default 1: "
                             "one at a time; more shortens the run and adds load)")
    parser.add_argument("--warmup", type=int, default=WARMUP,
                        help="rounds (one launch of each kind) first, left out of the figures "
                             "(the first launch on a host downloads and digests the image)")
    parser.add_argument("--answer-grace", type=float, default=ANSWER_GRACE_S,
                        help="seconds after the guest's agent stage to wait for its answer "
                             f"before reporting 'no address' (default {ANSWER_GRACE_S:.0f})")
    parser.add_argument("--cloud-report", metavar="FILE",
                        help="run-cloud.sh --json output, for why it chose KVM or TCG")
    parser.add_argument("--guest-launches", type=int, metavar="G",
                        help="measure the guest (agent started, answer) in the first G "
                             "rounds only, the others to ACTIVE only (default: every "
                             "launch; a loaded TCG machine boots guests for many minutes)")
    parser.add_argument("--max-minutes", type=float, metavar="M",
                        help="start no launch after M minutes; report those that ran")
    parser.add_argument("--samples", metavar="FILE",
                        help="append each launch's sample to FILE (JSON lines) as it ends")
    parser.add_argument("--from-samples", metavar="FILE",
                        help="launch nothing: report the samples a run saved with --samples "
                             "(with the same cloud's compute logs)")
    parser.add_argument("--one-host", action="store_true",
                        help="launch every kind on the high host (the low host's nova-compute "
                             "is disabled for the run): the kinds then share one compute")
    parser.add_argument("--json", metavar="FILE", help="also write the figures and every "
                                                       "sample to FILE")
    args = parser.parse_args(argv)
    figures = run(args.launches, args.concurrency, args.warmup, args.answer_grace,
                  args.cloud_report, args.max_minutes, args.samples, args.from_samples,
                  args.guest_launches, args.one_host)
    if "skipped" in figures:
        print(f"bench_cloud: skipped: {figures['skipped']}", file=sys.stderr)
        return 1
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
