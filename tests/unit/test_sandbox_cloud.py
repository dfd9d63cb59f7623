"""The cloud bring-up's own machinery, on real processes (no cloud needed)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys

import pytest

from trusted_launch.sandbox.cloud.bringup import Cloud
from trusted_launch.sandbox.cloud.hypervisor import VirtChoice, probe_image, run_probe_guest
from trusted_launch.sandbox.cloud.layout import CloudPaths, CloudState
from trusted_launch.sandbox.cloud.processes import CloudError, ProcessTable, Service
from trusted_launch.sandbox.cloud.readiness import wait_until


def test_state_is_chosen_once_and_private(tmp_path):
    path = tmp_path / "state.json"
    first = CloudState.load_or_create(path)
    second = CloudState.load_or_create(path)
    assert first == second
    assert len(set(first.ports.values())) == len(first.ports)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.url("ttp").startswith("https://127.0.0.1:")


def test_a_running_service_is_reused_and_its_whole_group_stopped(tmp_path):
    table = ProcessTable(tmp_path / "run", tmp_path / "log")
    service = Service("sleeper", ["sh", "-c", "sleep 300 & sleep 300"])
    pid, started = table.start(service)
    assert started
    assert table.start(service) == (pid, False)
    table.stop("sleeper")
    assert table.pid("sleeper") is None
    left = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pid)], capture_output=True,
                          text=True).stdout.splitlines()
    alive = [line for line in left if not line.split()[1].startswith("Z")]  # Z: not reaped yet
    assert not alive, f"processes of the group left: {alive}"


def test_a_changed_configuration_file_restarts_the_service(tmp_path):
    table = ProcessTable(tmp_path / "run", tmp_path / "log")
    conf = tmp_path / "nova.conf"
    conf.write_text("[trusted_launch]\nttp_transport = https\n")
    service = Service("configured", ["sleep", "300"], config_files=(conf,))
    pid, started = table.start(service)
    assert started and table.start(service) == (pid, False)
    conf.write_text("[trusted_launch]\nttp_transport = https\n")  # rewritten, same bytes
    assert table.start(service) == (pid, False)
    conf.write_text("[trusted_launch]\nttp_transport = rpc\n")
    assert table.config_changed(service)
    new_pid, restarted = table.start(service)
    assert restarted and new_pid != pid and table.pid("configured") == new_pid
    assert not table.config_changed(service)
    assert "configuration changed: restarting" in table.log_file("configured").read_text()
    table.stop("configured")
    assert not (tmp_path / "run" / "configured.config-digest").exists()


def test_a_service_started_before_its_configuration_was_tracked_restarts(tmp_path):
    table = ProcessTable(tmp_path / "run", tmp_path / "log")
    pid, _ = table.start(Service("old", ["sleep", "300"]))
    tracked = Service("old", ["sleep", "300"], config_files=(tmp_path / "missing.conf",))
    new_pid, restarted = table.start(tracked)
    assert restarted and new_pid != pid
    assert table.start(tracked) == (new_pid, False)
    table.stop("old")


def test_a_service_that_exits_is_named_with_its_log_tail(tmp_path):
    table = ProcessTable(tmp_path / "run", tmp_path / "log")
    table.start(Service("broken", ["sh", "-c", "echo cannot bind port; exit 3"]))
    with pytest.raises(CloudError) as error:
        wait_until("broken", lambda: False, 30, table)
    assert str(error.value).startswith("broken exited")
    assert "cannot bind port" in str(error.value)


def test_a_service_that_never_answers_times_out_naming_it(tmp_path):
    with pytest.raises(CloudError, match=r"^keystone not ready after 1 s OSError: refused"):
        wait_until("keystone", _refuse, 1)


def _refuse() -> bool:
    raise OSError("refused")


def test_setup_commands_log_with_passwords_masked(tmp_path):
    cloud = Cloud(CloudPaths(tmp_path / "cloud", tmp_path / "venv"))
    secret = cloud.state.passwords["rabbit"]
    cloud.run("demo", [sys.executable, "-c", f"print('url rabbit://u:{secret}@h')"])
    log = (cloud.paths.log / "setup-demo.log").read_text()
    assert secret not in log
    assert "rabbit://u:***@h" in log
    with pytest.raises(CloudError, match=r"demo: .* failed \(2\)") as error:
        cloud.run("demo", [sys.executable, "-c", f"import sys; print('{secret}'); sys.exit(2)"])
    assert secret not in str(error.value)


def test_tcg_gets_a_cpu_model_and_both_types_the_pc_machine():
    assert VirtChoice("qemu", "why").libvirt_options() == {
        "virt_type": "qemu", "hw_machine_type": "x86_64=pc", "cpu_mode": "custom",
        "cpu_models": "qemu64"}
    assert VirtChoice("kvm", "why").libvirt_options() == {
        "virt_type": "kvm", "hw_machine_type": "x86_64=pc"}


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed")
def test_the_probe_image_is_a_guest_that_runs_and_quits(tmp_path):
    image = probe_image(tmp_path / "probe.img")
    assert image.stat().st_size == 1024 * 1024
    ran, output = run_probe_guest("tcg", tmp_path / "probe.img", timeout=120)
    assert ran, output
    assert not (tmp_path / "probe.img").exists()


def test_a_probe_that_cannot_start_reports_why(tmp_path):
    ran, output = run_probe_guest("no-such-accelerator", tmp_path / "probe.img", timeout=60)
    assert not ran
    assert "no-such-accelerator" in output


def test_dhcp_agent_config_names_the_macvlan_driver_and_the_tenant_interface(tmp_path):
    from trusted_launch.sandbox.cloud import configs

    paths = CloudPaths(tmp_path / "cloud", tmp_path / "venv")
    ini = configs.dhcp_agent(paths, "tl-compute-high", "xx-veth0")
    assert ini["DEFAULT"]["host"] == "tl-compute-high"
    assert ini["DEFAULT"]["interface_driver"] == (
        "trusted_launch.sandbox.cloud.dhcp_interface.MacvlanInterfaceDriver")
    assert ini["DEFAULT"]["dnsmasq_base_log_dir"] == str(paths.log / "dnsmasq")
    assert ini["macvtap"]["physical_interface_mappings"] == f"{configs.PHYSNET}:xx-veth0"


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_stop_all_ends_the_agents_dnsmasq_and_spares_other_processes(tmp_path):
    from trusted_launch.sandbox.cloud import dhcp

    served, foreign = tmp_path / "dhcp" / "net-a", tmp_path / "dhcp" / "net-b"
    served.mkdir(parents=True)
    foreign.mkdir()
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                "--port=0", f"--pid-file={served / 'pid'}",
                                f"--dhcp-leasefile={served / 'leases'}"])
    sleeper = subprocess.Popen(["sleep", "300"])  # a pid file naming something else
    (foreign / "pid").write_text(f"{sleeper.pid}\n")
    try:
        wait_until("dnsmasq", lambda: dhcp.dnsmasq_pid(tmp_path / "dhcp", "net-a") is not None,
                   30)
        assert dhcp.dnsmasq_pid(tmp_path / "dhcp", "net-a") == dnsmasq.pid
        assert dhcp.dnsmasq_pid(tmp_path / "dhcp", "net-b") is None
        assert dhcp.stop_all(tmp_path / "dhcp") == ["dnsmasq-net-a"]
        assert dnsmasq.wait(timeout=30) is not None
        assert sleeper.poll() is None
    finally:
        for process in (dnsmasq, sleeper):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_switching_the_nova_driver_restarts_only_the_scheduler_and_computes(tmp_path):
    paths = CloudPaths(tmp_path / "cloud", tmp_path / "venv")
    trusted = Cloud(paths)
    names = ["nova-scheduler", "nova-compute-tl-compute-high", "nova-compute-tl-compute-low",
             "nova-conductor"]
    for name in names:
        trusted.table.start(Service(name, ["sleep", "300"]))
    try:
        trusted._restart_on_driver_change()  # first run, trusted: nothing to restart
        assert all(trusted.table.alive(name) for name in names)
        stock = Cloud(paths, nova_driver="stock")
        stock._restart_on_driver_change()
        assert [name for name in names if stock.table.alive(name)] == ["nova-conductor"]
        assert (paths.data / "nova-driver").read_text() == "stock\n"
        stock.table.start(Service("nova-scheduler", ["sleep", "300"]))
        stock._restart_on_driver_change()  # same driver again: left running
        assert stock.table.alive("nova-scheduler")
    finally:
        for name in names:
            trusted.table.stop(name)


def test_an_unknown_nova_driver_is_refused(tmp_path):
    with pytest.raises(CloudError, match=r"nova driver 'fake' is not one of"):
        Cloud(CloudPaths(tmp_path / "cloud", tmp_path / "venv"), nova_driver="fake")


def test_a_check_command_that_times_out_is_not_ready_yet():
    attempts = []

    def slow_then_ready() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            subprocess.run(["sleep", "5"], timeout=0.1)
        return True

    assert wait_until("libvirtd", slow_then_ready, 30) >= 0
    assert len(attempts) == 2
