"""The guest image boots as Nova would boot it, and its agent answers the tenant.

Before any cloud: the cached image (built here if needed) started by a real
libvirtd under QEMU (TCG unless KVM can run it) with machine type ``pc``, a
virtio disk booted through GRUB, and a config drive made like Nova's
(``genisoimage -V config-2``) on an IDE cdrom holding meta_data.json,
network_data.json with a static address and ``trusted_launch/nonce``. The
guest sits on a bridge this test makes; the tenant's ``trusted-launch
verify`` runs inside a network namespace on that bridge. The guest must take
its address from network_data.json, answer with the MAC keyed from N, reject
a client holding another N, and print its trust status on the serial console.
The domain has what Nova 34 gives every qemu/kvm guest that matters here: a
virtio-rng device (without it, the guest's first getrandom() calls wait).
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests.fixtures.libvirt import running_libvirtd
from trusted_launch.crypto.nonce import encode_nonce
from trusted_launch.sandbox.cloud.guest_image import GuestImageError, build_image

TOOLS = ("mmdebstrap", "mkfs.ext4", "qemu-img", "genisoimage", "virsh", "libvirtd",
         "virtlogd", "qemu-system-x86_64", "ip")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.timeout(1800),  # a first build of the image, then a boot under TCG
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mmdebstrap, bridges, netns)"),
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (bindep.txt)"),
]
URI = "qemu:///system"
SOCKET = pathlib.Path("/run/libvirt/libvirt-sock")
SUBNET = "198.18.250"
GUEST_MAC = "fa:16:3e:00:fa:01"
AGENT_PORT = 8950
BOOT_TIMEOUT_S = 900  # TCG on a loaded 2-core machine


def run(*argv: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)


def virsh(*args: str) -> subprocess.CompletedProcess:
    return run("virsh", "-c", URI, *args)


@pytest.fixture(scope="module")
def guest_image() -> pathlib.Path:
    """$TRUSTED_LAUNCH_GUEST_IMAGE (an image built before) or the cached/built image."""
    if os.environ.get("TRUSTED_LAUNCH_GUEST_IMAGE"):
        return pathlib.Path(os.environ["TRUSTED_LAUNCH_GUEST_IMAGE"])
    try:
        return build_image().path
    except GuestImageError as exc:
        pytest.fail(f"guest image: {exc}")


@pytest.fixture(scope="module")
def libvirtd():
    """The host's libvirtd; started here (and stopped afterwards) if none runs."""
    with running_libvirtd():
        yield


@pytest.fixture(scope="module")
def tenant_net():
    """A bridge without address and a namespace holding .1 on it through a veth pair."""
    tag = secrets.token_hex(3)
    bridge, namespace, veth = f"tlgbr{tag}", f"tlg-{tag}", f"tlgv{tag}"
    commands = [("ip", "link", "add", bridge, "type", "bridge"),
                ("ip", "link", "set", bridge, "up"),
                ("ip", "netns", "add", namespace),
                ("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", namespace),
                ("ip", "link", "set", veth, "master", bridge, "up"),
                ("ip", "-n", namespace, "addr", "add", f"{SUBNET}.1/24", "dev", "eth0"),
                ("ip", "-n", namespace, "link", "set", "eth0", "up"),
                ("ip", "-n", namespace, "link", "set", "lo", "up")]
    try:
        for command in commands:
            result = run(*command)
            if result.returncode != 0:
                pytest.skip(f"network namespaces or bridges do not work here: "
                            f"{' '.join(command)}: {result.stderr.strip()}")
        yield {"bridge": bridge, "namespace": namespace}
    finally:
        run("ip", "link", "del", veth)
        run("ip", "link", "del", bridge)
        run("ip", "netns", "del", namespace)


def config_drive(directory: pathlib.Path, server_id: str, nonce: bytes) -> pathlib.Path:
    """An ISO 9660 config drive with the files Nova's driver writes."""
    tree = directory / "config-drive"
    latest = tree / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(json.dumps(
        {"uuid": server_id, "name": "guest-image-test", "hostname": "guest-image-test"}))
    (latest / "network_data.json").write_text(json.dumps({
        "links": [{"id": "tap0", "type": "bridge", "mtu": 1500,
                   "ethernet_mac_address": GUEST_MAC}],
        "networks": [{"id": "network0", "type": "ipv4", "link": "tap0",
                      "ip_address": f"{SUBNET}.10", "netmask": "255.255.255.0",
                      "routes": [], "network_id": "test"}],
        "services": []}))
    (tree / "trusted_launch").mkdir()
    (tree / "trusted_launch" / "nonce").write_bytes(encode_nonce(nonce))
    iso = directory / "disk.config"
    result = run("genisoimage", "-o", str(iso), "-ldots", "-allow-lowercase",
                 "-allow-multidot", "-l", "-quiet", "-J", "-r", "-V", "config-2", str(tree))
    assert result.returncode == 0, result.stderr
    return iso


DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>1024</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/><source file='{config}'/>
      <target dev='hda' bus='ide'/><readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/><source bridge='{bridge}'/><model type='virtio'/>
    </interface>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def booted_guest(guest_image, libvirtd, tenant_net, tmp_path_factory):
    """The image booted with a config drive; yields what the tenant knows."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="tl-guest-", dir="/var/tmp"))
    work.chmod(0o755)  # QEMU runs as libvirt-qemu
    server_id, nonce = str(uuid.uuid4()), secrets.token_bytes(32)
    base = work / "base.qcow2"
    shutil.copyfile(guest_image, base)
    disk = work / "disk.qcow2"
    assert run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
               str(disk)).returncode == 0
    nonce_file = work / "tenant-nonce"
    nonce_file.write_bytes(encode_nonce(nonce))
    nonce_file.chmod(0o600)
    name = f"tl-guest-image-{secrets.token_hex(3)}"
    console = work / "console.log"
    xml = work / "domain.xml"
    xml.write_text(DOMAIN_XML.format(name=name, uuid=str(uuid.uuid4()), disk=disk,
                                     config=config_drive(work, server_id, nonce),
                                     mac=GUEST_MAC, bridge=tenant_net["bridge"],
                                     console=console))
    created = virsh("create", str(xml))
    assert created.returncode == 0, created.stderr
    try:
        yield {"server_id": server_id, "nonce_file": nonce_file, "console": console,
               "namespace": tenant_net["namespace"], "work": work,
               "address": f"{SUBNET}.10:{AGENT_PORT}"}
    finally:
        virsh("destroy", name)
        if console.exists():  # kept for a failure's post-mortem (pytest keeps 3 runs)
            shutil.copyfile(console, tmp_path_factory.mktemp("guest") / "console.log")
        shutil.rmtree(work, ignore_errors=True)


def tenant_verify(guest: dict, nonce_file: pathlib.Path) -> subprocess.CompletedProcess:
    """``trusted-launch verify --json`` run inside the tenant's namespace."""
    return run("ip", "netns", "exec", guest["namespace"], sys.executable, "-m",
               "trusted_launch.cmd.cli", "verify", "--server-id", guest["server_id"],
               "--address", guest["address"], "--nonce-file", str(nonce_file), "--json",
               "--timeout", "5", env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def wait_for_agent(guest: dict) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while True:
        result = tenant_verify(guest, guest["nonce_file"])
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(3)


def test_guest_boots_from_disk_and_its_agent_answers_the_tenant(booted_guest):
    """One test (one boot): under ``pytest -n 2`` a second test could land on the other
    worker and boot a second guest."""
    result = wait_for_agent(booted_guest)
    console = booted_guest["console"].read_text(errors="replace")
    assert result.returncode == 0, f"{result.stderr}\n--- console tail ---\n{console[-3000:]}"
    answer = json.loads(result.stdout)
    assert answer["verified"] is True
    assert answer["server_id"] == booted_guest["server_id"]
    assert answer["ssh_host_key_fingerprint"].startswith("SHA256:")

    wrong = booted_guest["work"] / "wrong-nonce"
    wrong.write_bytes(encode_nonce(secrets.token_bytes(32)))
    wrong.chmod(0o600)
    rejected = tenant_verify(booted_guest, wrong)
    assert rejected.returncode == 1
    assert "does not prove knowledge of the launch nonce (MAC mismatch)" in rejected.stderr

    deadline = time.monotonic() + 120
    marker = "trusted launch: this VM holds its launch nonce"
    while marker not in booted_guest["console"].read_text(errors="replace"):
        assert time.monotonic() < deadline, "no trust status on the serial console"
        time.sleep(1)
    console = booted_guest["console"].read_text(errors="replace")
    assert "trusted-launch-setup: config drive /dev/sr0 mounted" in console
    assert f"SSH host key: {answer['ssh_host_key_fingerprint']}" in console
    assert f"--server-id {booted_guest['server_id']}" in console
    assert "launch receipt: absent" in console
