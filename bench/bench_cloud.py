"""Launch times on the real cloud: plain, plain with a config drive, trusted (issue 12).

Runs against the cloud ``tools/run-cloud.sh`` started (its scenario target
file, see :class:`trusted_launch.sandbox.cloud.scenarios.CloudTarget`; skipped
when there is none). The three kinds alternate, one launch at a time, on the
real guest image; each is deleted before the next. Per launch:

* ``active``: from the create call (openstacksdk, as a tenant) until the API
  shows ACTIVE, polled every POLL_S; Nova's own "Took X seconds to build
  instance" / "to spawn" from the compute log, where the log is known;
* ``ready``: until the guest's serial console (read through the API, as
  ``openstack console log show`` does) shows the line the image's status
  service prints once the agent stage of boot is reached (all kinds);
* ``answer`` (trusted): until ``trusted-launch verify`` run inside the tenant
  namespace gets the guest's proof of N;
* the protocol's own steps inside ``spawn``, from the driver's "trusted launch
  checks passed (...)" log line.

Targets: trusted minus plain-with-config-drive <= 100 ms p50 to ACTIVE, and
<= 2 % of the time until the guest answers. The rest of a launch is Nova's
scheduling, image copy and libvirt, and the guest's boot under the
hypervisor named in ``virt_type`` (TCG is ~10x slower than KVM).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

from trusted_launch.sandbox.cloud.layout import REPO
from trusted_launch.sandbox.cloud.scenarios import AGENT_PORT, Clients, CloudTarget, cloud_target

LAUNCHES = int(os.environ.get("TRUSTED_LAUNCH_BENCH_CLOUD_LAUNCHES", "10"))
KINDS = ("plain", "plain_config_drive", "trusted")
POLL_S = 0.1
CONSOLE_POLL_S = 0.5
TIMEOUT_S = 600
# The image's status service prints one of these once the agent stage of boot is reached:
# its status (trusted), or why there is none (no launch nonce, or no config drive at all).
READY_MARKERS = ("trusted launch: this VM holds its launch nonce",
                 "trusted-launch-guest: error: cannot read")
BUILD_RE = re.compile(r"\[instance: (?P<id>[0-9a-f-]{36})\] Took (?P<s>[0-9.]+) seconds to "
                      r"(?P<what>build instance|spawn the instance on the hypervisor)")
STEPS_RE = re.compile(r"\[instance: (?P<id>[0-9a-f-]{36})\] trusted launch checks passed "
                      r"\((?P<steps>[^)]*)\)")
ANSWER_PROBE = """
import sys, time
from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.nonce_store import load_nonce
address, server_id, nonce_file, deadline = sys.argv[1:5]
nonce = load_nonce(nonce_file)
while time.time() < float(deadline):
    try:
        verify_vm(address, server_id, nonce, timeout=2)
    except Exception:
        time.sleep(0.1)
        continue
    print(time.time())
    break
