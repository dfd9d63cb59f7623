"""Where the cloud keeps its files, and the ports and passwords it chose once.

Everything lives under one directory (default ``<repo>/.cloud``): ``etc/``
configuration, ``log/`` one log per process, ``run/`` pid files, ``data/``
state.  ``state.json`` (mode 0600) holds the ports and passwords picked on the
first run, so a second run finds the same cloud.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import socket
from dataclasses import asdict, dataclass, field

from trusted_launch.sandbox.swtpm import free_port_pair
from trusted_launch.ttp.keystore import write_private_file

REPO = pathlib.Path(__file__).resolve().parents[3]
PORT_NAMES = ("keystone", "glance", "placement", "nova", "neutron", "ttp")
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
