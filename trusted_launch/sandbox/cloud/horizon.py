"""Horizon with the trusted-launch dashboard plugin, served by gunicorn on a loopback port.

Horizon runs from its own virtualenv (``.horizon-venv``, pinned in
``tools/cloud/horizon-requirements.txt``; doc/dashboard.md says why), with
this repository on its ``PYTHONPATH`` for ``trusted_launch_dashboard``. The
plugin is enabled the way Horizon plugins are: its ``enabled/_NNNN_*.py``
files are linked into ``openstack_dashboard/local/enabled/``. The settings
module, the Django secret key and the TTP reader token (both 0600) live in
``.cloud/etc/horizon/``; static files are collected and compressed before
gunicorn starts, and served by WhiteNoise from the same process.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess

from trusted_launch.sandbox.cloud.layout import REPO, CloudPaths, CloudState
from trusted_launch.sandbox.cloud.processes import CloudError, Service
from trusted_launch.ttp.keystore import write_private_file

SETTINGS_MODULE = "tl_horizon_settings"
WSGI_APP = "trusted_launch.sandbox.cloud.horizon_wsgi:application"
PLUGIN_ENABLED = REPO / "trusted_launch_dashboard" / "enabled"
READER_TOKEN = "ttp-reader-token"  # noqa: S105 - a file name, not a secret
LOGIN_PATH = "/auth/login/"
MANAGE_TIMEOUT_S = 900  # compressing Horizon's SCSS takes minutes on a loaded machine


def default_venv() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TL_HORIZON_VENV", REPO / ".horizon-venv"))


class Horizon:
    """The dashboard of one cloud: its files under ``etc/horizon`` and its process."""

    def __init__(self, paths: CloudPaths, state: CloudState, venv: pathlib.Path) -> None:
        self.paths, self.state, self.venv = paths, state, venv
        self.etc = paths.etc / "horizon"
        self.data = paths.data / "horizon"

    @property
    def installed(self) -> bool:
        return (self.venv / "bin" / "gunicorn").exists() and bool(self._dashboard_dirs())

    @property
    def reader_token_file(self) -> pathlib.Path:
        return self.etc / READER_TOKEN

    def _dashboard_dirs(self) -> list[pathlib.Path]:
        return sorted(self.venv.glob("lib/python3*/site-packages/openstack_dashboard"))

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                   PYTHONPATH=f"{self.etc}:{REPO}", DJANGO_SETTINGS_MODULE=SETTINGS_MODULE)
        return env

    def configure(self, ttp_ca: pathlib.Path) -> None:
        """Settings module, secret key, gunicorn config, the plugin's enabled files."""
        if not self.installed:
            raise CloudError(f"Horizon is not installed in {self.venv} "
                             "(tools/run-cloud.sh installs it)")
        for directory in (self.etc, self.data / "sessions", self.data / "static"):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data / "sessions", 0o700)
        secret = self.etc / "secret_key"
        if not secret.exists():
            write_private_file(secret, secrets.token_urlsafe(48).encode())
        (self.etc / f"{SETTINGS_MODULE}.py").write_text(self._settings(ttp_ca))
        (self.etc / "gunicorn.conf.py").write_text(
            f'wsgi_app = "{WSGI_APP}"\nbind = "127.0.0.1:{self.state.ports["horizon"]}"\n'
            'worker_class = "gthread"\nworkers = 1\nthreads = 8\ntimeout = 300\n'
            'accesslog = "-"\n'
            # Access log lines without the query string: nothing secret goes in a URL anyway.
            'access_log_format = \'%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss\'\n')
        for dashboard in self._dashboard_dirs():
            enabled = dashboard / "local" / "enabled"
            for source in sorted(PLUGIN_ENABLED.glob("_[0-9]*.py")):
                link = enabled / source.name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(source)

    def _settings(self, ttp_ca: pathlib.Path) -> str:
        keystone = self.state.url("keystone", "/v3")
        return f'''"""Horizon settings of the sandbox cloud (written by run-cloud.sh)."""
from openstack_dashboard.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECRET_KEY = open({str(self.etc / "secret_key")!r}).read().strip()
OPENSTACK_HOST = "127.0.0.1"
OPENSTACK_KEYSTONE_URL = {keystone!r}
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
OPENSTACK_API_VERSIONS = {{"identity": 3}}
SESSION_ENGINE = "django.contrib.sessions.backends.file"
SESSION_FILE_PATH = {str(self.data / "sessions")!r}
CACHES = {{"default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}}}
STATIC_ROOT = {str(self.data / "static")!r}
STATIC_URL = "/static/"
COMPRESS_OFFLINE = True
COMPRESS_ROOT = STATIC_ROOT
OPENSTACK_NEUTRON_NETWORK = {{"enable_router": False, "enable_quotas": False,
                             "enable_fip_topology_check": False}}
TRUSTED_LAUNCH = {{
    "ttp_url": {self.state.url("ttp")!r},
    "ca_file": {str(ttp_ca)!r},
    "auth": "token_file",
    "token_file": {str(self.reader_token_file)!r},
    "host_status_max_age": 300,
}}
'''

    def prepare_static(self, run) -> None:
        """collectstatic and compress, as a deployment does before serving."""
        manage = [str(self.venv / "bin" / "python"), "-m", "django"]
        for command in (["collectstatic", "--noinput", "--verbosity", "0"],
                        ["compress", "--force", "--verbosity", "0"]):
            run([*manage, *command], self.env(), MANAGE_TIMEOUT_S)

    def service(self) -> Service:
        return Service("horizon", [str(self.venv / "bin" / "gunicorn"), "--config",
                                   str(self.etc / "gunicorn.conf.py")],
                       cwd=self.etc, env=self.env())


def make_reader_token(manage: list[str], target: pathlib.Path, env: dict[str, str]) -> None:
    """A TTP API token of role reader, straight into a 0600 file (never through a log)."""
    created = subprocess.run([*manage, "token", "create", "--role", "reader", "--description",
                              "run-cloud.sh horizon"], capture_output=True, text=True, env=env,
                             check=False, timeout=120)
    if created.returncode != 0:
        raise CloudError(f"horizon: reader token: {created.stderr.strip()}")
    write_private_file(target, (created.stdout.strip() + "\n").encode())
