"""Mistakes a new operator makes with the TTP's console scripts end in one clear line.

Each test runs the real ``trusted-launch-ttp`` / ``trusted-launch-ttp-manage``
scripts on a configuration file with one mistake, and checks the answer: exit
status 1, exactly one line on stderr naming the option or file and the fix,
no traceback and no warning from a dependency.
"""

from __future__ import annotations

import importlib.util
import pathlib
import socket
import subprocess

import pytest

from tests.fixtures.ttp import BIN_DIR, CertificateAuthority, TTPServer, write_ttp_config
from trusted_launch.ttp.configuration import load_config


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN_DIR / script), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _one_line_error(result: subprocess.CompletedProcess, script: str) -> str:
    """The single stderr line of a refused run (asserting its shape)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    return lines[0]


@pytest.fixture
def config(tmp_path: pathlib.Path, ttp_test_ca: CertificateAuthority) -> pathlib.Path:
    cert, key = ttp_test_ca.issue("ttp-operator-errors")
    return write_ttp_config(tmp_path, database_url=f"sqlite:///{tmp_path / 'ttp.sqlite'}",
                            cert=cert, key=key, admin_token="admin-secret",
                            ek_ca_files=[ttp_test_ca.cert_file])


def _edit(config: pathlib.Path, old: str, new: str) -> pathlib.Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


@pytest.mark.parametrize("script", ["trusted-launch-ttp", "trusted-launch-ttp-manage"])
def test_unknown_option_is_refused_naming_option_file_and_the_right_name(
        config: pathlib.Path, script: str) -> None:
    _edit(config, "bind_port = 0", "bind_prot = 0")
    args = ["--config-file", str(config)] + ([] if script == "trusted-launch-ttp"
                                             else ["db", "sync"])
    line = _one_line_error(_run(script, *args), script)
    assert "unknown option 'bind_prot' in section [api]" in line
    assert str(config) in line and "did you mean bind_port?" in line
    assert not (config.parent / "ttp.sqlite").exists()  # refused before touching anything


def test_unknown_section_and_bad_value_are_refused(config: pathlib.Path) -> None:
    _edit(config, "[database]", "[databse]")
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "db", "sync"), "trusted-launch-ttp-manage")
    assert "unknown section [databse]" in line and "did you mean [database]?" in line
    _edit(config, "[databse]", "[database]")
    _edit(config, "threads = 4", "threads = four")
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "db", "sync"), "trusted-launch-ttp-manage")
    assert f"[api] threads in {config} is not valid" in line and "'four'" in line


@pytest.mark.parametrize("script", ["trusted-launch-ttp", "trusted-launch-ttp-manage"])
def test_missing_config_file_names_it(tmp_path: pathlib.Path, script: str) -> None:
    missing = tmp_path / "nowhere" / "ttp.conf"
    args = ["--config-file", str(missing)] + ([] if script == "trusted-launch-ttp"
                                              else ["keys", "list"])
    line = _one_line_error(_run(script, *args), script)
    assert f"configuration file {missing} not found" in line and "--config-file" in line


def test_postgresql_url_without_its_driver_names_an_installed_one(config: pathlib.Path) -> None:
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg (the driver of a bare postgresql:// URL) is installed here")
    _edit(config, f"connection = sqlite:///{config.parent / 'ttp.sqlite'}",
          "connection = postgresql://postgres@127.0.0.1/ttp")
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "db", "sync"), "trusted-launch-ttp-manage")
    assert "[database] connection" in line and "'psycopg' is not installed" in line
    assert "write postgresql+psycopg2://" in line


def test_sqlite_directory_that_does_not_exist_is_named(config: pathlib.Path) -> None:
    directory = config.parent / "no" / "such" / "dir"
    _edit(config, f"connection = sqlite:///{config.parent / 'ttp.sqlite'}",
          f"connection = sqlite:///{directory / 'ttp.sqlite'}")
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "db", "sync"), "trusted-launch-ttp-manage")
    assert f"the directory {directory} of the SQLite file does not exist" in line
    assert f"mkdir -p {directory}" in line


def test_database_without_schema_says_run_db_sync(config: pathlib.Path) -> None:
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "profile", "list"), "trusted-launch-ttp-manage")
    assert "no TTP schema yet" in line and "db sync" in line


@pytest.mark.parametrize("option", ["cert_file", "key_file"])
def test_missing_tls_file_names_file_and_option(config: pathlib.Path, option: str) -> None:
    text = config.read_text()
    current = next(line.split("=", 1)[1].strip() for line in text.splitlines()
                   if line.startswith(f"{option} ="))
    missing = config.parent / f"missing-{option}.pem"
    _edit(config, f"{option} = {current}", f"{option} = {missing}")
    line = _one_line_error(_run("trusted-launch-ttp", "--config-file", str(config)),
                           "trusted-launch-ttp")
    assert f"[api] {option} {missing}: no such file" in line


def test_certificate_and_key_that_do_not_match_are_named(
        config: pathlib.Path, ttp_test_ca: CertificateAuthority) -> None:
    _, other_key = ttp_test_ca.issue("another-server")
    key_line = next(line for line in config.read_text().splitlines()
                    if line.startswith("key_file ="))
    _edit(config, key_line, f"key_file = {other_key}")
    line = _one_line_error(_run("trusted-launch-ttp", "--config-file", str(config)),
                           "trusted-launch-ttp")
    assert "[api] cert_file" in line and str(other_key) in line
    assert "not a PEM certificate and its private key" in line


def test_ek_ca_file_that_does_not_exist_is_named(config: pathlib.Path,
                                                 ttp_test_ca: CertificateAuthority) -> None:
    missing = config.parent / "vendor-ca.pem"
    _edit(config, f"ek_ca_files = {ttp_test_ca.cert_file}", f"ek_ca_files = {missing}")
    line = _one_line_error(_run("trusted-launch-ttp", "--config-file", str(config)),
                           "trusted-launch-ttp")
    assert f"[enrollment] ek_ca_files {missing}: no such file" in line


def test_the_api_listens_on_loopback_unless_told_otherwise(
        config: pathlib.Path, ttp_test_ca: CertificateAuthority) -> None:
    _edit(config, "bind_host = 127.0.0.1\n", "")
    assert load_config([str(config)], prog="test").api.bind_host == "127.0.0.1"
    server = TTPServer(config.parent, config, ttp_test_ca.cert_file, "admin-secret")
    assert server.manage("db", "sync").returncode == 0
    server.start()
    try:
        assert server.request("GET", "/v1/keys").status_code == 200
        assert f"TTP listening on https://127.0.0.1:{server.port}" in server.log()
        assert "Warning" not in server.log()  # no dependency warns on a normal start
    finally:
        assert server.stop() == 0


def test_notification_settings_are_known_and_import_no_warning(config: pathlib.Path) -> None:
    """oslo.messaging's own sections are accepted once notifications are on, silently."""
    config.write_text(config.read_text().replace("[DEFAULT]\n", "[DEFAULT]\n"
                                                 "transport_url = rabbit://guest@127.0.0.1//\n")
                      + "[host_status]\nnotifications_enabled = true\n"
                        "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 30\n")
    result = _run("trusted-launch-ttp-manage", "--config-file", str(config), "db", "sync")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    off = config.read_text().replace("notifications_enabled = true",
                                     "notifications_enabled = false")
    config.write_text(off)
    line = _one_line_error(_run("trusted-launch-ttp-manage", "--config-file", str(config),
                                "db", "sync"), "trusted-launch-ttp-manage")
    assert "unknown option 'transport_url' in section [DEFAULT]" in line


def test_a_port_in_use_names_the_address_and_the_option(config: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        _edit(config, "bind_port = 0", f"bind_port = {port}")
        assert _run("trusted-launch-ttp-manage", "--config-file", str(config),
                    "db", "sync").returncode == 0
        line = _one_line_error(_run("trusted-launch-ttp", "--config-file", str(config)),
                               "trusted-launch-ttp")
    assert f"cannot listen on 127.0.0.1:{port}" in line and "bind_port" in line
