"""Plain vs trusted launch through Nova's libvirt functional harness (for bench_protocol).

Not collected by the test suite: bench_protocol runs it with pytest in a
subprocess (``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``) and reads the JSON it
writes to ``$TRUSTED_LAUNCH_BENCH_OUT``. The harness is tests/nova's
TrustedComputeTestBase: real Nova API/conductor/scheduler/compute with
TrustedLibvirtDriver, a swtpm per host, the real TTP over HTTPS; libvirt is
Nova's fakelibvirt, so "plain" is Nova's own launch path without a guest boot.
A trusted launch always gets a config drive (the only place N goes), so a
third kind, "plain_config_drive" (a plain launch with ``config_drive: True``),
is the like-for-like baseline: trusted - plain_config_drive is the time the
protocol adds, plain_config_drive - plain is Nova's own config drive cost.
A launch's time runs from POST /servers to the compute manager's commit of
vm_state ACTIVE (the first moment GET /servers/{id} can show ACTIVE); the API
is polled every POLL_S to confirm it. Timing the commit instead of the first
ACTIVE poll keeps the API's own latency out of the figure: each GET runs
through the same process (and GIL) as the services and takes 20-100 ms here,
so polled times were quantised by that much and the polling slowed the
launch it watched. The three kinds alternate on the same host and each
server is deleted before the next. oslo.messaging's fake driver (the harness's RPC) polls its
queues every 50 ms, which would add ~25 ms per RPC hop to both paths; here it
polls every FAKE_RPC_POLL_S, closer to a real broker's latency.
"""

from __future__ import annotations

import json
import os
import time
import types

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

import fixtures
import nova.tests.functional  # noqa: F401 - before anything imports eventlet
from nova import objects
from nova.compute import vm_states
from nova.tests.functional.api import client as api_client
from oslo_messaging._drivers import impl_fake

from tests.nova.test_trusted_compute import (  # noqa: F401 - pytest fixtures
    IMAGE_BYTES,
    TrustedComputeTestBase,
    _bind_trusted_env,
    swtpm_state_cache,
    trusted_env,
)
from trusted_launch.compute.driver import TrustedLibvirtDriver

LAUNCHES = int(os.environ.get("TRUSTED_LAUNCH_BENCH_LAUNCHES", "50"))
WARMUP = 2
POLL_S = 0.02
TIMEOUT_S = 60.0
FAKE_RPC_POLL_S = 0.01

impl_fake.time = types.SimpleNamespace(
    time=time.time, sleep=lambda seconds: time.sleep(min(seconds, FAKE_RPC_POLL_S)))


class LaunchFailed(Exception):
    """One launch did not go ACTIVE (recorded, the benchmark goes on)."""


#: Launch kinds, measured in this order in every round.
KINDS = ("plain", "plain_config_drive", "trusted")
DRIVER_CLASS = "trusted_launch.compute.driver.TrustedLibvirtDriver"
#: Driver phases timed in every launch (ms): the whole spawn, the config drive
#: step (for "plain" only the device metadata Nova builds anyway), and the
#: protocol (steps 5-12 and the image digest check; trusted only). "protocol_*"
#: are the driver's own StepTimer steps.
PHASES = {"spawn": "spawn", "config_drive": "_create_configdrive",
          "protocol": "_run_trusted_launch"}


