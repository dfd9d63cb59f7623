"""The DevStack plugin configures through ``trusted-launch configure``, which edits files right."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from trusted_launch.cmd.cli import main
from trusted_launch.deploy.inifile import IniFile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "devstack" / "plugin.sh"
SHARED = ["--profiles", "low,medium,high", "--ttp-url", "https://127.0.0.1:9443",
          "--ttp-ca-file", "/etc/trusted-launch/ttp-cert.pem"]


def test_plugin_and_settings_parse():
    for script in (PLUGIN, ROOT / "devstack" / "settings"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_plugin_configures_through_the_shared_commands_and_enrolls():
    text = PLUGIN.read_text()
    for needle in ("trusted-launch configure nova-scheduler",
                   "trusted-launch configure nova-compute", "trusted-launch configure ttp",
                   "trusted-launch host enroll",
                   "openstack aggregate create", "trusted-launch-ttp-manage --config-file",
                   "socket --tpm2 --tpmstate"):
        assert needle in text, needle
    assert "iniset" not in text, "nova.conf/ttp.conf are edited by trusted-launch configure only"


def test_scheduler_keeps_operator_filters_and_adds_ours_once(tmp_path):
    conf = tmp_path / "nova.conf"
    conf.write_text("# operator comment\n[filter_scheduler]\n"
                    "enabled_filters = ComputeFilter,ImagePropertiesFilter\n"
                    "available_filters = nova.scheduler.filters.all_filters\n"
                    "[DEFAULT]\ndebug = True\n")
    for _ in range(2):
        assert main(["configure", "nova-scheduler", "--config-file", str(conf), *SHARED]) == 0
    ini = IniFile(conf)
    assert ini.get("filter_scheduler", "enabled_filters") == (
        "ComputeFilter,ImagePropertiesFilter,SecurityProfileFilter")
    assert ini.get_all("filter_scheduler", "available_filters") == [
        "nova.scheduler.filters.all_filters",
        "trusted_launch.scheduler.security_profile_filter.SecurityProfileFilter"]
    assert ini.get("trusted_launch", "security_profiles") == "low,medium,high"
    assert ini.get("DEFAULT", "debug") == "True"
    assert conf.read_text().startswith("# operator comment\n")


def test_scheduler_on_an_empty_file_keeps_novas_own_filters_available(tmp_path):
    conf = tmp_path / "nova.conf"
    assert main(["configure", "nova-scheduler", "--config-file", str(conf), *SHARED]) == 0
    ini = IniFile(conf)
    assert ini.get_all("filter_scheduler", "available_filters")[0] == (
        "nova.scheduler.filters.all_filters")
    enabled = ini.get("filter_scheduler", "enabled_filters").split(",")
    assert enabled[0] == "ComputeFilter" and enabled[-1] == "SecurityProfileFilter"


def test_compute_sets_driver_and_host_settings(tmp_path):
    conf = tmp_path / "nova-cpu.conf"
    conf.write_text("[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n")
    assert main(["configure", "nova-compute", "--config-file", str(conf), *SHARED,
                 "--tcti", "swtpm:port=2321", "--event-log", "/tmp/log",
                 "--host-profile", "high", "--ak-certificate-file", "/etc/ak.pem"]) == 0
    ini = IniFile(conf)
    assert ini.get_all("DEFAULT", "compute_driver") == [
        "trusted_launch.driver.TrustedLibvirtDriver"]
    assert ini.get("trusted_launch", "host_security_profile") == "high"
    assert ini.get("trusted_launch", "allowed_ttp_urls") == "https://127.0.0.1:9443"


@pytest.mark.parametrize("change, message", [
    (("--host-profile", "ultra"), "host profile 'ultra' is not one of low,medium,high"),
    (("--ttp-url", "http://127.0.0.1:9443"), "is not an https:// URL"),
])
def test_compute_refuses_bad_settings_and_leaves_the_file(tmp_path, capsys, change, message):
    conf = tmp_path / "nova-cpu.conf"
    conf.write_text("[DEFAULT]\n")
    args = dict(zip(SHARED[::2], SHARED[1::2], strict=True))
    args.update({"--tcti": "swtpm:port=1", "--event-log": "/l", "--host-profile": "low",
                 "--ak-certificate-file": "/a"})
    args[change[0]] = change[1]
    argv = [item for pair in args.items() for item in pair]
    assert main(["configure", "nova-compute", "--config-file", str(conf), *argv]) == 1
    assert message in capsys.readouterr().err
    assert conf.read_text() == "[DEFAULT]\n"


def test_ttp_config_is_complete_and_reloadable(tmp_path):
    conf = tmp_path / "ttp.conf"
    argv = ["configure", "ttp", "--config-file", str(conf), "--bind-host", "127.0.0.1",
            "--bind-port", "9443", "--cert-file", "/c.pem", "--key-file", "/k.pem",
            "--database-url", "sqlite:////tmp/ttp.sqlite", "--data-dir", "/var/lib/tl",
            "--ek-ca-files", "/a.pem,/b.pem", "--profile-dir", "/profiles"]
    assert main(argv) == 0
    first = conf.read_text()
    assert main(argv) == 0
    assert conf.read_text() == first
    ini = IniFile(conf)
    assert ini.get("key_store", "key_dir") == "/var/lib/tl/keys"
    assert ini.get("enrollment", "ek_ca_files") == "/a.pem,/b.pem"


def _compute_argv(conf, *extra: str) -> list[str]:
    return ["configure", "nova-compute", "--config-file", str(conf), *SHARED,
            "--tcti", "swtpm:port=2321", "--event-log", "/tmp/log", "--host-profile", "low",
            "--ak-certificate-file", "/etc/ak.pem", *extra]


def test_compute_over_rpc_names_topic_and_receipt_key(tmp_path):
    conf = tmp_path / "nova-cpu.conf"
    argv = _compute_argv(conf, "--ttp-transport", "rpc", "--ttp-rpc-topic", "tl_ttp",
                         "--ttp-receipt-key-file", "/etc/trusted-launch/receipt.pem")
    assert main(argv) == 0
    first = conf.read_text()
    assert main(argv) == 0 and conf.read_text() == first
    ini = IniFile(conf)
    assert ini.get("trusted_launch", "ttp_transport") == "rpc"
    assert ini.get("trusted_launch", "ttp_rpc_topic") == "tl_ttp"
    assert ini.get("trusted_launch", "ttp_receipt_key_file") == "/etc/trusted-launch/receipt.pem"
    assert "transport_url" not in conf.read_text()  # the bus stays [DEFAULT]'s


def test_compute_over_https_is_the_default(tmp_path):
    conf = tmp_path / "nova-cpu.conf"
    assert main(_compute_argv(conf)) == 0
    ini = IniFile(conf)
    assert ini.get("trusted_launch", "ttp_transport") == "https"
    assert ini.get("trusted_launch", "ttp_receipt_key_file") is None


def test_compute_over_rpc_without_a_receipt_key_is_refused(tmp_path, capsys):
    conf = tmp_path / "nova-cpu.conf"
    conf.write_text("[DEFAULT]\n")
    assert main(_compute_argv(conf, "--ttp-transport", "rpc")) == 1
    assert "rpc needs the TTP's receipt key file" in capsys.readouterr().err
    assert conf.read_text() == "[DEFAULT]\n"


def test_ttp_config_with_the_rpc_server(tmp_path, capsys):
    conf = tmp_path / "ttp.conf"
    base = ["configure", "ttp", "--config-file", str(conf), "--bind-host", "127.0.0.1",
            "--bind-port", "9443", "--cert-file", "/c.pem", "--key-file", "/k.pem",
            "--database-url", "sqlite:////tmp/ttp.sqlite", "--data-dir", "/var/lib/tl",
            "--ek-ca-files", "/a.pem", "--profile-dir", "/profiles"]
    assert main([*base, "--rpc-ttp-url", "https://127.0.0.1:9443", "--rpc-topic", "t"]) == 0
    ini = IniFile(conf)
    assert ini.get("rpc", "ttp_url") == "https://127.0.0.1:9443"
    assert ini.get("rpc", "topic") == "t"
    assert main([*base, "--rpc-ttp-url", "http://127.0.0.1:9443"]) == 1
    assert "is not an https:// URL" in capsys.readouterr().err


def test_plugin_runs_the_rpc_server_and_fetches_the_receipt_key():
    text = PLUGIN.read_text()
    for needle in ("trusted-launch configure ttp-receipt-key", "run_process tl-ttp-rpc",
                   '--ttp-transport "$TRUSTED_LAUNCH_TTP_TRANSPORT"', "stop_process tl-ttp-rpc"):
        assert needle in text, needle
    assert "TRUSTED_LAUNCH_TTP_TRANSPORT=${TRUSTED_LAUNCH_TTP_TRANSPORT:-https}" in (
        ROOT / "devstack" / "settings").read_text()
