"""Database access for who may do what: host registrations, enrollment challenges, API tokens.

A host enrolls only under a registration the operator made (its name and the
SHA-256 of its EK certificate, or an EK the operator approved). Credential
challenges are kept per (host, AK): a new enrollment request never replaces
or cancels a live challenge, a wrong answer only counts against the host's
registration. API tokens are kept as SHA-256 only.
"""

from __future__ import annotations

import datetime
import enum
import hmac
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.models import (
    ApiToken,
    EnrollmentChallenge,
    Host,
    HostChallenge,
    HostRegistration,
    HostStatusRow,
    utcnow,
)

_TOKEN = select(ApiToken.id, ApiToken.role, ApiToken.host, ApiToken.description).where(
    ApiToken.token_hash == bindparam("token_hash"))


class Outcome(enum.Enum):
    """What a registration, approval, enrollment or activation request came to."""

    DONE = "done"
    NOT_REGISTERED = "not_registered"
    ALREADY_REGISTERED = "already_registered"
    AWAITING_APPROVAL = "awaiting_approval"
    NOTHING_TO_APPROVE = "nothing_to_approve"
    EK_MISMATCH = "ek_mismatch"
    NOT_APPROVED = "not_approved"
    CHALLENGE_PENDING = "challenge_pending"
    TOO_MANY_CHALLENGES = "too_many_challenges"
    WRONG_ANSWER = "wrong_answer"


@dataclass(frozen=True)
class Registration:
    """A host registration joined with its enrolled AK (if any)."""

    name: str
    ek_cert_fingerprint: str | None
    pending_ek_fingerprint: str | None
    enrollment_approved: bool
    failed_activations: int
    created_at: datetime.datetime | None
    ak_name: str | None = None
    activated_at: datetime.datetime | None = None
    live_challenges: int = 0

    @property
    def state(self) -> str:
        """active (an AK is enrolled), registered (may enroll) or awaiting_approval."""
        if self.ak_name is not None:
            return "active"
        return "registered" if self.ek_cert_fingerprint else "awaiting_approval"

    def to_json(self) -> dict:
        """The form served by GET /v1/hosts and GET /v1/hosts/{name} (no secret in it)."""
        def stamp(value: datetime.datetime | None) -> str | None:
            return value.isoformat() + "Z" if value else None
        return {"host": self.name, "state": self.state,
                "ek_certificate_sha256": self.ek_cert_fingerprint,
                "pending_ek_certificate_sha256": self.pending_ek_fingerprint,
                "enrollment_approved": self.enrollment_approved,
                "failed_activations": self.failed_activations,
                "live_challenges": self.live_challenges, "ak_name": self.ak_name,
                "registered_at": stamp(self.created_at),
                "activated_at": stamp(self.activated_at)}


