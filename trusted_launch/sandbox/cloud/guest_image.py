"""The guest image of the real cloud: Debian bookworm with ``trusted-launch-guest`` inside.

Built from Debian packages without mounting anything: ``mmdebstrap`` (the
host's apt sources) makes the root tree; the guest agent's own modules (the
closure of ``trusted_launch.cmd.guest``'s imports) are copied in with a
launcher and three systemd units (mount the config drive labelled
``config-2`` under a root-only directory, write the network from its
``network_data.json``, make SSH host keys; run the agent; print
``trusted-launch-guest --status`` on the serial console and in /etc/motd);
``mkfs.ext4 -d`` fills a partition at 1 MiB of an MBR disk whose boot sector
and gap hold GRUB (``boot.img`` and a ``core.img`` with an embedded menu), so
Nova boots it as a plain disk; ``qemu-img convert -O qcow2 -c`` compresses it.
The result is cached under ``~/.cache/trusted-launch/images`` by the SHA-256
of every input (recipe, package list, apt sources, agent sources).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import trusted_launch

PACKAGE_ROOT = pathlib.Path(trusted_launch.__file__).resolve().parent
AGENT_ENTRY = "trusted_launch.cmd.guest"
SUITE = "bookworm"
APT_SOURCES = pathlib.Path("/etc/apt/sources.list.d/debian.sources")
PACKAGES = ("linux-image-cloud-amd64", "systemd-sysv", "udev", "kmod", "python3",
            "python3-cryptography", "iproute2", "openssh-server", "grub-pc-bin")
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*",
                 "/usr/share/info/*")
ROOT_LABEL = "tl-root"
DISK_BYTES = 1 << 30
PARTITION_START = 1 << 20
SECTOR = 512
BOOT_CODE_BYTES = 440  # boot.img's code; the partition table follows it
# no_timer_check (as distribution cloud images have): Linux's boot-time IO-APIC timer
# check can miss its ticks in a TCG guest starved of CPU and panic ("IO-APIC + timer
# doesn't work!"); the emulated timer works, the check only misjudges it.
KERNEL_COMMAND_LINE = (f"root=LABEL={ROOT_LABEL} rw console=tty0 console=ttyS0,115200n8 "
                       "net.ifnames=0 no_timer_check")
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "linux", "boot", "echo", "serial",
                "terminal")
GRUB_EMBEDDED_CONFIG = f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set root=(hd0,msdos1)
echo 'trusted-launch guest image: booting'
linux /vmlinuz {KERNEL_COMMAND_LINE}
initrd /initrd.img
boot
"""
# A small initramfs (built once, fast to unpack under TCG): only what finds the root disk.
INITRAMFS_CONFIG = "MODULES=list\nFSTYPE=ext4\n"
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\n"
SSH_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSHD_HOST_KEY_CONFIG = f"HostKey {SSH_HOST_KEY}\n"
CONFIG_DRIVE_MOUNT = "/run/trusted-launch/config-drive"
NETWORK_DIR = "/run/systemd/network"
STATUS_MARKER = "trusted launch:"
LAUNCHER = """#!/usr/bin/python3
\"\"\"trusted-launch-guest, as installed by the trusted launch guest image.\"\"\"
import sys

from trusted_launch.cmd.guest import main

sys.exit(main())
"""
SETUP_SCRIPT = f"""#!/bin/sh
# Trusted launch guest setup: mount the config drive (label config-2) read-only
# under a root-only directory, set the static network of its network_data.json
# (systemd-networkd runs only where DHCP is needed: it takes long to start under
# TCG), make this VM's own SSH host key (Ed25519 only: RSA takes long under TCG).
set -u
MOUNT={CONFIG_DRIVE_MOUNT}
install -d -m 0700 /run/trusted-launch
install -d -m 0700 "$MOUNT"
# Wait until udev has handled every device (the cdrom appears once udev has loaded
# ata_piix and sr_mod); a loaded host can make udevd answer slowly, so ask again.
for attempt in $(seq 30); do
    udevadm settle --timeout=10 && break
done
dev=$(blkid -c /dev/null -l -o device -t LABEL=config-2 ||
      blkid -c /dev/null -l -o device -t LABEL=CONFIG-2 || true)
if [ -z "$dev" ]; then
    echo "trusted-launch-setup: no config drive (no filesystem labelled config-2)"
elif mountpoint -q "$MOUNT" || mount -o ro "$dev" "$MOUNT"; then
    echo "trusted-launch-setup: config drive $dev mounted"
fi
trusted-launch-guest --configure-network {NETWORK_DIR} ||
    systemctl start --no-block systemd-networkd.service  # some interface needs DHCP
[ -e {SSH_HOST_KEY} ] || ssh-keygen -q -t ed25519 -N "" -f {SSH_HOST_KEY}
"""
UNITS = {
    "trusted-launch-setup.service": """[Unit]
Description=Trusted launch: config drive, network configuration, SSH host keys
After=systemd-udevd.service systemd-remount-fs.service
Wants=systemd-udevd.service
Before=systemd-networkd.service ssh.service trusted-launch-guest.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/trusted-launch/guest-setup
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
""",
    "trusted-launch-guest.service": f"""[Unit]
Description=Trusted launch guest agent: answers the tenant's challenge on port 8950
After=trusted-launch-setup.service network.target
Requires=trusted-launch-setup.service
ConditionPathExists={CONFIG_DRIVE_MOUNT}/trusted_launch/nonce

[Service]
ExecStart=/usr/bin/trusted-launch-guest --motd /etc/motd
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
""",
    "trusted-launch-status.service": """[Unit]
Description=Trusted launch status on the serial console
After=trusted-launch-guest.service

[Service]
Type=oneshot
ExecStart=/usr/bin/trusted-launch-guest --status --motd /etc/motd
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
""",
}
ENABLED_UNITS = tuple(UNITS)
FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"
RECIPE = pathlib.Path(__file__).resolve()


