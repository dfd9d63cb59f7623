"""doc/operator-guide.md works verbatim: its ``sh`` blocks run, in order, in one bash.

The blocks run as written with real binaries (openssl, swtpm, swtpm_setup,
tpm2-tools, curl, sqlite3 or psql/pg_dump, and this project's console scripts)
in a temporary directory; the test only sets the variables the guide lets an
operator override (directories, ports, the database name) so that runs on one
machine do not collide. Blocks tagged ``real-tpm`` need hardware and are
skipped; ``sqlite`` / ``postgresql`` blocks run in their variant only.
"""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from oslo_config import cfg

from trusted_launch.conf import opts as conf_opts
from trusted_launch.sandbox.swtpm import free_port_pair

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = ROOT / "doc" / "operator-guide.md"
BIN_DIR = pathlib.Path(sys.executable).parent
VARIANTS = ("sqlite", "postgresql")
NOT_RUN = {"real-tpm"}
_BLOCK = re.compile(r"^```sh(?P<tags>[^\n]*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
_TOOLS = ("openssl", "swtpm", "swtpm_setup", "swtpm_localca", "tpm2_nvread", "curl")
_VARIANT_TOOLS = {"sqlite": ("sqlite3",), "postgresql": ("psql", "pg_dump", "pg_restore")}


@dataclass(frozen=True)
class Block:
    """One fenced ``sh`` block of the guide: its tags and its commands."""

    tags: frozenset[str]
    code: str


def guide_blocks(text: str) -> list[Block]:
    """Every ``sh`` block, in document order."""
    return [Block(frozenset(match["tags"].split()), match["code"])
            for match in _BLOCK.finditer(text)]


def script_for(blocks: list[Block], variant: str) -> str:
    """One bash script of the blocks that run in ``variant``, failing on the first error."""
    parts = ["set -euo pipefail"]
    for number, block in enumerate(blocks, 1):
        if block.tags & NOT_RUN or (block.tags & set(VARIANTS)) - {variant}:
            continue
        parts.append(f"echo '### guide block {number} {' '.join(sorted(block.tags))}'")
        parts.append(block.code)
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_admin_url() -> str:
    url = "postgresql://postgres@127.0.0.1/postgres"
    probe = subprocess.run(["psql", url, "-Atc", "select 1"], capture_output=True, text=True,
                           timeout=20, check=False)
    if probe.returncode != 0:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {probe.stderr.strip()}")
    return url


def _drop_postgres(admin_url: str, database: str, user: str) -> None:
    subprocess.run(["psql", admin_url, "-c", f"DROP DATABASE IF EXISTS {database}",
                    "-c", f"DROP ROLE IF EXISTS {user}"], capture_output=True, timeout=60,
                   check=False)


@pytest.fixture(params=[pytest.param("sqlite"),
                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def variant(request: pytest.FixtureRequest) -> str:
    missing = [tool for tool in (*_TOOLS, *_VARIANT_TOOLS[request.param])
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the guide's {request.param} variant needs {', '.join(missing)} "
                    "(see bindep.txt)")
    return request.param


def _run_guide(script: str, env: dict[str, str], cwd: pathlib.Path) -> tuple[int, str]:
    """Run ``script`` in its own session; stop whatever it left running (TTP, swtpm)."""
    log = cwd / "guide.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            process.wait(10)
    return code, log.read_text(errors="replace")


def test_the_guide_runs_verbatim(variant: str, tmp_path: pathlib.Path) -> None:
    swtpm_port = free_port_pair()
    env = {**os.environ,
           "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
           "HOME": str(tmp_path / "home"),
           "TL_ETC": str(tmp_path / "etc"), "TL_LIB": str(tmp_path / "lib"),
           "TTP_PORT": str(_free_port()), "SWTPM_PORT": str(swtpm_port),
           "SWTPM_DIR": str(tmp_path / "swtpm"), "BACKUP": str(tmp_path / "backup"),
           "EVENT_LOG": str(ROOT / "tests" / "data" / "eventlogs" /
                            "secureboot_binary_bios_measurements"),
           "COMPUTE_HOST": "compute-guide-1"}
    env.pop("PYTHONWARNINGS", None)
    database = user = admin_url = ""
    if variant == "postgresql":
        admin_url = _postgres_admin_url()
        suffix = secrets.token_hex(4)
        database, user = f"tl_guide_{suffix}", f"tl_guide_{suffix}"
        env.update(TTP_DB=database, TTP_DB_USER=user, PG_ADMIN_URL=admin_url)
    (tmp_path / "home").mkdir()
    try:
        code, output = _run_guide(script_for(guide_blocks(GUIDE.read_text()), variant),
                                  env, tmp_path)
    finally:
        if variant == "postgresql":
            _drop_postgres(admin_url, database, user)
    assert code == 0, output[-6000:]
    assert "Traceback" not in output and "Warning" not in output, output[-6000:]
    assert "TTP listening on https://127.0.0.1:" in output
    _check_enrollment_matches_nova_conf(tmp_path / "etc", env)


def _check_enrollment_matches_nova_conf(etc: pathlib.Path, env: dict[str, str]) -> None:
    """The guide's nova.conf names only real options, with the values enroll used."""
    conf = cfg.ConfigOpts()
    for group, options in conf_opts.list_compute_opts():
        conf.register_opts(options, group=group)
    nova_conf = etc / "nova-compute-trusted-launch.conf"
    conf([], default_config_files=[str(nova_conf)])
    sections: dict[str, dict] = {}
    cfg.ConfigParser(str(nova_conf), sections).parse()
    known = {option.dest for _, options in conf_opts.list_compute_opts() for option in options}
    assert set(sections["trusted_launch"]) <= known, set(sections["trusted_launch"]) - known
    section = conf.trusted_launch
    ak_cert = x509.load_pem_x509_certificate(pathlib.Path(section.ak_certificate_file)
                                             .read_bytes())
    common_name = ak_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == section.host_name == env["COMPUTE_HOST"]
    assert section.tcti == f"swtpm:host=127.0.0.1,port={env['SWTPM_PORT']}"
    assert section.allowed_ttp_urls == [f"https://localhost:{env['TTP_PORT']}"]
    assert section.host_security_profile in section.security_profiles


def test_blocks_are_selected_per_variant() -> None:
    blocks = [Block(frozenset(), "echo all"), Block(frozenset({"sqlite"}), "echo lite"),
              Block(frozenset({"postgresql"}), "echo pg"),
              Block(frozenset({"real-tpm"}), "echo hw")]
    sqlite_script = script_for(blocks, "sqlite")
    assert "echo all" in sqlite_script and "echo lite" in sqlite_script
    assert "echo pg" not in sqlite_script and "echo hw" not in sqlite_script
    assert "echo pg" in script_for(blocks, "postgresql")
    parsed = guide_blocks(GUIDE.read_text())
    assert any("registration" in block.tags for block in parsed)
    assert {"sqlite", "postgresql", "swtpm", "real-tpm"} <= set().union(
        *(block.tags for block in parsed))