@dataclass(frozen=True)
class NewChallenge:
    """A credential challenge to store: the secret's SHA-256, never the secret."""

    host: str
    ak_name: str
    ek_cert_fingerprint: str
    ek_public: str
    ak_public: str
    credential_digest: str
    expires_at: int


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored (its hash only)."""

    id: str
    role: str
    host: str | None
    description: str | None
    created_at: datetime.datetime | None = None


def _registration(row: HostRegistration, host: Host | None, live: int = 0) -> Registration:
    return Registration(
        name=row.name, ek_cert_fingerprint=row.ek_cert_fingerprint,
        pending_ek_fingerprint=row.pending_ek_fingerprint,
        enrollment_approved=bool(row.enrollment_approved),
        failed_activations=row.failed_activations or 0, created_at=row.created_at,
        ak_name=host.ak_name if host else None, activated_at=host.activated_at if host else None,
        live_challenges=live)


class AccessStore:
    """Registrations, enrollment challenges and API tokens in the TTP database."""

    def __init__(self, db: TTPDatabase) -> None:
        self.db = db

    # registrations ---------------------------------------------------------

    def register(self, name: str, ek_fingerprint: str | None) -> Outcome:
        """Allow ``name`` to enroll (with that EK, or the first one, once approved)."""
        try:
            with self.db._transaction() as session:
                if session.get(HostRegistration, name) is not None:
                    return Outcome.ALREADY_REGISTERED
                session.add(HostRegistration(name=name, ek_cert_fingerprint=ek_fingerprint,
                                             enrollment_approved=True, failed_activations=0))
                return Outcome.DONE
        except IntegrityError:  # a concurrent registration of the same name won
            return Outcome.ALREADY_REGISTERED

    def approve(self, name: str, ek_fingerprint: str | None) -> tuple[Outcome, bool]:
        """Approve the next enrollment of ``name``; (outcome, whether an old AK was revoked).

        ``ek_fingerprint``: the EK the host must present from now on (a new
        TPM revokes the enrolled AK at once). None: approve the EK awaiting
        approval, or the enrollment of a new AK with the registered EK.
        Live challenges are dropped, so the host starts afresh.
        """
        with self.db._transaction() as session:
            row = session.scalar(select(HostRegistration).where(
                HostRegistration.name == name).with_for_update())
            if row is None:
                return Outcome.NOT_REGISTERED, False
            revoked = False
            if ek_fingerprint is None and row.ek_cert_fingerprint is None:
                if row.pending_ek_fingerprint is None:
                    return Outcome.NOTHING_TO_APPROVE, False
                ek_fingerprint = row.pending_ek_fingerprint
            if ek_fingerprint is not None and ek_fingerprint != row.ek_cert_fingerprint:
                revoked = session.execute(delete(Host).where(Host.name == name)).rowcount > 0
                row.ek_cert_fingerprint = ek_fingerprint
            row.pending_ek_fingerprint = None
            row.enrollment_approved = True
            session.execute(delete(EnrollmentChallenge).where(EnrollmentChallenge.host == name))
            return Outcome.DONE, revoked

    def remove(self, name: str) -> bool:
        """Forget ``name``: registration, enrolled AK, challenges, status, its host tokens.

        False (and nothing deleted) if ``name`` is neither registered nor enrolled.
        """
        with self.db._transaction() as session:
            found = session.execute(delete(HostRegistration).where(
                HostRegistration.name == name)).rowcount > 0
            found = session.execute(delete(Host).where(Host.name == name)).rowcount > 0 \
                or found
            if not found:
                return False
            for model, column in ((EnrollmentChallenge, EnrollmentChallenge.host),
                                  (HostChallenge, HostChallenge.host),
                                  (HostStatusRow, HostStatusRow.host),
                                  (ApiToken, ApiToken.host)):
                session.execute(delete(model).where(column == name))
            return True

    def registration(self, name: str, now: int) -> Registration | None:
        """The registration of ``name`` with its enrolled AK, or None."""
        with self.db._transaction() as session:
            row = session.get(HostRegistration, name)
            if row is None:
                return None
            host = session.scalar(select(Host).where(Host.name == name))
            live = len(session.scalars(select(EnrollmentChallenge.ak_name).where(
                EnrollmentChallenge.host == name,
                EnrollmentChallenge.expires_at >= now)).all())
            return _registration(row, host, live)

    def registrations(self, now: int) -> list[Registration]:
        """Every registration, by name."""
        with self.db._transaction() as session:
            hosts = {h.name: h for h in session.scalars(select(Host))}
            live: dict[str, int] = {}
            for host in session.scalars(select(EnrollmentChallenge.host).where(
                    EnrollmentChallenge.expires_at >= now)):
                live[host] = live.get(host, 0) + 1
            return [_registration(row, hosts.get(row.name), live.get(row.name, 0))
                    for row in session.scalars(select(HostRegistration)
                                               .order_by(HostRegistration.name))]

    # enrollment ------------------------------------------------------------

    def open_challenge(self, challenge: NewChallenge, now: int, max_live: int) -> Outcome:
        """Store ``challenge`` if the registration allows it and no live one is replaced."""
        try:
            with self.db._transaction() as session:
                row = session.scalar(select(HostRegistration).where(
                    HostRegistration.name == challenge.host).with_for_update())
                refusal = _enrollment_refusal(session, row, challenge)
                if refusal is not None:
                    return refusal
                session.execute(delete(EnrollmentChallenge).where(
                    EnrollmentChallenge.host == challenge.host,
                    EnrollmentChallenge.expires_at < now))
                live = session.scalars(select(EnrollmentChallenge.ak_name).where(
                    EnrollmentChallenge.host == challenge.host)).all()
                if challenge.ak_name in live:
                    return Outcome.CHALLENGE_PENDING
                if len(live) >= max_live:
                    return Outcome.TOO_MANY_CHALLENGES
                session.add(EnrollmentChallenge(**challenge.__dict__))
                return Outcome.DONE
        except IntegrityError:  # a concurrent request for the same (host, AK) won
            return Outcome.CHALLENGE_PENDING

    def answer_challenge(self, name: str, credential_digest: str,
                         now: int) -> tuple[Outcome, str | None]:
        """Activate the AK whose live challenge ``credential_digest`` answers.

        Returns (DONE, base64 AK public area); a wrong or late answer changes
        no challenge and only counts against the registration (WRONG_ANSWER).
        """
        with self.db._transaction() as session:
            row = session.scalar(select(HostRegistration).where(
                HostRegistration.name == name).with_for_update())
            if row is None:
                return Outcome.NOT_REGISTERED, None
            live = session.scalars(select(EnrollmentChallenge).where(
                EnrollmentChallenge.host == name, EnrollmentChallenge.expires_at >= now)).all()
            match = next((c for c in live
                          if hmac.compare_digest(c.credential_digest, credential_digest)), None)
            if match is None:
                row.failed_activations = (row.failed_activations or 0) + 1
                return Outcome.WRONG_ANSWER, None
            if match.ek_cert_fingerprint != row.ek_cert_fingerprint:
                session.delete(match)  # the operator approved another EK since
                return Outcome.EK_MISMATCH, None
            _activate(session, row, match)
            session.execute(delete(EnrollmentChallenge).where(EnrollmentChallenge.host == name))
            return Outcome.DONE, match.ak_public

    # API tokens ------------------------------------------------------------

    def add_token(self, record: TokenRecord, token_hash: str) -> None:
        """Store a new token's hash."""
        with self.db._transaction() as session:
            session.add(ApiToken(id=record.id, token_hash=token_hash, role=record.role,
                                 host=record.host, description=record.description))

    def token(self, token_hash: str) -> TokenRecord | None:
        """The token whose SHA-256 is ``token_hash``, or None (one autocommit SELECT)."""
        row = self.db._read_one(self.db._prepare("api_token", lambda: _TOKEN), {
            "token_hash": token_hash})
        return None if row is None else TokenRecord(*row)

    def tokens(self) -> list[TokenRecord]:
        """Every token (without hashes), oldest first."""
        with self.db._transaction() as session:
            return [TokenRecord(row.id, row.role, row.host, row.description, row.created_at)
                    for row in session.scalars(select(ApiToken).order_by(ApiToken.created_at,
                                                                         ApiToken.id))]

    def revoke_token(self, token_id: str) -> bool:
        """Delete a token; False if there was none with that id."""
        with self.db._transaction() as session:
            return session.execute(delete(ApiToken).where(ApiToken.id == token_id)).rowcount > 0


