"""The sandbox cloud's Horizon set-up: settings, secret files, the plugin's enabled files."""

from __future__ import annotations

import pathlib
import stat

import pytest

from trusted_launch.sandbox.cloud.horizon import PLUGIN_ENABLED, Horizon
from trusted_launch.sandbox.cloud.layout import CloudPaths, CloudState
from trusted_launch.sandbox.cloud.processes import CloudError


def fake_venv(root: pathlib.Path) -> pathlib.Path:
    enabled = root / "lib" / "python3.11" / "site-packages" / "openstack_dashboard" / "local"
    (enabled / "enabled").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "gunicorn").write_text("#!/bin/sh\n")
    return root


@pytest.fixture
def horizon(tmp_path) -> Horizon:
    paths = CloudPaths(tmp_path / "cloud", tmp_path / "venv")
    paths.make()
    state = CloudState(ports={"keystone": 5000, "ttp": 8443, "horizon": 8080}, passwords={})
    return Horizon(paths, state, fake_venv(tmp_path / "horizon-venv"))


def test_configure_writes_settings_and_links_the_plugin(horizon, tmp_path):
    horizon.configure(tmp_path / "ca.pem")
    settings = (horizon.etc / "tl_horizon_settings.py").read_text()
    assert "'ttp_url': 'https://127.0.0.1:8443'" in settings.replace('"', "'")
    assert "DEBUG = False" in settings
    assert str(horizon.reader_token_file) in settings
    secret = horizon.etc / "secret_key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() not in settings  # read at start-up, never written into it
    enabled = next(horizon.venv.glob("lib/*/site-packages/openstack_dashboard/local/enabled"))
    links = sorted(path.name for path in enabled.iterdir())
    assert links == sorted(path.name for path in PLUGIN_ENABLED.glob("_[0-9]*.py"))
    assert all((enabled / name).resolve().parent == PLUGIN_ENABLED for name in links)
    assert "bind = \"127.0.0.1:8080\"" in (horizon.etc / "gunicorn.conf.py").read_text()


def test_configure_twice_keeps_the_secret_key(horizon, tmp_path):
    horizon.configure(tmp_path / "ca.pem")
    first = (horizon.etc / "secret_key").read_text()
    horizon.configure(tmp_path / "ca.pem")
    assert (horizon.etc / "secret_key").read_text() == first


def test_configure_without_horizon_installed_names_the_venv(tmp_path):
    paths = CloudPaths(tmp_path / "cloud", tmp_path / "venv")
    paths.make()
    empty = tmp_path / "empty-venv"
    horizon = Horizon(paths, CloudState(ports={"horizon": 1, "keystone": 2, "ttp": 3}), empty)
    with pytest.raises(CloudError, match=f"Horizon is not installed in {empty}"):
        horizon.configure(tmp_path / "ca.pem")
