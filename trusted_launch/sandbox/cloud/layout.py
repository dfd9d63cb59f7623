"""Where the cloud keeps its files, its name, and the ports and passwords it chose once.

Everything lives under one directory (default ``<repo>/.cloud``): ``etc/``
configuration, ``log/`` one log per process, ``run/`` pid files, ``data/``
state.  ``state.json`` (mode 0600) holds the ports and passwords picked on the
first run, so a second run finds the same cloud.  ``TL_CLOUD_NAME`` (default
``tl``) prefixes what the machine shares (databases, RabbitMQ vhost, network
namespace and interfaces), so checkouts can each run a cloud side by side.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field

from trusted_launch.sandbox.swtpm import free_port_pair
from trusted_launch.ttp.keystore import write_private_file

REPO = pathlib.Path(__file__).resolve().parents[3]


def _cloud_name() -> str:
    name = os.environ.get("TL_CLOUD_NAME", "tl")
    # Interface names are at most 15 bytes: "<name>-veth0".
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", name):
        raise SystemExit(f"TL_CLOUD_NAME={name!r}: use 1-8 lowercase letters or digits, "
                         "starting with a letter")
    return name


CLOUD_NAME = _cloud_name()
PORT_NAMES = ("keystone", "glance", "placement", "nova", "neutron", "ttp", "horizon")
# swtpm needs two adjacent ports (server, control) per compute host.
PORT_PAIR_NAMES = ("swtpm-tl-compute-high", "swtpm-tl-compute-low")
PASSWORD_NAMES = ("admin", "demo", "service", "rabbit")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CloudState:
    """Ports and passwords of one cloud; chosen once, then read back."""

    ports: dict[str, int] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load_or_create(cls, path: pathlib.Path) -> CloudState:
        state = cls(**json.loads(path.read_text())) if path.exists() else cls()
        changed = False
        for name in PORT_NAMES:
            if name not in state.ports:
                state.ports[name], changed = _free_port(), True
        for name in PORT_PAIR_NAMES:
            if name not in state.ports:
                state.ports[name], changed = free_port_pair(), True
        for name in PASSWORD_NAMES:
            if name not in state.passwords:
                state.passwords[name], changed = secrets.token_urlsafe(18), True
        if changed:
            write_private_file(path, json.dumps(asdict(state), indent=1).encode())
        return state

    def url(self, service: str, path: str = "") -> str:
        scheme = "https" if service == "ttp" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[service]}{path}"


@dataclass(frozen=True)
class CloudPaths:
    """The directories of one cloud under ``root``."""

    root: pathlib.Path
    venv: pathlib.Path

    @property
    def etc(self) -> pathlib.Path:
        return self.root / "etc"

    @property
    def log(self) -> pathlib.Path:
        return self.root / "log"

    @property
    def run(self) -> pathlib.Path:
        return self.root / "run"

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def state_file(self) -> pathlib.Path:
        return self.root / "state.json"

    @property
    def clouds_yaml(self) -> pathlib.Path:
        return self.etc / "clouds.yaml"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def make(self) -> None:
        for directory in (self.etc, self.log, self.run, self.data):
            directory.mkdir(parents=True, exist_ok=True)