def _enrollment_refusal(session, row: HostRegistration | None,
                        challenge: NewChallenge) -> Outcome | None:
    """Why the registration refuses this enrollment, or None (a first EK is remembered)."""
    if row is None:
        return Outcome.NOT_REGISTERED
    if row.ek_cert_fingerprint is None:
        if row.pending_ek_fingerprint is None:
            row.pending_ek_fingerprint = challenge.ek_cert_fingerprint
        return Outcome.AWAITING_APPROVAL if \
            row.pending_ek_fingerprint == challenge.ek_cert_fingerprint else Outcome.EK_MISMATCH
    if row.ek_cert_fingerprint != challenge.ek_cert_fingerprint:
        return Outcome.EK_MISMATCH
    host = session.scalar(select(Host).where(Host.name == challenge.host))
    renewal = host is not None and host.ak_name == challenge.ak_name
    if not renewal and not row.enrollment_approved:
        return Outcome.NOT_APPROVED
    return None


def _activate(session, row: HostRegistration, match: EnrollmentChallenge) -> None:
    host = session.scalar(select(Host).where(Host.name == row.name).with_for_update())
    if host is None:
        host = Host(name=row.name, state="active")
        session.add(host)
    if host.ak_name != match.ak_name:
        row.enrollment_approved = False  # the operator's consent is used up
    host.ek_cert_fingerprint, host.ek_public = match.ek_cert_fingerprint, match.ek_public
    host.ak_public, host.ak_name = match.ak_public, match.ak_name
    host.state, host.activated_at = "active", utcnow()
