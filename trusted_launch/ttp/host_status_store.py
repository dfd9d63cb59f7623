"""Database access for continuous host attestation: quote nonces and host status rows.

Uses the TTP database's short transactions; nonces are stored as SHA-256 only
and deleted on first presentation, so each is accepted at most once even with
several worker processes.
"""

from __future__ import annotations

import datetime
import enum
import json
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, func, insert, select

from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.models import HostChallenge, HostStatusRow

MAX_CHALLENGES_PER_HOST = 16


class NonceState(enum.Enum):
    """What presenting a nonce found."""

    FRESH = "fresh"
    UNKNOWN = "unknown"  # never issued to this host, or already used
    EXPIRED = "expired"


@dataclass(frozen=True)
class StoredHostStatus:
    """A host's stored status; ``ima_state`` is ImaReplayState JSON (absolute offsets)."""

    host: str
    profile: str | None
    check: str | None
    reason: str | None
    checked_at: float
    ima_state: dict | None = None
    ima_offset: int = 0
    ima_failed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The public form (GET /v1/hosts?status=1): no IMA replay internals."""
        return {"host": self.host, "profile": self.profile, "trusted": self.profile is not None,
                "check": self.check, "reason": self.reason, "checked_at": self.checked_at,
                "last_attested_at": iso_utc(self.checked_at)}


@dataclass(frozen=True)
class LastAttested:
    """When a host's latest periodic quote was accepted, and the profile it met."""

    host: str
    profile: str | None
    checked_at: float


def iso_utc(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with a Z, to the second."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _from_values(host: str, profile: str | None, check: str | None, reason: str | None,
                 checked_at: float, ima_state: str | None, ima_offset: int | None,
                 ima_failed: str | None) -> StoredHostStatus:
    return StoredHostStatus(
        host=host, profile=profile, check=check, reason=reason, checked_at=float(checked_at),
        ima_state=json.loads(ima_state) if ima_state else None,
        ima_offset=ima_offset or 0, ima_failed=json.loads(ima_failed or "{}"))


def _from_row(row: HostStatusRow) -> StoredHostStatus:
    return _from_values(row.host, row.profile, row.check, row.reason, row.checked_at,
                        row.ima_state, row.ima_offset, row.ima_failed)


_STATUS = select(HostStatusRow.host, HostStatusRow.profile, HostStatusRow.check,
                 HostStatusRow.reason, HostStatusRow.checked_at, HostStatusRow.ima_state,
                 HostStatusRow.ima_offset, HostStatusRow.ima_failed).where(
    HostStatusRow.host == bindparam("host"))
_CONSUME_ANY = delete(HostChallenge).where(HostChallenge.nonce_digest == bindparam("digest"),
                                           HostChallenge.host == bindparam("host"))
_CONSUME_LIVE = _CONSUME_ANY.where(HostChallenge.expires_at >= bindparam("now"))
_ADD = insert(HostChallenge).values(nonce_digest=bindparam("digest"), host=bindparam("host"),
                                    expires_at=bindparam("expires_at"))
_DROP_EXPIRED = delete(HostChallenge).where(HostChallenge.host == bindparam("host"),
                                            HostChallenge.expires_at < bindparam("now"))
_LIVE = select(func.count()).select_from(HostChallenge).where(
    HostChallenge.host == bindparam("host"))


class HostStatusStore:
    """Quote nonces and host status rows in the TTP database."""

    def __init__(self, db: TTPDatabase) -> None:
        self.db = db

    def add_challenge(self, host: str, nonce_digest: str, expires_at: float, now: float) -> None:
        """Store a nonce digest for ``host``; drop its expired and surplus challenges.

        Three autocommit statements (drop the host's expired nonces, insert,
        count); only a host holding more than MAX_CHALLENGES_PER_HOST live
        nonces (someone keeps asking for them) pays a transaction that drops
        the oldest.
        """
        values = {"digest": nonce_digest, "host": host, "expires_at": expires_at, "now": now}
        self.db._write_one(self.db._prepare("drop_expired_challenges",
                                            lambda: _DROP_EXPIRED), values)
        self.db._write_one(self.db._prepare("add_challenge", lambda: _ADD), values)
        row = self.db._read_one(self.db._prepare("count_challenges", lambda: _LIVE), values)
        if row is not None and row[0] > MAX_CHALLENGES_PER_HOST:
            self._drop_oldest(host)

    def _drop_oldest(self, host: str) -> None:
        with self.db._transaction() as session:
            live = list(session.scalars(select(HostChallenge.nonce_digest)
                                        .where(HostChallenge.host == host)
                                        .order_by(HostChallenge.expires_at)
                                        .with_for_update()))
            surplus = live[:max(0, len(live) - MAX_CHALLENGES_PER_HOST)]
            if surplus:
                session.execute(delete(HostChallenge).where(
                    HostChallenge.nonce_digest.in_(surplus)))

    def consume_challenge(self, host: str, nonce_digest: str, now: float) -> NonceState:
        """Delete the nonce's row (whatever it says) and tell whether it was fresh.

        Each DELETE is one autocommit statement: of concurrent presentations
        of one nonce, only the one that deletes the row sees it.
        """
        values = {"digest": nonce_digest, "host": host, "now": now}
        if self.db._write_one(self.db._prepare("consume_live_challenge",
                                                lambda: _CONSUME_LIVE), values) == 1:
            return NonceState.FRESH
        if self.db._write_one(self.db._prepare("consume_expired_challenge",
                                                lambda: _CONSUME_ANY), values) == 1:
            return NonceState.EXPIRED
        return NonceState.UNKNOWN  # never issued to this host, or already used

    def get(self, host: str) -> StoredHostStatus | None:
        """The host's stored status, or None before its first periodic quote."""
        row = self.db._read_one(self.db._prepare("host_status", lambda: _STATUS),
                                {"host": host})
        return None if row is None else _from_values(*row)

    def save(self, status: StoredHostStatus) -> StoredHostStatus | None:
        """Store ``status``; return the one it replaces (None if it is the first)."""
        with self.db._transaction() as session:
            row = session.scalar(select(HostStatusRow).where(
                HostStatusRow.host == status.host).with_for_update())
            previous = None if row is None else _from_row(row)
            if row is None:
                row = HostStatusRow(host=status.host)
                session.add(row)
            row.profile, row.check, row.reason = status.profile, status.check, status.reason
            row.checked_at = status.checked_at
            row.ima_state = None if status.ima_state is None else json.dumps(status.ima_state)
            row.ima_offset = status.ima_offset
            row.ima_failed = json.dumps(status.ima_failed, sort_keys=True)
            return previous

    def last_attested(self) -> list[LastAttested]:
        """Every host's latest accepted quote time and profile, by host name (no IMA state)."""
        with self.db._transaction() as session:
            return [LastAttested(host, profile, checked_at) for host, profile, checked_at in
                    session.execute(select(HostStatusRow.host, HostStatusRow.profile,
                                           HostStatusRow.checked_at)
                                    .order_by(HostStatusRow.host))]

    def all(self) -> list[StoredHostStatus]:
        """Every host's status, by host name."""
        with self.db._transaction() as session:
            return [_from_row(row) for row in
                    session.scalars(select(HostStatusRow).order_by(HostStatusRow.host))]