class NovaLaunchTimes(TrustedComputeTestBase):
    """One test: LAUNCHES launches of each of KINDS on host-a."""

    def setUp(self) -> None:
        super().setUp()
        self._active_at: dict[str, float] = {}
        self.useFixture(fixtures.MonkeyPatch("nova.objects.Instance.save",
                                             _recording_active(self._active_at)))
        self._phases: dict[str, float] = {}  # of the launch being timed
        for phase, method in PHASES.items():
            self.useFixture(fixtures.MonkeyPatch(
                f"{DRIVER_CLASS}.{method}", _timed(getattr(TrustedLibvirtDriver, method),
                                                   phase, self._phases)))
        self.useFixture(fixtures.MonkeyPatch(
            f"{DRIVER_CLASS}._release", _keeping_steps(TrustedLibvirtDriver._release,
                                                       self._phases)))

    def test_launch_times(self) -> None:
        samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
        phases: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
        rounds: list[dict[str, float]] = []  # one launch of each kind, back to back
        failures: list[str] = []
        for index in range(WARMUP + LAUNCHES):
            launched: dict[str, float] = {}
            for kind in KINDS:
                token = self.env.make_token("high", IMAGE_BYTES)[0] if kind == "trusted" \
                    else None
                try:
                    elapsed = self._timed_launch(token,
                                                 config_drive=kind == "plain_config_drive")
                except LaunchFailed as exc:
                    failures.append(f"{kind}: {exc}")
                    continue
                launched[kind] = elapsed
                if index >= WARMUP:
                    for phase, ms in self._phases.items():
                        phases[kind].setdefault(phase, []).append(ms)
            if index >= WARMUP:
                for kind, elapsed in launched.items():
                    samples[kind].append(elapsed)
                rounds.append(launched)
        with open(os.environ["TRUSTED_LAUNCH_BENCH_OUT"], "w") as out:
            json.dump({"samples": samples, "rounds": rounds, "phases": phases,
                       "failures": failures, "load_average": os.getloadavg()}, out)

    def _timed_launch(self, token: str | None, *, config_drive: bool = False) -> float:
        server = self._build_server(image_uuid=self.image_id, networks="none")
        server["availability_zone"] = "nova:host-a"
        if config_drive:
            server["config_drive"] = True
        if token is not None:
            server["metadata"] = {"trusted_sp": "high", "trusted_token": token,
                                  "trusted_ttp": self.env.ttp_url}
        self._phases.clear()
        started = time.perf_counter()
        created = self.api.post_server({"server": server})
        status = self._poll(created["id"], lambda s: s is None or s["status"] != "BUILD")
        active_at = self._active_at.pop(created["id"], None)
        if status is None:
            raise LaunchFailed("the server vanished while building")
        self.api.delete_server(created["id"])
        self._poll(created["id"], lambda s: s is None)
        if status["status"] != "ACTIVE":
            raise LaunchFailed(f"ended {status['status']}: "
                               f"{(status.get('fault') or {}).get('message', '')[:200]}")
        if active_at is None:
            raise LaunchFailed("ACTIVE without a recorded save of vm_state active")
        return (active_at - started) * 1000

    def _poll(self, server_id: str, done) -> dict | None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                server = self.api.get_server(server_id)
            except api_client.OpenStackApiNotFoundException:
                server = None
            if done(server):
                return server
            time.sleep(POLL_S)
        raise LaunchFailed(f"server {server_id} did not change state in {TIMEOUT_S} s")


def _recording_active(active_at: dict[str, float]):
    """``Instance.save`` that notes when an instance was first saved ACTIVE."""
    original = objects.Instance.save

    def save(instance, *args, **kwargs):
        result = original(instance, *args, **kwargs)
        if instance.obj_attr_is_set("vm_state") and instance.vm_state == vm_states.ACTIVE:
            active_at.setdefault(instance.uuid, time.perf_counter())
        return result

    return save


def _timed(method, phase: str, phases: dict[str, float]):
    """``method`` that adds its wall time (ms) to ``phases[phase]``."""

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + (time.perf_counter() - started) * 1000

    return timed


def _keeping_steps(release, phases: dict[str, float]):
    """The driver's ``_release`` that copies its StepTimer's steps to ``phases``."""

    def keeping(driver, instance, request, timer):
        try:
            return release(driver, instance, request, timer)
        finally:
            phases.update({f"protocol_{step}": ms for step, ms in timer.steps.items()})

    return keeping
