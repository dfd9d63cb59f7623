"""A host leaves its measured state; the scheduler stops choosing it.

Real parts only: a swtpm host booted from a real Secure Boot event log and
enrolled at the real TTP (HTTPS process, two workers, SQLite), the host's
periodic attestation (HostMonitor), the TTP's trusted_launch.host.status
notification over the real RabbitMQ on 127.0.0.1:5672, the scheduler's
HostTrustStatus listener, and SecurityProfileFilter over Nova HostStates in a
trusted_sp=high aggregate.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.compute.host_monitor import below
from trusted_launch.sandbox.monitoring import monitored_host, wait_until
from trusted_launch.sandbox.services import rabbitmq_reachable
from trusted_launch.sandbox.swtpm import extend_pcr
from trusted_launch.scheduler.host_status import HostTrustStatus, StatusFeed, ttp_status_pull

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq]

INTERVAL = 0.5
TRUSTED_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"



@pytest.fixture
def scheduler(monkeypatch):
    """(filter, make_host_state, request spec for 'high'), host status on."""
    import nova.conf
    from nova import objects
    from nova.scheduler import host_manager

    from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

    objects.register_all()
    conf = nova.conf.CONF
    conf.set_override("profile_from_server_metadata", False, group="trusted_launch")
    conf.set_override("host_status_enabled", True, group="trusted_launch")
    aggregate = objects.Aggregate(id=1, name="sp-high", hosts=[],
                                  metadata={"trusted_sp": "high"})

    def host_state(name: str):
        state = host_manager.HostState(name, name, "cell1")
        state.aggregates = [aggregate]
        return state

    flavor = objects.Flavor(name="m1", memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                            swap=0, extra_specs={})
    spec = objects.RequestSpec(flavor=flavor, image=objects.ImageMeta.from_dict({}),
                               instance_uuid="00000000-0000-4000-8000-000000000001",
                               scheduler_hints={"trusted_sp": ["high"]})
    yield SecurityProfileFilter(), host_state, spec
    conf.clear_override("profile_from_server_metadata", group="trusted_launch")
    conf.clear_override("host_status_enabled", group="trusted_launch")


@pytest.mark.skipif(not rabbitmq_reachable(), reason="RabbitMQ not on 127.0.0.1:5672")
def test_host_leaving_measured_state_is_dropped_by_the_filter(
        scheduler, swtpm_state_cache, tmp_path, monkeypatch):
    from trusted_launch.scheduler import security_profile_filter as spf

    flt, host_state, spec = scheduler
    with monitored_host(tmp_path, states=swtpm_state_cache, event_log=TRUSTED_LOG,
                        interval=INTERVAL, rank_of=spf._configured_rank) as env:
        monkeypatch.setattr(spf, "_FEED", env.feed)  # the filter's process-wide cache
        state = host_state(env.name)
        env.monitor.start()
        assert wait_until(lambda: env.status.get(env.name) is not None, 30), \
            "the first status never reached the scheduler"
        assert env.status.get(env.name).profile == "high"
        assert flt.filter_all([state], spec) == [state]
        assert not below(env.monitor.last, "high", ["low", "medium", "high"])

        changed_at = time.monotonic()
        extend_pcr(env.device, 7, b"a boot component nobody measured into the log")
        assert wait_until(lambda: flt.filter_all([state], spec) == [], INTERVAL + 20), \
            "the filter still passes the host"
        elapsed = time.monotonic() - changed_at

        assert elapsed < INTERVAL + 20
        print(f"host_drop_to_filter_s={elapsed:.3f} (interval {INTERVAL} s)")
        trust = env.status.get(env.name)
        assert trust.profile is None
        assert wait_until(lambda: env.monitor.last.profile is None, 5)
        assert env.monitor.last.check == "quote_pcrs"
        assert below(env.monitor.last, "high", ["low", "medium", "high"])  # driver drops traits

        # The pull fallback sees the same status, for a scheduler that missed the bus.
        pulled = HostTrustStatus(spf._configured_rank)
        feed = StatusFeed(pulled, pull=ttp_status_pull(
            env.ttp.url, ca_file=str(env.ttp.ca_file),
            auth_token=env.ttp.create_token("reader")))
        assert feed.pull_once() >= 1
        assert pulled.get(env.name).profile is None

        # The routes answer the API's error shapes over HTTPS too.
        assert env.ttp.request("GET", "/v1/hosts?status=1").status_code == 401
        assert env.ttp.admin("GET", "/v1/hosts?status=yes").status_code == 400
        nobody = {"X-Auth-Token": env.ttp.create_token("host", "nobody")}
        refused = env.ttp.request("POST", "/v1/hosts/nobody/challenges", json={},
                                  headers=nobody)
        assert refused.status_code == 403
        assert refused.json()["error"]["check"] == "host_unknown"
        host = {"X-Auth-Token": env.ttp.create_token("host", env.name)}
        stale = env.ttp.request("POST", f"/v1/hosts/{env.name}/attestations", headers=host,
                                json={"nonce": "A" * 43 + "=", "quote": "AA==",
                                      "signature": "AA==", "event_log": "AA=="})
        assert (stale.status_code, stale.json()["error"]["check"]) == (403, "nonce_unknown")