"""


def _target() -> CloudTarget | None:
    """$TRUSTED_LAUNCH_CLOUD_TARGET (a JSON file), else the cloud run-cloud.sh keeps in .cloud."""
    if os.environ.get("TRUSTED_LAUNCH_CLOUD_TARGET"):
        return CloudTarget.from_file(os.environ["TRUSTED_LAUNCH_CLOUD_TARGET"])
    if not (REPO / ".cloud" / "state.json").is_file():
        return None
    return cloud_target(REPO / ".cloud",
                        pathlib.Path(os.environ.get("TL_CLOUD_VENV", REPO / ".cloud-venv")))


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class CloudBench:
    """One tenant connection (openstacksdk) and the CLIs, for timed launches."""

    def __init__(self, target: CloudTarget) -> None:
        import openstack

        self.target = target
        self.clients = Clients(target)
        os.environ["OS_CLIENT_CONFIG_FILE"] = target.clouds_yaml
        self.tenant = openstack.connect(cloud=target.demo_cloud)
        self.image = self.tenant.image.find_image(target.image, ignore_missing=False)
        self.flavor = self.tenant.compute.find_flavor(target.flavor, ignore_missing=False)
        self.network = self.tenant.network.find_network(target.network, ignore_missing=False)

    def _metadata(self) -> tuple[dict, str]:
        token = self.clients.openstack(
            "trusted", "token", "create", "--ttp", self.target.ttp_url, "--sp", "high",
            "--ca-file", self.target.ttp_ca_file, "--image", self.target.image,
            "--nonce-dir", str(pathlib.Path(self.target.work_dir) / "nonces"))
        return ({"trusted_sp": token["profile"], "trusted_ttp": token["ttp"],
                 "trusted_token": token["token"]}, token["nonce_file"])

    def launch(self, kind: str, index: int) -> dict:
        metadata, nonce_file = self._metadata() if kind == "trusted" else ({}, None)
        attributes = {"name": f"tl-bench-{kind}-{index}", "image_id": self.image.id,
                      "flavor_id": self.flavor.id, "networks": [{"uuid": self.network.id}],
                      "config_drive": kind != "plain", "metadata": metadata}
        wall, started = time.time(), time.perf_counter()
        server = self.tenant.compute.create_server(**attributes)
        try:
            return self._timed(server, kind, wall, started, nonce_file)
        finally:
            self.tenant.compute.delete_server(server)
            self.tenant.compute.wait_for_delete(server, wait=TIMEOUT_S)

    def _timed(self, server, kind: str, wall: float, started: float,
               nonce_file: str | None) -> dict:
        deadline = time.perf_counter() + TIMEOUT_S
        while (server := self.tenant.compute.get_server(server.id)).status != "ACTIVE":
            if server.status == "ERROR" or time.perf_counter() > deadline:
                raise RuntimeError(f"{kind} launch {server.id} ended {server.status}: "
                                   f"{server.fault}")
            time.sleep(POLL_S)
        sample = {"id": server.id, "active_ms": (time.perf_counter() - started) * 1000}
        probe = None
        if nonce_file:
            address = self.clients.address(self.clients.show(server.id))
            probe = self._answer_probe(f"{address}:{AGENT_PORT}", server.id, nonce_file)
        while not any(marker in self._console(server) for marker in READY_MARKERS):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{kind} launch {server.id}: no ready line on the console")
            time.sleep(CONSOLE_POLL_S)
        sample["ready_ms"] = (time.perf_counter() - started) * 1000
        if probe is not None:
            output, _ = probe.communicate(timeout=TIMEOUT_S)
            if not output.strip():
                raise RuntimeError(f"trusted launch {server.id}: the guest never answered")
            sample["answer_ms"] = (float(output) - wall) * 1000
        return sample

    def _console(self, server) -> str:
        try:
            return self.tenant.compute.get_server_console_output(server, length=60)["output"]
        except Exception:  # the console log may not exist yet
            return ""

    def _answer_probe(self, address: str, server_id: str, nonce_file: str
                      ) -> subprocess.Popen:
        command = ["ip", "netns", "exec", self.target.namespace, sys.executable, "-c",
                   ANSWER_PROBE, address, server_id, nonce_file,
                   str(time.time() + TIMEOUT_S)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _compute_log_figures(target: CloudTarget, ids: dict[str, list[str]]) -> dict:
    """Nova's own build/spawn seconds and the protocol's steps, per kind, from the logs."""
    text = "".join(pathlib.Path(path).read_text(errors="replace")
                   for path in target.compute_logs.values() if pathlib.Path(path).is_file())
    build, spawn, protocol = {}, {}, {}
    for match in BUILD_RE.finditer(text):
        (build if match["what"] == "build instance" else spawn)[match["id"]] = float(match["s"])
    for match in STEPS_RE.finditer(text):
        protocol[match["id"]] = sum(float(part.rsplit(" ", 2)[-2])
                                    for part in match["steps"].split(", ") if part)
    figures: dict = {}
    for kind, kind_ids in ids.items():
        for name, values in (("build_s", build), ("spawn_s", spawn)):
            found = [values[i] for i in kind_ids if i in values]
            if found:
                figures[f"cloud_{kind}_{name}_p50"] = round(statistics.median(found), 3)
    found = [protocol[i] for i in ids.get("trusted", []) if i in protocol]
    if found:
        figures["cloud_protocol_in_spawn_ms_p50"] = round(statistics.median(found), 1)
        spawn_p50 = figures.get("cloud_trusted_spawn_s_p50")
        if spawn_p50:
            figures["cloud_protocol_share_of_spawn"] = round(
                statistics.median(found) / 1000 / spawn_p50, 4)
    return figures


def run() -> dict:
    target = _target()
    if target is None:
        return {"skipped": "no cloud: start it with tools/run-cloud.sh (or name one with "
                           "TRUSTED_LAUNCH_CLOUD_TARGET)"}
    bench = CloudBench(target)
    samples: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for index in range(LAUNCHES):
        for kind in KINDS:
            samples[kind].append(bench.launch(kind, index))
            print(f"   {kind} {index}: {samples[kind][-1]}", flush=True)
    figures: dict = {"cloud_launches_per_kind": LAUNCHES,
                     "cloud_virt_type": target.virt_type or "unknown"}
    for kind in KINDS:
        for what in ("active_ms", "ready_ms", "answer_ms"):
            values = [sample[what] for sample in samples[kind] if what in sample]
            for label, fraction in (("p50", 0.5), ("p95", 0.95)):
                value = _percentile(values, fraction)
                if value is not None:
                    figures[f"cloud_{kind}_{what.replace('_ms', '')}_ms_{label}"] = round(
                        value, 1)
    added = (figures["cloud_trusted_active_ms_p50"]
             - figures["cloud_plain_config_drive_active_ms_p50"])
    figures["cloud_trusted_added_active_ms_p50"] = round(added, 1)
    figures["cloud_trusted_added_share_of_answer"] = round(
        added / figures["cloud_trusted_answer_ms_p50"], 4)
    figures.update(_compute_log_figures(
        target, {kind: [s["id"] for s in samples[kind]] for kind in KINDS}))
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
