"""SQLAlchemy 2 models of the TTP database.

No row ever holds a tenant nonce, a token's text or plaintext, or a private
key: hosts keep only the SHA-256 of their pending activation secret,
attestations only verdicts and evidence digests.
"""

from __future__ import annotations

import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Double, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Microseconds on MySQL/MariaDB too (its DATETIME keeps whole seconds), so rows
# written in the same second keep their order.
PreciseDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> datetime.datetime:
    """The current UTC time, naive (as stored)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the TTP tables."""


class Host(Base):
    """An enrolled compute host: its EK identity and its active AK.

    A row exists only once a credential challenge was answered; challenges
    awaiting an answer live in :class:`EnrollmentChallenge`, so a new
    enrollment attempt cannot disturb an active host.
    """

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # active
    ek_cert_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    ek_public: Mapped[str] = mapped_column(Text, nullable=False)  # base64 TPM2B_PUBLIC
    ak_public: Mapped[str | None] = mapped_column(Text)  # active AK, base64 TPM2B_PUBLIC
    ak_name: Mapped[str | None] = mapped_column(String(140))  # hex
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow)
    activated_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)


class HostRegistration(Base):
    """A host the operator allowed to enroll: the operator's consent, kept per host name.

    ``ek_cert_fingerprint`` None: no EK approved yet; the first EK presented
    is kept in ``pending_ek_fingerprint`` until the operator approves it.
    ``enrollment_approved``: the next enrollment of a new AK is allowed (an
    activation uses it up; renewing the certificate of the active AK does not).
    """

    __tablename__ = "host_registrations"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    ek_cert_fingerprint: Mapped[str | None] = mapped_column(String(64))  # hex SHA-256 (DER)
    pending_ek_fingerprint: Mapped[str | None] = mapped_column(String(64))
    enrollment_approved: Mapped[bool] = mapped_column(Boolean, nullable=False)
    failed_activations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow)


class EnrollmentChallenge(Base):
    """A live credential challenge for one (host, AK): only the secret's SHA-256 is kept."""

    __tablename__ = "enrollment_challenges"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    ak_name: Mapped[str] = mapped_column(String(140), primary_key=True)  # hex
    ek_cert_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    ek_public: Mapped[str] = mapped_column(Text, nullable=False)  # base64 TPM2B_PUBLIC
    ak_public: Mapped[str] = mapped_column(Text, nullable=False)  # base64 TPM2B_PUBLIC
    credential_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)  # unix seconds


class ApiToken(Base):
    """A bearer token of an operator (admin, reader) or a host: only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public, for revocation
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # admin | reader | host
    host: Mapped[str | None] = mapped_column(String(255))  # the host a host token acts for
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Profile(Base):
    """A security profile document (validated by trusted_launch.policy)."""

    __tablename__ = "profiles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    document: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow)


class ProfileRevision(Base):
    """One row (id 1) counting profile changes: workers reload profiles when it moves."""

    __tablename__ = "profile_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Attestation(Base):
    """The audit record of one attestation decision (trusted or refused)."""

    __tablename__ = "attestations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    requester: Mapped[str] = mapped_column(String(255), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    launch_id: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_profile: Mapped[str | None] = mapped_column(String(64))
    satisfied_profile: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16), nullable=False)  # trusted | refused
    check: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    evidence_digests: Mapped[str] = mapped_column(Text, nullable=False, default="{}")


class UsedToken(Base):
    """A launch token already redeemed, bound to the launch id that first redeemed it.

    The primary key makes the first redemption atomic; later redemptions are
    allowed only for the same ``launch_id`` (the same instance, re-attested).
    """

    __tablename__ = "used_tokens"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256
    attestation_id: Mapped[str] = mapped_column(String(36), nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    launch_id: Mapped[str | None] = mapped_column(String(255))


class TokenRedemption(Base):
    """One trusted redemption of a token, keyed by the SHA-256 of its TPMS_ATTEST.

    The primary key refuses the very same certify evidence a second time
    (a whole request replayed), also across worker processes.
    """

    __tablename__ = "token_redemptions"

    certify_digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex
    token_digest: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    attestation_id: Mapped[str] = mapped_column(String(36), nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)


class ReceiptRow(Base):
    """The signed receipt of one attestation decision, found by the token's digest.

    ``receipt_auth`` is SHA-256(HKDF(N, "trusted-launch/v1 receipt")): a one-way
    value that lets the tenant prove knowledge of N; N itself is never stored.
    """

    __tablename__ = "receipts"

    attestation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_digest: Mapped[str | None] = mapped_column(String(64), index=True)  # hex SHA-256
    receipt_auth: Mapped[str | None] = mapped_column(String(64))  # hex SHA-256
    document: Mapped[str] = mapped_column(Text, nullable=False)  # the signed receipt, JSON
    created_at: Mapped[datetime.datetime] = mapped_column(PreciseDateTime, default=utcnow)


class HostChallenge(Base):
    """A quote nonce handed to a host for continuous attestation: short-lived, single use.

    Only the nonce's SHA-256 is kept; the row is deleted when the nonce is presented.
    """

    __tablename__ = "host_challenges"

    nonce_digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256
    host: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    expires_at: Mapped[float] = mapped_column(Double, nullable=False)  # unix seconds


class HostStatusRow(Base):
    """A host's current trust status from its latest periodic quote, and its IMA replay state."""

    __tablename__ = "host_status"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile: Mapped[str | None] = mapped_column(String(64))  # highest satisfied; None: none
    check: Mapped[str | None] = mapped_column(String(64))  # why not trusted (or weaker)
    reason: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[float] = mapped_column(Double, nullable=False)  # unix seconds
    ima_state: Mapped[str | None] = mapped_column(Text)  # ImaReplayState.to_json(), absolute
    ima_offset: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    ima_failed: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # profile->why
