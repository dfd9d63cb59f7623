"""The real cloud of tools/run-cloud.sh, brought up once per test session.

Skipped, saying why, when this machine cannot run it: no root, no QEMU/libvirt,
no network namespaces, or the database/message servers are absent;
``TL_CLOUD_TESTS=0`` skips it on purpose.  ``TL_CLOUD_KEEP=1`` leaves the cloud
running afterwards (a developer's second run then reuses it in about two
minutes).  The logs stay in .cloud/log after the tear-down; on a failed
bring-up the error names the service and shows the tail of its log.
Under pytest-xdist each worker brings the cloud up under one file lock and
none tears it down (tools/run-tests.sh runs tests/cloud serially instead).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pathlib
import shutil
import socket
import subprocess

import pytest

from trusted_launch.demo.report import Recorder, ScenarioResult
from trusted_launch.sandbox.cloud.bringup import Cloud
from trusted_launch.sandbox.cloud.layout import REPO, CloudPaths
from trusted_launch.sandbox.cloud.scenarios import Scenarios
from trusted_launch.sandbox.cloud.scenarios import cloud_target as make_target

RUN_CLOUD = REPO / "tools" / "run-cloud.sh"
BRING_UP_TIMEOUT_S = 45 * 60  # a fresh machine installs the services first
TEAR_DOWN_TIMEOUT_S = 5 * 60
SERVERS = {"MariaDB": 3306, "PostgreSQL": 5432, "RabbitMQ": 5672}


def _why_not_here() -> str | None:
    """The reason this machine cannot run the cloud, or None."""
    if os.environ.get("TL_CLOUD_TESTS") == "0":
        return "TL_CLOUD_TESTS=0"
    if os.geteuid() != 0:
        return "the cloud needs root (namespaces, libvirtd, macvtap)"
    for tool in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "unshare", "nsenter",
                 "swtpm", "rabbitmqctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bindep.txt)"
    for name, port in SERVERS.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return f"{name} is not listening on 127.0.0.1:{port}"
    probe = f"tl-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces do not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return _qemu_cannot_run_a_guest()


def _qemu_cannot_run_a_guest() -> str | None:
    from trusted_launch.sandbox.cloud.hypervisor import run_probe_guest

    ran, output = run_probe_guest("tcg", pathlib.Path(f"/tmp/tl-cloud-probe-{os.getpid()}.img"),
                                  timeout=60)
    return None if ran else f"QEMU cannot run a probe guest here: {output[-300:]}"


def _run_cloud(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUN_CLOUD), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def cloud_report():
    """The JSON report of ``tools/run-cloud.sh --json`` (the cloud is up while it lives)."""
    reason = _why_not_here()
    if reason:
        pytest.skip(f"no real cloud on this machine: {reason}")
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ
    lock_path = REPO / ".cloud-bring-up.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = _run_cloud("--json", timeout=BRING_UP_TIMEOUT_S)
    if result.returncode != 0:
        pytest.fail(f"tools/run-cloud.sh failed (logs kept in {REPO / '.cloud' / 'log'}):\n"
                    f"{result.stderr[-4000:]}", pytrace=False)
    yield json.loads(result.stdout)
    if under_xdist or os.environ.get("TL_CLOUD_KEEP") == "1":
        return
    down = _run_cloud("--down", "--json", timeout=TEAR_DOWN_TIMEOUT_S)
    assert down.returncode == 0, f"tools/run-cloud.sh --down failed:\n{down.stderr[-3000:]}"
    _assert_nothing_left()


def _assert_nothing_left() -> None:
    """After --down: no process of the cloud, no tenant or DHCP namespace, no guest's QEMU,
    no dnsmasq."""
    from trusted_launch.sandbox.cloud import dhcp, network
    from trusted_launch.sandbox.cloud.processes import ProcessTable

    root = REPO / ".cloud"
    table = ProcessTable(root / "run", root / "log")
    assert table.names() == [], f"pid files left: {table.names()}"
    assert not network.namespace_exists(), f"namespace {network.NAMESPACE} left"
    qemu = subprocess.run(["pgrep", "-af", f"qemu-system.*{root}"], capture_output=True,
                          text=True).stdout
    assert not qemu.strip(), f"guests left running:\n{qemu}"
    dnsmasq = subprocess.run(["pgrep", "-af", f"dnsmasq.*{root}"], capture_output=True,
                             text=True).stdout
    assert not dnsmasq.strip(), f"dnsmasq left running:\n{dnsmasq}"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout.split()
    for network_id in dhcp.served_networks(root / "data" / "neutron" / "dhcp"):
        assert dhcp.namespace(network_id) not in namespaces, f"{dhcp.namespace(network_id)} left"


@pytest.fixture(scope="session")
def cloud(cloud_report) -> Cloud:
    """The running cloud: its paths, ports, passwords and an openstacksdk connection."""
    venv = pathlib.Path(os.environ.get("TL_CLOUD_VENV", REPO / ".cloud-venv"))
    return Cloud(CloudPaths(REPO / ".cloud", venv))


@pytest.fixture(scope="session")
def cloud_target(cloud):
    """What the scenarios need to know about the cloud (guest image built and uploaded)."""
    return make_target(cloud.paths.root, cloud.paths.venv)


@pytest.fixture(scope="session")
def domain_xml_dir(cloud_target) -> pathlib.Path:
    """Where the scenario run leaves ``virsh dumpxml`` of its guests (for the secrets scan)."""
    return pathlib.Path(cloud_target.work_dir) / "domain-xml"


def dump_domain_xml(cloud: Cloud, directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, xml in cloud.domain_xml().items():
        (directory / f"{name}.xml").write_text(xml)


@pytest.fixture(scope="session")
def scenario_run(cloud, cloud_target, domain_xml_dir) -> dict:
    """The scenarios, run once per pytest run even under ``-n 2``: the first worker to get
    here runs them; the other waits on the lock and reads what it recorded.

    ``{"started_at": UTC ISO time, "results": [...]}``; before the run deletes its
    servers, their domain XML is dumped into ``domain_xml_dir``.
    """
    directory = pathlib.Path(cloud_target.work_dir)
    directory.mkdir(parents=True, exist_ok=True)
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    recorded = directory / f"scenarios-{run_id}.json"
    with open(directory / "scenarios.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not recorded.exists():
            started = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            recorder = Recorder()
            shutil.rmtree(domain_xml_dir, ignore_errors=True)
            Scenarios(cloud_target, recorder).run(
                before_clean_up=lambda: dump_domain_xml(cloud, domain_xml_dir))
            recorded.write_text(json.dumps({
                "started_at": started.isoformat(),
                "results": [r.to_json() for r in recorder.results]}))
    return json.loads(recorded.read_text())


@pytest.fixture(scope="session")
def results(scenario_run) -> dict:
    """The scenario results by name."""
    return {item["name"]: ScenarioResult(**item) for item in scenario_run["results"]}
