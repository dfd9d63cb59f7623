"""Mutual authentication of tenant and VM over N, and the session it opens.

``POST /v1/mutual/start`` ``{"server_id", "c1"}`` -> ``{"server_id",
"ssh_host_key_fingerprint", "ssh_host_key", "c2", "mac_vm"}``;
``POST /v1/mutual/finish`` ``{"c2", "mac_client"}`` -> ``{"session", "expires_in",
"mac"}``; ``POST /v1/mutual/authorized-keys`` ``{"session", "counter",
"ssh_public_key", "mac"}`` -> ``{"authorized", "fingerprint", "counter", "mac"}``.

A started exchange lives ``exchange_ttl`` seconds and is consumed by the first
finish, right or wrong (a finish cannot be replayed or retried). A session
accepts each counter once, in increasing order. The SSH key is written only
after the session MAC verifies.
"""

from __future__ import annotations

import hmac
import os
import pathlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.vm_challenge import (
    MAX_CHALLENGE,
    MIN_CHALLENGE,
    mutual_key,
    mutual_mac,
    session_key,
    session_mac,
    ssh_fingerprint,
)
from trusted_launch.guest.errors import BadRequest
from trusted_launch.guest.identity import GuestIdentity

C2_SIZE = 32
MAX_SSH_KEY_LINE = 8192
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com"})
_COMMENT_RE = re.compile(r"[\x21-\x7e]{0,255}")


@dataclass
class _Exchange:
    c1: bytes
    started: float


@dataclass
class _Session:
    key: bytes = field(repr=False)
    expires: float
    counter: int = 0


def normalise_ssh_key(line: object) -> tuple[str, str]:
    """``(line, fingerprint)`` of one plain OpenSSH public key line (no options); else 400."""
    if not isinstance(line, str) or not 0 < len(line) <= MAX_SSH_KEY_LINE:
        raise BadRequest(f"'ssh_public_key' must be a string of at most {MAX_SSH_KEY_LINE} "
                         "characters")
    if not line.isascii() or any(c in line for c in "\r\n\0"):
        raise BadRequest("'ssh_public_key' must be one line of ASCII")
    parts = line.split()
    if len(parts) not in (2, 3) or parts[0] not in SSH_KEY_TYPES:
        raise BadRequest("'ssh_public_key' must be '<key type> <base64> [comment]' with a "
                         "known key type and no options")
    if len(parts) == 3 and not _COMMENT_RE.fullmatch(parts[2]):
        raise BadRequest("'ssh_public_key' comment must be printable ASCII without spaces")
    try:
        fingerprint = ssh_fingerprint(line)
    except ValueError as exc:
        raise BadRequest(f"'ssh_public_key': {exc}") from None
    return " ".join(parts), fingerprint