class GuestImageError(Exception):
    """The guest image cannot be built; the message names the step that failed."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built (or cached) guest image."""

    path: pathlib.Path
    digest: str
    size_bytes: int
    virtual_size_bytes: int
    build_seconds: float
    cached: bool
    steps_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        document = dataclasses.asdict(self)
        document["path"] = str(self.path)
        return document


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "trusted-launch" / "images"


def _module_path(module: str) -> pathlib.Path | None:
    relative = pathlib.Path(*module.split(".")[1:])
    for candidate in (PACKAGE_ROOT / relative / "__init__.py",
                      (PACKAGE_ROOT / relative).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "trusted_launch"}


def agent_sources() -> list[pathlib.Path]:
    """Files of ``trusted_launch`` the agent imports (with their packages' __init__)."""
    found: set[pathlib.Path] = set()
    pending = [AGENT_ENTRY]
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            path = _module_path(".".join(parts[:depth]))
            if path is not None and path not in found:
                found.add(path)
                pending.extend(_imported_modules(path))
    return sorted(found)


def recipe_digest(sources: list[pathlib.Path]) -> str:
    """SHA-256 over everything the image is made of: this recipe (the module's own
    source: packages, units, GRUB, disk layout), the apt sources and the agent's sources."""
    digest = hashlib.sha256()
    for name, data in ((RECIPE, RECIPE.read_bytes()), (APT_SOURCES, APT_SOURCES.read_bytes()),
                       *((path.relative_to(PACKAGE_ROOT), path.read_bytes())
                         for path in sources)):
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _run(step: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuestImageError(f"{step}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise GuestImageError(f"{step} failed (exit {result.returncode}):\n{tail}")
    return result


def _bootstrap(root: pathlib.Path, deb_cache: pathlib.Path) -> None:
    deb_cache.mkdir(parents=True, exist_ok=True)
    command = ["mmdebstrap", "--variant=minbase", "--mode=root",
               "--include=" + ",".join(PACKAGES),
               "--aptopt=Acquire::Check-Valid-Until \"false\"",
               "--skip=download/empty",
               "--essential-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d "
               "\"$1\"/usr/share/initramfs-tools/modules.d",
               f"--essential-hook=printf '{INITRAMFS_CONFIG}' > "
               "\"$1\"/etc/initramfs-tools/conf.d/trusted-launch.conf",
               f"--essential-hook=printf '{INITRAMFS_MODULES}' > "
               "\"$1\"/usr/share/initramfs-tools/modules.d/trusted-launch",
               '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
               f'--setup-hook=sync-in {deb_cache} /var/cache/apt/archives/',
               f'--customize-hook=sync-out /var/cache/apt/archives {deb_cache}',
               *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
               SUITE, str(root), str(APT_SOURCES)]
    _run("mmdebstrap", command, timeout=900)


def _write(path: pathlib.Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _install_agent(root: pathlib.Path, sources: list[pathlib.Path]) -> None:
    site = root / "usr/lib/python3/dist-packages"
    for source in sources:
        target = site / "trusted_launch" / source.relative_to(PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    _write(root / "usr/bin/trusted-launch-guest", LAUNCHER, 0o755)
    _write(root / "usr/lib/trusted-launch/guest-setup", SETUP_SCRIPT, 0o755)
    for name, text in UNITS.items():
        _write(root / "etc/systemd/system" / name, text)
    _write(root / "etc/fstab", FSTAB)
    _write(root / "etc/ssh/sshd_config.d/trusted-launch.conf", SSHD_HOST_KEY_CONFIG)
    _write(root / "etc/hostname", "trusted-guest\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every VM makes its own at first boot
    _run("systemctl enable", ["chroot", str(root), "systemctl", "enable", *ENABLED_UNITS])
    _run("agent self-check in the image",
         ["chroot", str(root), "trusted-launch-guest", "--help"])


def _grub_core(root: pathlib.Path) -> tuple[bytes, bytes]:
    """(boot.img, core.img) made by the image's own grub-mkimage."""
    config, core_img = "root/grub-embedded.cfg", "root/core.img"  # inside the chroot
    _write(root / config, GRUB_EMBEDDED_CONFIG)
    _run("grub-mkimage", ["chroot", str(root), "grub-mkimage", "-O", "i386-pc",
                          "-o", f"/{core_img}", "-c", f"/{config}",
                          "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES])
    core = (root / core_img).read_bytes()
    (root / core_img).unlink()
    (root / config).unlink()
    boot = (root / "usr/lib/grub/i386-pc/boot.img").read_bytes()
    if len(core) > PARTITION_START - SECTOR:
        raise GuestImageError(f"GRUB core.img is {len(core)} bytes: it does not fit the "
                              f"{PARTITION_START - SECTOR}-byte gap before the partition")
    return boot, core


def master_boot_record(boot_code: bytes, digest: str) -> bytes:
    """GRUB's boot code, a disk signature and one bootable Linux partition (LBA only)."""
    first, count = PARTITION_START // SECTOR, (DISK_BYTES - PARTITION_START) // SECTOR
    no_chs = b"\xfe\xff\xff"
    entry = (b"\x80" + no_chs + b"\x83" + no_chs + first.to_bytes(4, "little")
             + count.to_bytes(4, "little"))
    record = (boot_code[:BOOT_CODE_BYTES] + bytes.fromhex(digest[:8]) + b"\0\0" + entry
              + bytes(48) + b"\x55\xaa")
    return record


def _make_disk(root: pathlib.Path, raw: pathlib.Path, digest: str) -> None:
    boot, core = _grub_core(root)
    with open(raw, "wb") as handle:
        handle.truncate(DISK_BYTES)
    size_kib = (DISK_BYTES - PARTITION_START) // 1024
    _run("mkfs.ext4 -d", ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root),
                          "-E", f"offset={PARTITION_START},nodiscard", str(raw),
                          f"{size_kib}k"])
    with open(raw, "r+b") as handle:
        handle.write(master_boot_record(boot, digest))
        handle.seek(SECTOR)
        handle.write(core)


def _virtual_size(path: pathlib.Path) -> int:
    info = _run("qemu-img info", ["qemu-img", "info", "--output=json", str(path)])
    return int(json.loads(info.stdout)["virtual-size"])


def _timed(steps: dict[str, float], name: str, action) -> None:
    started = time.monotonic()
    action()
    steps[name] = round(time.monotonic() - started, 1)


def build_image(cache_dir: pathlib.Path | None = None, *, force: bool = False,
                log=print) -> GuestImage:
    """The cached image for the current inputs, building it first if needed."""
    if os.geteuid() != 0:
        raise GuestImageError("building the guest image needs root (mmdebstrap --mode=root, "
                              "chroot, and mkfs.ext4 -d keeping root-owned files)")
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img", "chroot"):
        if shutil.which(tool) is None:
            raise GuestImageError(f"{tool} is not installed (apt: mmdebstrap e2fsprogs "
                                  "qemu-utils)")
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then find it
        return _cached_or_built(cache, force, log)


def _cached_or_built(cache: pathlib.Path, force: bool, log) -> GuestImage:
    sources = agent_sources()
    digest = recipe_digest(sources)
    image = cache / f"guest-{digest[:16]}.qcow2"
    meta = image.with_suffix(".json")
    if image.is_file() and meta.is_file() and not force:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        return GuestImage(image, digest, image.stat().st_size, _virtual_size(image),
                          recorded["build_seconds"], True, recorded.get("steps_s", {}))
    steps: dict[str, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="guest-image-", dir=cache) as work:
        root, raw = pathlib.Path(work) / "root", pathlib.Path(work) / "disk.raw"
        partial = pathlib.Path(work) / image.name
        log(f"guest image {digest[:16]}: mmdebstrap {SUITE} ({len(PACKAGES)} packages)")
        _timed(steps, "mmdebstrap", lambda: _bootstrap(root, cache.parent / "debs"))
        log(f"guest image: agent ({len(sources)} modules), units, GRUB, ext4")
        _timed(steps, "agent_and_units", lambda: _install_agent(root, sources))
        _timed(steps, "grub_and_mkfs", lambda: _make_disk(root, raw, digest))
        log("guest image: qemu-img convert -O qcow2 -c")
        _timed(steps, "qcow2_convert", lambda: _run(
            "qemu-img convert", ["qemu-img", "convert", "-O", "qcow2", "-c", str(raw),
                                 str(partial)], timeout=900))
        os.replace(partial, image)
    seconds = round(time.monotonic() - started, 1)
    built = GuestImage(image, digest, image.stat().st_size, _virtual_size(image), seconds,
                       False, steps)
    meta.write_text(json.dumps(built.to_json(), indent=2), encoding="utf-8")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-guest-image", description="Build (or find cached) the trusted launch "
        "guest image: Debian bookworm with trusted-launch-guest as a service.")
    parser.add_argument("--cache-dir", type=pathlib.Path, help="default: "
                        "~/.cache/trusted-launch/images")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    try:
        image = build_image(args.cache_dir, force=args.force, log=log)
    except GuestImageError as exc:
        print(f"build-guest-image: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(image.to_json()))
    else:
        print(f"{image.path}: {image.size_bytes / 2**20:.0f} MiB qcow2 "
              f"({image.virtual_size_bytes / 2**30:.0f} GiB virtual), "
              + ("cached, " if image.cached else "")
              + f"built in {image.build_seconds:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in image.steps_s.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
