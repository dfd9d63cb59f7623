"""Values computed from a file's bytes, kept while those bytes cannot have changed.

A value (a base image's digest, what ``qemu-img info`` says of it) is reused
while the file's device, inode, size, mtime and ctime are those it was computed
at. Nova touches a cached base image on every launch that uses it, which moves
mtime and ctime without changing a byte; where Linux's inotify is available, a
value also survives such attribute-only changes, as long as the kernel reported
no write, truncation, rename or deletion of the file in between, and mtime did
not move without an attribute change (a write through a shared mapping raises
no inotify event). Design and limits: doc/real-cloud.md, "Image digests across
Nova's touch".
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import logging
import os
import pathlib
import struct
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB = 0x2, 0x4
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
# Not IN_CLOSE_WRITE: libvirt opens every disk of a domain, the base too, read-write only
# to lock its metadata, and closes it unwritten on each start and stop.
CONTENT_EVENTS = IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
WATCHED_EVENTS = IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
_LIBC: ctypes.CDLL | None = None


@dataclass(frozen=True)
class FileIdentity:
    """What must stay equal for a remembered value to stay valid without inotify."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: pathlib.Path) -> FileIdentity:
        info = path.stat()
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def same_file_and_size(self, other: FileIdentity) -> bool:
        return (self.device, self.inode, self.size) == (other.device, other.inode, other.size)


class _WatchState:
    """What the kernel reported for one inotify watch (one inode) so far."""

    __slots__ = ("alive", "attributes", "writes")

    def __init__(self) -> None:
        self.alive, self.writes, self.attributes = True, 0, 0


@dataclass(frozen=True)
class FileMark:
    """A file's identity at one moment and, if watched, its event counts then."""

    identity: FileIdentity
    state: _WatchState | None = None
    epoch: int = 0
    writes: int = 0
    attributes: int = 0

    def still_holds_at(self, now: FileMark) -> bool:
        """True if the bytes seen at ``self`` are still the file's bytes at ``now``."""
        if now.identity == self.identity:
            return True
        return (self.state is not None and now.state is self.state and self.state.alive
                and now.epoch == self.epoch and now.writes == self.writes
                and now.attributes > self.attributes
                and now.identity.same_file_and_size(self.identity))


class FileWatch:
    """Marks files and tells whether their bytes may have changed since (inotify).

    Without inotify (another OS, no watches left) every mark is a bare
    :class:`FileIdentity`, and any change of mtime or ctime counts as a change.
    """

    _shared: FileWatch | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, use_inotify: bool = True) -> None:
        self._lock = threading.Lock()
        self._states: dict[int, _WatchState] = {}
        self._epoch = 0  # moves on a queue overflow: every earlier mark is void
        self._fd = _inotify_init() if use_inotify else None

    @classmethod
    def shared(cls) -> FileWatch:
        """The process's one watch (one inotify descriptor for all memos)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def uses_inotify(self) -> bool:
        return self._fd is not None

    def mark(self, path: pathlib.Path) -> FileMark:
        """The file's identity now (FileNotFoundError if absent), watched if possible."""
        before = FileIdentity.of(path)
        with self._lock:
            self._drain()
            state = self._watch(path)
            self._drain()
            now = FileIdentity.of(path)
            if state is None or not now.same_file_and_size(before) or not state.alive:
                return FileMark(now)  # replaced while being watched: identity only
            return FileMark(now, state, self._epoch, state.writes, state.attributes)

    def _watch(self, path: pathlib.Path) -> _WatchState | None:
        if self._fd is None:
            return None
        wd = _add_watch(self._fd, path)
        if wd < 0:
            return None
        state = self._states.get(wd)
        if state is None or not state.alive:  # a new watch, or a freed number reused
            state = self._states[wd] = _WatchState()
        return state

    def _drain(self) -> None:
        """Count every event the kernel has queued so far (never waits for one).

        Reads only what FIONREAD says is queued: eventlet's green ``os.read``
        waits for data on a non-blocking descriptor instead of raising EAGAIN.
        """
        while self._fd is not None and (queued := _queued_bytes(self._fd)) > 0:
            data = os.read(self._fd, queued)
            offset = 0
            while offset + EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
                offset += EVENT_HEADER.size + length
                self._count(wd, mask)

    def _count(self, wd: int, mask: int) -> None:
        if mask & IN_Q_OVERFLOW:
            self._epoch += 1
            return
        state = self._states.get(wd)
        if state is None:
            return
        if mask & CONTENT_EVENTS:
            state.writes += 1
        if mask & IN_ATTRIB:
            state.attributes += 1
        if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
            state.alive = False


class FileValues(Generic[T]):
    """Values computed from files, each computed once while its file's bytes hold.

    ``get(path, key, compute)`` computes under a per-file lock, so two launches of
    one image compute once; a file that changes while ``compute`` reads it raises
    OSError rather than remembering a value for bytes that are gone.
    """

    def __init__(self, watch: FileWatch | None = None) -> None:
        self.watch = watch if watch is not None else FileWatch.shared()
        self._values: dict[tuple[str, str], tuple[FileMark, T]] = {}
        self._lock = threading.Lock()
        self._file_locks: dict[str, threading.Lock] = {}
        self.computed = 0  # how many times ``compute`` actually ran

    def get(self, path: pathlib.Path, key: str, compute: Callable[[], T],
            load: Callable[[FileIdentity], T | None] | None = None,
            store: Callable[[FileIdentity, T], None] | None = None) -> T:
        """The value for ``(path, key)``: remembered, else ``load(identity)``, else computed.

        ``load`` reads a value kept elsewhere (a sidecar file) for exactly this
        identity; ``store`` keeps a computed value there, with the identity the
        file had when it was read.
        """
        with self._lock_for(path):
            mark = self.watch.mark(path)
            entry = self._values.get((str(path), key))
            if entry is not None and entry[0].still_holds_at(mark):
                self._values[(str(path), key)] = (mark, entry[1])
                return entry[1]
            value = load(mark.identity) if load is not None else None
            if value is None:
                value = compute()
                self.computed += 1
                if not mark.still_holds_at(self.watch.mark(path)):
                    raise OSError(f"{path} changed while it was being read")
                if store is not None:
                    store(mark.identity, value)
            self._values[(str(path), key)] = (mark, value)
            return value

    def _lock_for(self, path: pathlib.Path) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(str(path), threading.Lock())


def _queued_bytes(fd: int) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count, True)
    return count[0]


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _inotify_init() -> int | None:
    try:
        fd = _libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    except (OSError, AttributeError) as exc:
        LOG.info("inotify unavailable (%s): a touched base image is read again", exc)
        return None
    if fd < 0:
        LOG.warning("inotify_init1 failed (%s): a touched base image is read again",
                    os.strerror(ctypes.get_errno()))
        return None
    return fd


def _add_watch(fd: int, path: pathlib.Path) -> int:
    wd = _libc().inotify_add_watch(fd, os.fsencode(path), WATCHED_EVENTS)
    if wd < 0:
        code = ctypes.get_errno()
        if code == errno.ENOENT:
            raise FileNotFoundError(code, os.strerror(code), str(path))
        LOG.warning("cannot watch %s (%s): it is read again after any touch",
                    path, os.strerror(code))
    return wd