def append_authorized_key(path: pathlib.Path, line: str) -> bool:
    """Append ``line`` to an authorized_keys file (0600, no symlink); False if present."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = " ".join(line.split()[:2])
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "r+", encoding="ascii", errors="replace") as handle:
        existing = handle.read()
        if any(" ".join(entry.split()[:2]) == key for entry in existing.splitlines()):
            return False
        if existing and not existing.endswith("\n"):
            handle.write("\n")
        handle.write(line + "\n")
    return True


def _field_bytes(request: dict, name: str, low: int, high: int) -> bytes:
    try:
        value = b64url_decode(request.get(name))
    except ValueError:
        raise BadRequest(f"'{name}' must be base64url") from None
    if not low <= len(value) <= high:
        raise BadRequest(f"'{name}' must be {low}-{high} bytes")
    return value


def _object(request: object) -> dict:
    if not isinstance(request, dict):
        raise BadRequest("body must be a JSON object")
    return request


class MutualAuthenticator:
    """The VM's side of mutual authentication and of the sessions it opens."""

    def __init__(self, identity: GuestIdentity, *,
                 authorized_keys: str | os.PathLike | None = None,
                 exchange_ttl: float = 60.0, session_ttl: float = 300.0,
                 max_pending: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self.identity = identity
        self.authorized_keys = pathlib.Path(authorized_keys) if authorized_keys else None
        self.exchange_ttl, self.session_ttl = exchange_ttl, session_ttl
        self.max_pending, self.clock = max_pending, clock
        self._key = mutual_key(identity.nonce)
        self._pending: OrderedDict[bytes, _Exchange] = OrderedDict()
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def _mac(self, role: str, c1: bytes, c2: bytes) -> bytes:
        return mutual_mac(self._key, role, c1, c2, self.identity.server_id,
                          self.identity.ssh_host_key_fingerprint)

    def _expire(self, now: float) -> None:
        pending = self._pending
        while pending and now - next(iter(pending.values())).started > self.exchange_ttl:
            pending.popitem(last=False)
        for session_id in [s for s, entry in self._sessions.items() if entry.expires < now]:
            del self._sessions[session_id]

    def start(self, request: object) -> dict:
        """Step 1: prove N to the client over (c1, c2, server id, fingerprint)."""
        request = _object(request)
        if request.get("server_id") != self.identity.server_id:
            raise BadRequest("'server_id' is not this server's id")
        c1 = _field_bytes(request, "c1", MIN_CHALLENGE, MAX_CHALLENGE)
        c2 = secrets.token_bytes(C2_SIZE)
        with self._lock:
            now = self.clock()
            self._expire(now)
            while len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
            self._pending[c2] = _Exchange(c1, now)
        return {"server_id": self.identity.server_id,
                "ssh_host_key_fingerprint": self.identity.ssh_host_key_fingerprint,
                "ssh_host_key": self.identity.ssh_host_key,
                "c2": b64url_encode(c2), "mac_vm": b64url_encode(self._mac("vm", c1, c2))}

    def finish(self, request: object) -> dict:
        """Step 2: the client proves N; one attempt per exchange; opens a session."""
        request = _object(request)
        c2 = _field_bytes(request, "c2", C2_SIZE, C2_SIZE)
        mac = _field_bytes(request, "mac_client", 32, 32)
        with self._lock:
            now = self.clock()
            self._expire(now)
            exchange = self._pending.pop(c2, None)
            if exchange is None:
                raise BadRequest("no open exchange for this 'c2' (unknown, expired or "
                                 "already finished)", 403)
            if not hmac.compare_digest(mac, self._mac("client", exchange.c1, c2)):
                raise BadRequest("the client does not prove knowledge of the launch nonce",
                                 403)
            key = session_key(self._key, exchange.c1, c2)
            while len(self._sessions) >= self.max_pending:
                self._sessions.popitem(last=False)
            self._sessions[c2] = _Session(key, now + self.session_ttl)
        return {"session": b64url_encode(c2), "expires_in": int(self.session_ttl),
                "mac": b64url_encode(session_mac(key, "finished", c2, 0))}

    def authorize_ssh_key(self, request: object) -> dict:
        """A session message: install the tenant's SSH public key, once MAC and counter hold."""
        request = _object(request)
        session_id = _field_bytes(request, "session", C2_SIZE, C2_SIZE)
        counter = request.get("counter")
        if not isinstance(counter, int) or isinstance(counter, bool) \
                or not 0 < counter < 2**63:
            raise BadRequest("'counter' must be a positive integer")
        line = request.get("ssh_public_key")
        mac = _field_bytes(request, "mac", 32, 32)
        with self._lock:
            session = self._session(session_id)
            text = line.encode("utf-8", "replace") if isinstance(line, str) else b""
            expected = session_mac(session.key, "authorize-ssh-key", session_id, counter, text)
            if not hmac.compare_digest(mac, expected):
                raise BadRequest("session message MAC does not verify (tampered or wrong "
                                 "session)", 403)
            if counter <= session.counter:
                raise BadRequest("session message replayed (counter not increasing)", 403)
            session.counter = counter
            normalised, fingerprint = normalise_ssh_key(line)
            if self.authorized_keys is None:
                raise BadRequest("installing SSH keys is not enabled on this VM "
                                 "(start the agent with --authorized-keys)", 403)
            append_authorized_key(self.authorized_keys, normalised)
        return {"authorized": True, "fingerprint": fingerprint, "counter": counter,
                "mac": b64url_encode(session_mac(session.key, "ssh-key-authorized",
                                                 session_id, counter, fingerprint.encode()))}

    def _session(self, session_id: bytes) -> _Session:
        self._expire(self.clock())
        session = self._sessions.get(session_id)
        if session is None:
            raise BadRequest("no such session (unknown or expired)", 403)
        return session
