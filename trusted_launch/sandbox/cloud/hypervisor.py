"""libvirt for each compute host, and the choice between KVM and QEMU's TCG.

Two nova-computes on one libvirtd would report one hypervisor hostname, and
placement needs it unique.  So every compute host gets its own libvirtd (and
virtlogd) in its own UTS and mount namespace: its own hostname, and private
bind mounts over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt and /var/log/libvirt.  The network namespace stays shared,
so macvtap devices and loopback services are the same for all.  nova-compute
then runs inside that namespace (``nsenter``) and talks to its own libvirtd.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

from trusted_launch.sandbox.cloud.processes import Service

LIBVIRT_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
                "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}
PROBE_MARKER = b"TLKVMOK"
PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class VirtChoice:
    """What nova.conf's [libvirt] gets, and why."""

    virt_type: str
    reason: str

    def libvirt_options(self) -> dict[str, str]:
        options = {"virt_type": self.virt_type, "hw_machine_type": "x86_64=pc"}
        if self.virt_type == "qemu":
            options.update({"cpu_mode": "custom", "cpu_models": "qemu64"})
        return options


def probe_image(path: pathlib.Path) -> pathlib.Path:
    """A 1 MiB raw disk whose boot sector prints TLKVMOK on COM1, then halts.

    With QEMU's isa-debug-exit device at port 0xf4 the write there ends QEMU.

    Real guest code, so it also serves as the cloud's tiny test image.
    """
    code = bytes.fromhex(
        "31c0"        # xor ax, ax
        "8ed8"        # mov ds, ax
        "baf803"      # mov dx, 0x3f8
        "be187c"      # mov si, 0x7c18 (the message)
        "ac"          # loop: lodsb
        "84c0"        # test al, al
        "7403"        # jz done
        "ee"          # out dx, al
        "ebf8"        # jmp loop
        "e6f4"        # done: out 0xf4, al (isa-debug-exit: QEMU quits)
        "fa"          # cli
        "f4"          # hlt
        "ebfd"        # jmp hlt
    ) + PROBE_MARKER + b"\r\n\0"
    # One Linux partition over the rest of the disk: a well-formed MBR, which
    # image format checks (glance's) require of a disk with a boot signature.
    partition = bytes.fromhex("80000200" "83feffff") + (1).to_bytes(4, "little") + \
        (2047).to_bytes(4, "little")
    sector = code.ljust(446, b"\0") + partition.ljust(64, b"\0") + b"\x55\xaa"
    path.write_bytes(sector.ljust(1024 * 1024, b"\0"))
    return path


def choose_virt_type(work_dir: pathlib.Path) -> VirtChoice:
    """kvm if a guest really runs under KVM here (the probe prints its marker), else qemu."""
    if not os.path.exists("/dev/kvm"):
        return VirtChoice("qemu", "no /dev/kvm")
    try:
        with open("/dev/kvm", "rb"):
            pass
    except OSError as exc:
        return VirtChoice("qemu", f"/dev/kvm cannot be opened: {exc.strerror}")
    if not _cpu_has_virtualization():
        return VirtChoice("qemu", "/dev/kvm exists but the CPU shows no vmx/svm flag (a nested "
                                  "KVM that cannot run a Linux guest); using QEMU's TCG with "
                                  "cpu model qemu64")
    ran, output = run_probe_guest("kvm", work_dir / "kvm-probe.img")
    if ran:
        return VirtChoice("kvm", "a probe guest ran under KVM")
    detail = output.strip().splitlines()
    why = detail[0][:160] if detail else "no output"
    return VirtChoice("qemu", f"/dev/kvm exists but a probe guest did not run under KVM "
                              f"({why}); using QEMU's TCG with cpu model qemu64")


def run_probe_guest(accel: str, image_path: pathlib.Path,
                    timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(whether the probe guest printed its marker, QEMU's output) under ``accel``."""
    image = probe_image(image_path)
    command = ["qemu-system-x86_64", "-accel", accel, "-cpu", "qemu64", "-machine", "pc",
               "-m", "16", "-nodefaults", "-display", "none", "-no-reboot",
               "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-drive", f"file={image},format=raw,if=ide"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"") + (exc.stderr or b"")
    finally:
        image.unlink(missing_ok=True)
    return PROBE_MARKER in output, output.decode(errors="replace")


def _cpu_has_virtualization() -> bool:
    flags = set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"vmx", "svm"})


def prepare_libvirt_root(root: pathlib.Path) -> None:
    """The private directories of one libvirtd (a copy of /etc/libvirt, no autostart networks)."""
    for name in LIBVIRT_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    etc = root / "etc"
    if not (etc / "libvirtd.conf").exists():
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
        for autostart in etc.glob("qemu/networks/autostart/*"):
            autostart.unlink()
        for persistent in etc.glob("qemu/*.xml"):
            persistent.unlink()


def libvirtd_service(name: str, hostname: str, root: pathlib.Path) -> Service:
    """libvirtd (pid of the service) and virtlogd in a new UTS + mount namespace."""
    mounts = "".join(f"mkdir -p {target}; mount --bind {root / key} {target}; "
                     for key, target in LIBVIRT_DIRS.items())
    script = (f"hostname {hostname}; {mounts}"
              f"virtlogd --pid-file {root / 'virtlogd.pid'} & "
              f"exec libvirtd --pid-file {root / 'libvirtd.pid'}")
    return Service(name, ["unshare", "--uts", "--mount", "--propagation", "private", "--",
                          "sh", "-ec", script])


def in_namespace(pid: int, argv: list[str]) -> list[str]:
    """``argv`` run inside the UTS + mount namespace of process ``pid``."""
    return ["nsenter", f"--target={pid}", "--uts", "--mount", "--", *argv]


def virsh(pid: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(in_namespace(pid, ["virsh", "-c", "qemu:///system", *args]),
                          capture_output=True, text=True, timeout=timeout, check=False)
