"""Cost per host of SecurityProfileFilter next to Nova's AggregateInstanceExtraSpecsFilter.

10,000 HostStates spread over profile aggregates (plus an unrelated
aggregate on every other host); both filters run ``filter_all`` over the
same hosts in the same process. Nova's filter gets a flavor extra spec that
it must compare with aggregate metadata (``trusted_sp=high``), ours the same
requirement as a scheduler hint. Best of several rounds.
"""

from __future__ import annotations

import time

HOSTS = 10_000
ROUNDS = 7
PROFILES = ("low", "medium", "high")


def _hosts() -> list:
    from nova import objects
    from nova.scheduler import host_manager

    aggregates = [objects.Aggregate(id=i, name=f"sp-{p}", hosts=[], metadata={"trusted_sp": p})
                  for i, p in enumerate(PROFILES)]
    unrelated = objects.Aggregate(id=99, name="ssd", hosts=[], metadata={"ssd": "true"})
    hosts = []
    for index in range(HOSTS):
        state = host_manager.HostState(f"host{index}", f"node{index}", "cell1")
        member_of = [aggregates[index % len(PROFILES)]]
        if index % 2:
            member_of.append(unrelated)
        state.aggregates = member_of
        hosts.append(state)
    return hosts


def _spec(**fields):
    from nova import objects

    flavor = objects.Flavor(name="m1", memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                            swap=0, extra_specs=fields.pop("extra_specs", {}))
    spec = objects.RequestSpec(flavor=flavor, image=objects.ImageMeta.from_dict({}),
                               instance_uuid="00000000-0000-4000-8000-000000000000", **fields)
    return spec


def _best_ns_per_host(filter_obj, hosts: list, spec) -> tuple[float, int]:
    best = float("inf")
    passed = 0
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        passed = len(list(filter_obj.filter_all(hosts, spec)))
        best = min(best, time.perf_counter_ns() - started)
    return best / len(hosts), passed


def run() -> dict:
    import nova.conf
    from nova import objects
    from nova.scheduler.filters.aggregate_instance_extra_specs import (
        AggregateInstanceExtraSpecsFilter,
    )

    from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

    objects.register_all()
    conf = nova.conf.CONF
    conf.set_override("profile_from_server_metadata", False, group="trusted_launch")
    try:
        hosts = _hosts()
        ours, ours_passed = _best_ns_per_host(
            SecurityProfileFilter(), hosts, _spec(scheduler_hints={"trusted_sp": ["high"]}))
        nova_ns, nova_passed = _best_ns_per_host(
            AggregateInstanceExtraSpecsFilter(), hosts,
            _spec(extra_specs={"trusted_sp": "high"}, scheduler_hints={}))
    finally:
        conf.clear_override("profile_from_server_metadata", group="trusted_launch")
    if ours_passed != nova_passed:
        raise RuntimeError(f"filters disagree: {ours_passed} vs {nova_passed} hosts passed")
    print(f"   SecurityProfileFilter             {ours:8.0f} ns/host")
    print(f"   AggregateInstanceExtraSpecsFilter {nova_ns:8.0f} ns/host (baseline)")
    return {"filter_ns_per_host": round(ours, 1),
            "aggregate_extra_specs_ns_per_host": round(nova_ns, 1),
            "ratio": round(ours / nova_ns, 3)}


if __name__ == "__main__":
    print(run())
