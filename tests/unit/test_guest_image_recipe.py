"""The guest image recipe: what goes in, the cache key, and the boot sector."""

from __future__ import annotations

import pathlib

from trusted_launch.sandbox.cloud import guest_image
from trusted_launch.sandbox.cloud.guest_image import (
    DISK_BYTES,
    PARTITION_START,
    SECTOR,
    agent_sources,
    master_boot_record,
    recipe_digest,
)


def relative(paths: list[pathlib.Path]) -> set[str]:
    return {str(path.relative_to(guest_image.PACKAGE_ROOT)) for path in paths}


def test_the_image_gets_the_agent_and_what_it_imports_and_no_other_party():
    names = relative(agent_sources())
    assert {"__init__.py", "cmd/__init__.py", "cmd/guest.py", "guest/agent.py",
            "guest/network_config.py", "crypto/vm_challenge.py", "crypto/nonce.py"} <= names
    assert not {name for name in names
                if name.split("/")[0] in {"compute", "ttp", "scheduler", "client", "tpm"}}


def test_the_cache_key_changes_with_any_agent_source(tmp_path, monkeypatch):
    sources = agent_sources()
    before = recipe_digest(sources)
    copy = tmp_path / "trusted_launch"
    for path in sources:
        target = copy / path.relative_to(guest_image.PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    monkeypatch.setattr(guest_image, "PACKAGE_ROOT", copy)
    copied = sorted(copy.rglob("*.py"))
    assert recipe_digest(copied) == before
    (copy / "guest" / "agent.py").write_bytes((copy / "guest" / "agent.py").read_bytes() + b"#")
    assert recipe_digest(copied) != before


def test_boot_record_keeps_grub_code_and_one_bootable_linux_partition():
    code = bytes(range(256)) * 2
    record = master_boot_record(code, "0123abcd" + "0" * 56)
    assert len(record) == SECTOR
    assert record[:440] == code[:440]
    assert record[440:444] == bytes.fromhex("0123abcd")
    entry = record[446:462]
    assert entry[0] == 0x80 and entry[4] == 0x83
    assert int.from_bytes(entry[8:12], "little") == PARTITION_START // SECTOR
    assert int.from_bytes(entry[12:16], "little") == (DISK_BYTES - PARTITION_START) // SECTOR
    assert record[462:510] == bytes(48)
    assert record[510:] == b"\x55\xaa"
