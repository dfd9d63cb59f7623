"""A value computed from a base image survives Nova's touch and nothing else."""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import pathlib

import pytest

from trusted_launch.compute import file_watch
from trusted_launch.compute.encrypted_image import BaseDiskInfos
from trusted_launch.compute.file_watch import FileValues, FileWatch
from trusted_launch.compute.image_digest import BaseImageDigests, sidecar_path

CONTENT = b"base image " * 4096


@pytest.fixture
def base(tmp_path) -> pathlib.Path:
    path = tmp_path / "_base" / "0123abcd"
    path.parent.mkdir()
    path.write_bytes(CONTENT)
    day_ago = path.stat().st_mtime_ns - 86400 * 10**9
    os.utime(path, ns=(day_ago, day_ago))  # any later write moves mtime, however soon
    return path


@pytest.fixture
def watch() -> FileWatch:
    watch = FileWatch()
    if not watch.uses_inotify:
        pytest.skip("this kernel offers no inotify")
    return watch


def _digest(digests: BaseImageDigests, path: pathlib.Path) -> bytes:
    return digests.digest(path, "sha256").value


def _flip_byte_keeping_mtime(path: pathlib.Path, offset: int = 4096) -> None:
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_nova_touching_the_base_keeps_the_digest(base, watch) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    first = _digest(digests, base)
    for _ in range(3):
        os.utime(base)  # what Nova's image cache does on every launch using the base
        assert _digest(digests, base) == first
    assert digests.computed == 1


def test_without_inotify_a_touch_means_hashing_again(base) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=FileWatch(use_inotify=False))
    _digest(digests, base)
    os.utime(base)
    _digest(digests, base)
    assert digests.computed == 2


def test_in_place_write_with_mtime_restored_is_hashed_again(base, watch) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    os.utime(base)
    _flip_byte_keeping_mtime(base)
    assert _digest(digests, base) == hashlib.sha256(base.read_bytes()).digest()
    assert digests.computed == 2


def test_write_through_a_shared_mapping_is_hashed_again(base, watch) -> None:
    """No inotify event for it; mtime moved without an attribute change."""
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    with open(base, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        mapped[100] ^= 0x01
    assert _digest(digests, base) == hashlib.sha256(base.read_bytes()).digest()
    assert digests.computed == 2


def test_libvirt_locking_the_base_read_write_keeps_the_digest(base, watch) -> None:
    """libvirt opens a domain's disks read-write to lock them, and writes nothing."""
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    for _ in range(2):  # a domain's start and stop
        with open(base, "r+b") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX)
            os.chown(base, os.getuid(), os.getgid())  # its DAC driver relabels too
    os.utime(base)  # the next launch: Nova's touch
    _digest(digests, base)
    assert digests.computed == 1


def test_truncation_is_hashed_again(base, watch) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    os.truncate(base, 10)
    assert _digest(digests, base) == hashlib.sha256(CONTENT[:10]).digest()


def test_a_replacement_with_the_same_size_and_times_is_hashed_again(base, watch) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    before = base.stat()
    other = base.with_name("other")
    other.write_bytes(CONTENT.upper())
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, base)
    assert _digest(digests, base) == hashlib.sha256(CONTENT.upper()).digest()


def test_deleted_and_downloaded_again_is_hashed_again(base, watch) -> None:
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    base.unlink()
    base.write_bytes(CONTENT)
    _digest(digests, base)
    assert digests.computed == 2


def test_a_file_changing_while_it_is_read_is_not_remembered(base, watch) -> None:
    values: FileValues[bytes] = FileValues(watch)

    def read_while_written() -> bytes:
        seen = base.read_bytes()
        with open(base, "ab") as handle:
            handle.write(b"more")
        return seen

    with pytest.raises(OSError, match="changed while it was being read"):
        values.get(base, "bytes", read_while_written)
    assert values.get(base, "bytes", base.read_bytes) == CONTENT + b"more"


def test_sidecar_records_the_identity_the_digest_was_computed_at(base, watch) -> None:
    _digest(BaseImageDigests(watch=watch), base)
    assert sidecar_path(base, "sha256").exists()
    os.utime(base)  # a new nova-compute cannot know what happened before it started
    restarted = BaseImageDigests(watch=watch)
    _digest(restarted, base)
    assert restarted.computed == 1


def test_disk_info_survives_a_touch_but_not_a_write(base, watch) -> None:
    infos = BaseDiskInfos(watch)
    assert infos.inspect(base).format == "raw"
    os.utime(base)
    infos.inspect(base)
    assert infos.inspected == 1
    with open(base, "ab") as handle:
        handle.write(b"x")
    assert infos.inspect(base).virtual_size == len(CONTENT) + 1
    assert infos.inspected == 2


def test_looking_up_never_reads_an_empty_event_queue(base, watch, monkeypatch) -> None:
    """eventlet's green os.read waits on an empty non-blocking descriptor: a hang."""
    real_read = os.read

    def read_like_eventlet(fd: int, size: int) -> bytes:
        assert file_watch._queued_bytes(fd) > 0, "read of an empty inotify queue"
        return real_read(fd, size)

    monkeypatch.setattr(file_watch.os, "read", read_like_eventlet)
    digests = BaseImageDigests(use_sidecars=False, watch=watch)
    _digest(digests, base)
    os.utime(base)
    _digest(digests, base)
    _digest(digests, base)
    assert digests.computed == 1
