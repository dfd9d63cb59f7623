"""How fast the scheduler stops choosing a host that left its measured state.

A swtpm host booted from a real Secure Boot log is enrolled at the real TTP
(HTTPS process), attested every INTERVAL seconds by HostMonitor; the TTP's
trusted_launch.host.status notification travels over the real RabbitMQ on
127.0.0.1:5672 to a HostTrustStatus listener that SecurityProfileFilter reads.
We extend PCR 7 and time until the filter refuses the host
(``host_drop_to_filter_s``), next to its bound measured in the same run: the
interval plus one attestation round (``round_s``, median of a few rounds).

Also the filter's per-host cost with the status check on, next to Nova's
AggregateInstanceExtraSpecsFilter over the same 10,000 HostStates.
"""

from __future__ import annotations

import pathlib
import statistics
import tempfile
import time

INTERVAL = 1.0
ROUNDS = 5
LOG = (pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "eventlogs"
       / "secureboot_binary_bios_measurements")


def _filter_and_spec():
    import nova.conf
    from nova import objects
    from nova.scheduler import host_manager

    from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

    objects.register_all()
    aggregate = objects.Aggregate(id=1, name="sp-high", hosts=[], metadata={"trusted_sp": "high"})
    flavor = objects.Flavor(name="m1", memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                            swap=0, extra_specs={})
    spec = objects.RequestSpec(flavor=flavor, image=objects.ImageMeta.from_dict({}),
                               instance_uuid="00000000-0000-4000-8000-000000000002",
                               scheduler_hints={"trusted_sp": ["high"]})

    def host_state(name: str):
        state = host_manager.HostState(name, name, "cell1")
        state.aggregates = [aggregate]
        return state
    return nova.conf.CONF, SecurityProfileFilter(), host_state, spec


def _drop_to_filter(workdir: pathlib.Path) -> dict:
    from trusted_launch.sandbox.monitoring import monitored_host, wait_until
    from trusted_launch.sandbox.swtpm import StateCache, extend_pcr
    from trusted_launch.scheduler import security_profile_filter as spf

    conf, flt, host_state, spec = _filter_and_spec()
    states = StateCache(workdir / "states")
    with monitored_host(workdir / "env", states=states, event_log=LOG, interval=INTERVAL,
                        rank_of=spf._configured_rank) as env:
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            env.monitor.run_once()
            rounds.append(time.perf_counter() - started)
        previous_feed, spf._FEED = spf._FEED, env.feed
        conf.set_override("host_status_enabled", True, group="trusted_launch")
        conf.set_override("profile_from_server_metadata", False, group="trusted_launch")
        try:
            state = host_state(env.name)
            env.monitor.start()
            if not wait_until(lambda: flt.filter_all([state], spec) == [state], 30):
                raise RuntimeError("the host never became schedulable")
            changed = time.monotonic()
            extend_pcr(env.device, 7, b"unmeasured change")
            if not wait_until(lambda: flt.filter_all([state], spec) == [], INTERVAL + 30):
                raise RuntimeError("the filter never dropped the host")
            drop = time.monotonic() - changed
        finally:
            spf._FEED = previous_feed
            conf.clear_override("host_status_enabled", group="trusted_launch")
            conf.clear_override("profile_from_server_metadata", group="trusted_launch")
    round_s = statistics.median(rounds)
    return {"host_drop_to_filter_s": round(drop, 3), "host_attestation_round_s": round(round_s, 4),
            "host_drop_bound_s": round(INTERVAL + round_s, 3),
            "host_attestation_interval_s": INTERVAL}


def _filter_cost_with_status() -> dict:
    from nova.scheduler.filters.aggregate_instance_extra_specs import (
        AggregateInstanceExtraSpecsFilter,
    )

    from bench.bench_filter import _best_ns_per_host, _hosts, _spec
    from trusted_launch.scheduler import security_profile_filter as spf
    from trusted_launch.scheduler.host_status import HostTrustStatus, StatusFeed

    conf, flt, _, _ = _filter_and_spec()
    hosts = _hosts()
    status = HostTrustStatus(spf._configured_rank)
    now = time.time()
    for index, host in enumerate(hosts):
        status.update(host.host, ("low", "medium", "high")[index % 3], now)
    previous_feed, spf._FEED = spf._FEED, StatusFeed(status)
    conf.set_override("host_status_enabled", True, group="trusted_launch")
    conf.set_override("profile_from_server_metadata", False, group="trusted_launch")
    try:
        ours, passed = _best_ns_per_host(flt, hosts,
                                         _spec(scheduler_hints={"trusted_sp": ["high"]}))
        nova_ns, nova_passed = _best_ns_per_host(
            AggregateInstanceExtraSpecsFilter(), hosts,
            _spec(extra_specs={"trusted_sp": "high"}, scheduler_hints={}))
    finally:
        spf._FEED = previous_feed
        conf.clear_override("host_status_enabled", group="trusted_launch")
        conf.clear_override("profile_from_server_metadata", group="trusted_launch")
    if passed != nova_passed:
        raise RuntimeError(f"filters disagree: {passed} vs {nova_passed}")
    return {"filter_with_status_ns_per_host": round(ours, 1),
            "filter_with_status_baseline_ns_per_host": round(nova_ns, 1),
            "filter_with_status_ratio": round(ours / nova_ns, 3)}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-host-monitor-") as workdir:
        result = _drop_to_filter(pathlib.Path(workdir))
    result.update(_filter_cost_with_status())
    print(f"   host drop -> filter refuses   {result['host_drop_to_filter_s']:8.3f} s")
    print(f"   bound: interval + one round   {result['host_drop_bound_s']:8.3f} s (baseline; "
          f"round {result['host_attestation_round_s'] * 1000:.1f} ms)")
    print(f"   filter with host status       {result['filter_with_status_ns_per_host']:8.0f} "
          "ns/host")
    print(f"   AggregateInstanceExtraSpecs   "
          f"{result['filter_with_status_baseline_ns_per_host']:8.0f} ns/host (baseline)")
    return result


if __name__ == "__main__":
    print(run())
