"""One launch's host-side protocol time over oslo.messaging RPC beside HTTPS, in one run.

The same swtpm host and TTP (``trusted-launch-ttp`` over HTTPS and
``trusted-launch-ttp-rpc`` on the real RabbitMQ, one database) serve both:
launches alternate HTTPS, RPC, HTTPS, ... so drift hits both alike. Each is
``TrustedLaunchHost.release()`` (steps 5-12); over RPC the host also checks
the TTP's signed receipt, as ``ttp_transport = rpc`` requires. Figures: total
and the TTP round trip (``ttp`` step) p50/p95 per transport.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kombu  # noqa: E402

from bench.bench_protocol import Host, Sandbox, _stats, sandbox  # noqa: E402
from trusted_launch.compute.launch import StepTimer, TrustedLaunchHost  # noqa: E402
from trusted_launch.crypto.receipt import load_receipt_public_key, receipt_key_id  # noqa: E402
from trusted_launch.sandbox.databases import DatabaseUnavailable, postgres_database  # noqa: E402
from trusted_launch.sandbox.services import rabbitmq_reachable  # noqa: E402
from trusted_launch.sandbox.ttp_rpc_process import rpc_transport, start_ttp_rpc  # noqa: E402

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
LAUNCHES = 40  # per transport
WARM_UP = 3



def _receipt_checking(host: Host, env: Sandbox) -> TrustedLaunchHost:
    """``host``'s TPM and pool, authenticating releases by the TTP's pinned receipt key."""
    key = load_receipt_public_key(
        env.ttp.request("GET", "/v1/keys").json()["receipt_keys"][0]["public_key"])
    return TrustedLaunchHost(device=host.device, pool=host.pool,
                             identity=host.runner._identity,
                             read_event_log=host.runner._read_event_log,
                             bind_key_pcrs=host.runner._bind_key_pcrs,
                             receipt_keys={receipt_key_id(key): key})


def _launch(runner: TrustedLaunchHost, client, token: str) -> tuple[float, float]:
    """(total ms, TTP round-trip ms) of one release()."""
    timer = StepTimer()
    started = time.perf_counter()
    runner.release(client, token=token, launch_id=str(uuid.uuid4()), timer=timer)
    return (time.perf_counter() - started) * 1000, timer.steps["ttp"]


@contextlib.contextmanager
def _database():
    try:
        with postgres_database("ttp_bench_rpc") as url:
            yield url
    except DatabaseUnavailable:
        yield None  # SQLite in the sandbox directory


def _delete_queues(*names: str) -> None:
    with kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)


def measure(env: Sandbox, transport, topic: str) -> dict:
    host = env.hosts["host-a"]
    https_client = env.client()
    with start_ttp_rpc(env.ttp, transport, transport_url=RABBIT_URL, topic=topic) as server:
        rpc_client = server.client(transport)
        runners = {"https": (host.runner, https_client),
                   "rpc": (_receipt_checking(host, env), rpc_client)}
        samples: dict[str, dict[str, list[float]]] = {
            name: {"total": [], "ttp": []} for name in runners}
        for index in range(WARM_UP + LAUNCHES):
            order = ("https", "rpc") if index % 2 == 0 else ("rpc", "https")
            for name in order:
                runner, client = runners[name]
                total, ttp = _launch(runner, client, env.token(host.profile))
                host.pool.fill()  # off the clock, as the driver's PoolRefiller
                if index >= WARM_UP:
                    samples[name]["total"].append(total)
                    samples[name]["ttp"].append(ttp)
    return {name: {part: _stats(values) for part, values in parts.items()}
            for name, parts in samples.items()}


def run() -> dict:
    if not rabbitmq_reachable():
        return {"rpc_launch_ms_p50": None,
                "notes": "not measured: RabbitMQ is not listening on 127.0.0.1:5672"}
    topic = f"tl-bench-{secrets.token_hex(6)}"
    transport = rpc_transport(RABBIT_URL)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp, _database() as url, \
                sandbox(pathlib.Path(tmp), database_url=url, host_names=("host-a",)) as env:
            figures = measure(env, transport, topic)
    finally:
        transport.cleanup()
        _delete_queues(topic, f"{topic}.sandbox")
    https, rpc = figures["https"], figures["rpc"]
    return {
        "rpc_launch_ms_p50": rpc["total"]["p50"], "rpc_launch_ms_p95": rpc["total"]["p95"],
        "https_launch_ms_p50": https["total"]["p50"],
        "https_launch_ms_p95": https["total"]["p95"],
        "rpc_ttp_round_trip_ms_p50": rpc["ttp"]["p50"],
        "rpc_ttp_round_trip_ms_p95": rpc["ttp"]["p95"],
        "https_ttp_round_trip_ms_p50": https["ttp"]["p50"],
        "https_ttp_round_trip_ms_p95": https["ttp"]["p95"],
        "rpc_launches_each": rpc["total"]["n"],
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
