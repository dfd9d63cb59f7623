"""Plain vs trusted launch through Nova's libvirt functional harness (for bench_protocol).

Not collected by the test suite: bench_protocol runs it with pytest in a
subprocess (``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``) and reads the JSON it
writes to ``$TRUSTED_LAUNCH_BENCH_OUT``. The harness is tests/nova's
TrustedComputeTestBase: real Nova API/conductor/scheduler/compute with
TrustedLibvirtDriver, a swtpm per host, the real TTP over HTTPS; libvirt is
Nova's fakelibvirt, so "plain" is Nova's own launch path without a guest boot
and the difference trusted - plain is the protocol time a launch gains.
Each launch is POST /servers until ACTIVE, polled every POLL_S; plain and
trusted launches alternate on the same host and each server is deleted
before the next. oslo.messaging's fake driver (the harness's RPC) polls its
queues every 50 ms, which would add ~25 ms per RPC hop to both paths; here it
polls every FAKE_RPC_POLL_S, closer to a real broker's latency.
"""

from __future__ import annotations

import json
import os
import time
import types

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

import nova.tests.functional  # noqa: F401 - before anything imports eventlet
from nova.tests.functional.api import client as api_client
from oslo_messaging._drivers import impl_fake

from tests.nova.test_trusted_compute import (  # noqa: F401 - pytest fixtures
    IMAGE_BYTES,
    TrustedComputeTestBase,
    _bind_trusted_env,
    swtpm_state_cache,
    trusted_env,
)

LAUNCHES = int(os.environ.get("TRUSTED_LAUNCH_BENCH_LAUNCHES", "50"))
WARMUP = 2
POLL_S = 0.005
TIMEOUT_S = 60.0
FAKE_RPC_POLL_S = 0.01

impl_fake.time = types.SimpleNamespace(
    time=time.time, sleep=lambda seconds: time.sleep(min(seconds, FAKE_RPC_POLL_S)))


class LaunchFailed(Exception):
    """One launch did not go ACTIVE (recorded, the benchmark goes on)."""


class NovaLaunchTimes(TrustedComputeTestBase):
    """One test: LAUNCHES plain and LAUNCHES trusted launches on host-a."""

    def test_launch_times(self) -> None:
        samples: dict[str, list[float]] = {"plain": [], "trusted": []}
        failures: list[str] = []
        for index in range(WARMUP + LAUNCHES):
            for kind in ("plain", "trusted"):
                token = self.env.make_token("high", IMAGE_BYTES)[0] if kind == "trusted" \
                    else None
                try:
                    elapsed = self._timed_launch(token)
                except LaunchFailed as exc:
                    failures.append(f"{kind}: {exc}")
                    continue
                if index >= WARMUP:
                    samples[kind].append(elapsed)
        with open(os.environ["TRUSTED_LAUNCH_BENCH_OUT"], "w") as out:
            json.dump({"samples": samples, "failures": failures}, out)

    def _timed_launch(self, token: str | None) -> float:
        server = self._build_server(image_uuid=self.image_id, networks="none")
        server["availability_zone"] = "nova:host-a"
        if token is not None:
            server["metadata"] = {"trusted_sp": "high", "trusted_token": token,
                                  "trusted_ttp": self.env.ttp_url}
        started = time.perf_counter()
        created = self.api.post_server({"server": server})
        status = self._poll(created["id"], lambda s: s is None or s["status"] != "BUILD")
        elapsed = (time.perf_counter() - started) * 1000
        if status is None:
            raise LaunchFailed("the server vanished while building")
        self.api.delete_server(created["id"])
        self._poll(created["id"], lambda s: s is None)
        if status["status"] != "ACTIVE":
            raise LaunchFailed(f"ended {status['status']}: "
                               f"{(status.get('fault') or {}).get('message', '')[:200]}")
        return elapsed

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
