"""Data access of the TTP: one short transaction per operation.

The attestation path is lean: its reads (host AK, profile revision) are
single autocommit SELECTs, and a first redemption stores the used-token row,
the redemption, the audit record and the receipt with Core inserts in one
transaction; on PostgreSQL that transaction is ``BEGIN; INSERT`` (the other
rows as data-modifying CTEs) then ``COMMIT``: two round trips, committed by
this process and durable before it answers.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from sqlalchemy import (
    Connection,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trusted_launch.ttp.db.models import (
    Attestation,
    Host,
    Profile,
    ProfileRevision,
    ReceiptRow,
    TokenRedemption,
    UsedToken,
    utcnow,
)


class DatabaseError(Exception):
    """The database could not complete an operation (the caller answers 503)."""


class TokenAlreadyUsed(Exception):
    """A replay: the token is bound to another launch id, or this evidence was redeemed.

    ``str(exc)`` says which (never the token or N).
    """


#: Attempts at a redemption when a concurrent first redemption of the token wins.
REDEMPTION_ATTEMPTS = 3
#: The fast-path pool pings a connection only if it sat idle at least this long.
IDLE_PING_SECONDS = 1.0


@dataclass(frozen=True)
class AttestationRecord:
    """What the audit trail keeps of one attestation decision (never N, never the token)."""

    id: str
    requester: str
    host: str
    launch_id: str
    verdict: str
    requested_profile: str | None = None
    satisfied_profile: str | None = None
    check: str | None = None
    reason: str | None = None
    evidence_digests: dict[str, str] = field(default_factory=dict)
    created_at: datetime.datetime | None = None

    def to_dict(self) -> dict:
        """The JSON form served by GET /v1/attestations/{id}."""
        created = self.created_at.isoformat() + "Z" if self.created_at else None
        return {"attestation_id": self.id, "created_at": created,
                "requester": self.requester, "host": self.host, "launch_id": self.launch_id,
                "verdict": self.verdict, "profile": self.requested_profile,
                "satisfied_profile": self.satisfied_profile, "check": self.check,
                "reason": self.reason, "evidence_digests": self.evidence_digests}


@dataclass(frozen=True)
class StoredReceipt:
    """A signed receipt as stored: found by token digest, released on a proof of N."""

    attestation_id: str
    document: str  # the signed receipt envelope, JSON text
    token_digest: str | None = None  # hex
    receipt_auth: str | None = None  # hex SHA-256 of the tenant's proof; never N
    created_at: datetime.datetime | None = None


MAX_RECEIPTS_PER_TOKEN = 100


def _record_from_row(row: Attestation) -> AttestationRecord:
    return AttestationRecord(
        id=row.id, requester=row.requester, host=row.host, launch_id=row.launch_id,
        verdict=row.verdict, requested_profile=row.requested_profile,
        satisfied_profile=row.satisfied_profile, check=row.check, reason=row.reason,
        evidence_digests=json.loads(row.evidence_digests or "{}"), created_at=row.created_at)


def make_engine(url: str) -> Engine:
    """An engine suited to the URL (SQLite waits on locks instead of failing at once)."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url, pool_pre_ping=True)


def make_autocommit_engine(url: str) -> Engine:
    """An autocommit engine for single statements: no BEGIN/COMMIT round trips.

    Instead of a ping on every checkout it pings connections that sat idle
    for IDLE_PING_SECONDS; a connection that died while busy fails its
    statement, which invalidates the whole pool (reads retry once).
    """
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30}, isolation_level="AUTOCOMMIT")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    event.listen(engine, "connect", _mark_idle_since)
    event.listen(engine, "checkin", _mark_idle_since)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _mark_idle_since(dbapi_connection, record) -> None:
    if record is not None:
        record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, proxy) -> None:
    """Raise DisconnectionError (the pool reconnects) if an idle connection is dead."""
    if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as exc:  # any DB-API error: this connection is unusable
        raise DisconnectionError(f"idle connection is dead: {type(exc).__name__}") from exc


class Prepared:
    """A statement compiled once for one dialect and run on a DB-API cursor.

    The hot path builds no SQLAlchemy expression per call: parameters go
    straight to the DB-API driver (no type processing, so plain values only).
    """

    def __init__(self, statement, dialect, prefix: str = "") -> None:
        self.compiled = statement.compile(dialect=dialect)
        self.sql = prefix + str(self.compiled)

    def parameters(self, values: dict) -> dict | tuple:
        """The driver's parameters for ``values`` (bind name -> value)."""
        params = self.compiled.construct_params(values)
        if self.compiled.positional:
            return tuple(params[name] for name in self.compiled.positiontup)
        return params

    def execute(self, cursor, values: dict) -> None:
        """Run the statement on a DB-API ``cursor``."""
        cursor.execute(self.sql, self.parameters(values))


_PROFILE_REVISION = select(ProfileRevision.revision).where(ProfileRevision.id == 1)
_HOST_AK = select(Host.state, Host.ak_public, _PROFILE_REVISION.scalar_subquery()).where(
    Host.name == bindparam("name"))


class TTPDatabase:
    """The TTP's persistent state: hosts, profiles, attestations, used tokens."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit = make_autocommit_engine(url)
        self._prepared: dict[object, Prepared] = {}

    def _prepare(self, key: object, make_statement, prefix: str = "") -> Prepared:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = Prepared(make_statement(), self._autocommit.dialect, prefix)
            self._prepared[key] = prepared
        return prepared

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()
        self._autocommit.dispose()

    @contextmanager
    def _cursor(self, *, transaction: bool = False) -> Iterator[object]:
        """A DB-API cursor on a pooled autocommit connection (the hot path).

        No SQLAlchemy Connection, execution context or result per statement;
        errors are what SQLAlchemy would raise (IntegrityError, or DBAPIError
        whose ``connection_invalidated`` says a lost connection invalidated
        the pool). ``transaction``: the caller sent BEGIN, so a failure sends
        ROLLBACK (a connection that cannot roll back is discarded).
        """
        engine = self._autocommit
        dialect, error = engine.dialect, engine.dialect.loaded_dbapi.Error
        try:
            connection = engine.raw_connection()
        except error as exc:
            raise DBAPIError.instance(None, None, exc, error, dialect=dialect) from exc
        cursor = None
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            except BaseException:
                if transaction:
                    _rollback_quietly(connection, cursor)
                raise
        except error as exc:
            lost = not connection.is_valid or dialect.is_disconnect(
                exc, connection.dbapi_connection, cursor)
            if lost:  # as SQLAlchemy's Connection does: every older connection is suspect
                engine.pool._invalidate(connection, exc)
            raise DBAPIError.instance(None, None, exc, error, connection_invalidated=lost,
                                      dialect=dialect) from exc
        finally:
            _close_quietly(cursor)
            connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except TokenAlreadyUsed:
            raise
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database unavailable: {type(exc).__name__}") from exc

    def _read_one(self, statement: Prepared, values: dict) -> tuple | None:
        """The first row of one SELECT in autocommit mode, retried once on a dead connection.

        A connection the database dropped (restart, failover) invalidates the
        pool; the retry then runs on a fresh connection.
        """
        return self._autocommit_statement(statement, values, _first_row)

    def _write_one(self, statement: Prepared, values: dict) -> int:
        """The row count of one INSERT/UPDATE/DELETE in autocommit mode (retried like reads).

        Only for statements whose repetition is harmless or fails: a retry
        after a lost answer finds the work done and counts 0 rows (a DELETE),
        or fails on the primary key (an INSERT: DatabaseError, the client asks
        again).
        """
        return self._autocommit_statement(statement, values, lambda cursor: cursor.rowcount)

    def _autocommit_statement(self, statement: Prepared, values: dict, result):
        for attempt in (1, 2):
            try:
                with self._cursor() as cursor:
                    statement.execute(cursor, values)
                    return result(cursor)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise DatabaseError(f"database unavailable: {type(exc).__name__}") from exc
            except SQLAlchemyError as exc:
                raise DatabaseError(f"database unavailable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    @contextmanager
    def _core_transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database unavailable: {type(exc).__name__}") from exc

    # hosts ---------------------------------------------------------------

    def get_host(self, name: str) -> Host | None:
        """The host row named ``name`` (detached), or None."""
        with self._transaction() as session:
            return session.scalar(select(Host).where(Host.name == name))

    def count_hosts_by_state(self) -> dict[str, int]:
        """How many hosts are in each enrollment state."""
        with self._transaction() as session:
            return {state: count for state, count in session.execute(
                select(Host.state, func.count()).group_by(Host.state))}

    def host_ak(self, name: str) -> tuple[str, str | None, int | None] | None:
        """(state, base64 active AK public area or None, profile revision) of ``name``.

        None if there is no such host. The profile revision (see
        :meth:`profile_revision`) comes in the same statement, saving a round trip.
        """
        return self._read_one(self._prepare("host_ak", lambda: _HOST_AK), {"name": name})

    # profiles ------------------------------------------------------------

    def put_profile(self, name: str, level: int, document: dict) -> bool:
        """Create or replace a profile; True if it was created."""
        with self._transaction() as session:
            row = session.get(Profile, name)
            created = row is None
            if created:
                row = Profile(name=name)
                session.add(row)
            row.level, row.document = level, json.dumps(document, sort_keys=True)
            row.updated_at = utcnow()
            self._bump_profile_revision(session)
            return created

    @staticmethod
    def _bump_profile_revision(session: Session) -> None:
        session.execute(update(ProfileRevision).where(ProfileRevision.id == 1)
                        .values(revision=ProfileRevision.revision + 1))

    def profile_revision(self) -> int | None:
        """The profile set's change counter; None if the table has no row (never cache)."""
        row = self._read_one(self._prepare("profile_revision", lambda: _PROFILE_REVISION), {})
        return None if row is None else int(row[0])

    def get_profile(self, name: str) -> Profile | None:
        """The profile row, or None."""
        with self._transaction() as session:
            return session.get(Profile, name)

    def list_profiles(self) -> list[Profile]:
        """All profiles by level then name."""
        with self._transaction() as session:
            return list(session.scalars(select(Profile).order_by(Profile.level, Profile.name)))

    def delete_profile(self, name: str) -> bool:
        """Delete a profile; True if it existed."""
        with self._transaction() as session:
            deleted = session.execute(delete(Profile).where(Profile.name == name)).rowcount > 0
            if deleted:
                self._bump_profile_revision(session)
            return deleted

    # attestations --------------------------------------------------------

    def record_attestation(self, record: AttestationRecord, *,
                           token_digest: bytes | None = None, expires_at: int = 0,
                           receipt: StoredReceipt | None = None,
                           certify_digest: str | None = None) -> str | None:
        """Store the audit record, and with ``token_digest`` redeem the token, atomically.

        The first redemption binds the token to ``record.launch_id``. A later
        one for the same launch id is a re-attestation (the same instance on
        another host, or before a restart): stored with a reason saying so;
        returns the attestation id of the first redemption. Raises
        TokenAlreadyUsed (nothing stored) if the token is bound to another
        launch id or ``certify_digest`` (SHA-256 hex of the TPMS_ATTEST) was
        redeemed before. ``receipt`` is stored in the same transaction.
        """
        if token_digest is None:
            try:
                with self._transaction() as session:
                    self._add_record(session, record, receipt)
            except IntegrityError as exc:
                raise DatabaseError("attestation record conflict") from exc
            return None
        for _ in range(REDEMPTION_ATTEMPTS):
            try:
                self._first_redemption(record, token_digest.hex(), expires_at, receipt,
                                       certify_digest)
                return None
            except IntegrityError:
                pass  # redeemed before, or by a concurrent request that just committed
            first = self._repeat_redemption(record, token_digest.hex(), expires_at, receipt,
                                            certify_digest)
            if first is not None:
                return first
        raise DatabaseError("the used-token row changed during the redemption")

    @staticmethod
    def _add_record(session: Session, record: AttestationRecord,
                    receipt: StoredReceipt | None) -> None:
        session.add(_row_from_record(record))
        if receipt is not None:
            session.add(ReceiptRow(
                attestation_id=receipt.attestation_id, document=receipt.document,
                token_digest=receipt.token_digest, receipt_auth=receipt.receipt_auth))

    @staticmethod
    def _add_redemption(session: Session, record: AttestationRecord, digest_hex: str,
                        expires_at: int, certify_digest: str | None) -> None:
        if certify_digest is not None:
            session.add(TokenRedemption(certify_digest=certify_digest, token_digest=digest_hex,
                                        attestation_id=record.id, expires_at=expires_at))
            session.flush()

    def _first_redemption(self, record: AttestationRecord, digest_hex: str, expires_at: int,
                          receipt: StoredReceipt | None, certify_digest: str | None) -> None:
        """Insert the used-token row (IntegrityError if it exists) and the record, atomically.

        Core inserts, no ORM unit of work; on PostgreSQL one statement.
        """
        rows = _redemption_rows(record, digest_hex, expires_at, receipt, certify_digest)
        if self.engine.dialect.name == "postgresql":
            self._insert_in_one_statement(rows)
            return
        with self._core_transaction() as connection:
            for table, values in rows:
                connection.execute(insert(table), values)

    def _insert_in_one_statement(self, rows: list[tuple]) -> None:
        """All ``rows`` in one transaction of two round trips (PostgreSQL).

        ``BEGIN; INSERT ... (the other INSERTs as data-modifying CTEs)`` goes
        as one query, then this process sends COMMIT (durable before it
        answers). The commit is the client's: if this process dies first, even
        while the INSERT waits on a lock, the database rolls everything back.
        """
        statement = self._prepare(tuple(table.name for table, _ in rows),
                                  lambda: _chained_insert(rows), prefix="BEGIN; ")
        values = {f"{table.name}_{column}": value
                  for table, row in rows for column, value in row.items()}
        try:
            with self._cursor(transaction=True) as cursor:
                statement.execute(cursor, values)
                cursor.execute("COMMIT")
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database unavailable: {type(exc).__name__}") from exc

    def _repeat_redemption(self, record: AttestationRecord, digest_hex: str, expires_at: int,
                           receipt: StoredReceipt | None, certify_digest: str | None
                           ) -> str | None:
        """Redeem an already used token again for its own launch id; None if its row is gone.

        The redemption row is written first, so the database's write lock (or
        the primary key) orders concurrent redemptions of identical evidence.
        """
        try:
            with self._transaction() as session:
                self._add_redemption(session, record, digest_hex, expires_at, certify_digest)
                used = session.scalar(select(UsedToken).where(
                    UsedToken.token_digest == digest_hex))
                if used is None:
                    raise _UsedTokenGone
                if used.launch_id != record.launch_id:
                    raise TokenAlreadyUsed("this launch token was already redeemed for "
                                           "another launch")
                self._add_record(session, replace(record, reason=(
                    f"re-attestation of launch {record.launch_id}; the token was first "
                    f"redeemed in attestation {used.attestation_id}")), receipt)
                return used.attestation_id
        except _UsedTokenGone:
            return None
        except IntegrityError as exc:
            raise TokenAlreadyUsed("this certify evidence was already redeemed (a replayed "
                                   "request)") from exc

    def get_attestation(self, attestation_id: str) -> AttestationRecord | None:
        """The audit record, or None."""
        with self._transaction() as session:
            row = session.get(Attestation, attestation_id)
            return None if row is None else _record_from_row(row)

    def receipts_for_token(self, token_digest_hex: str) -> list[StoredReceipt]:
        """The receipts of every decision about one token, oldest first (at most 100)."""
        with self._transaction() as session:
            rows = session.scalars(
                select(ReceiptRow).where(ReceiptRow.token_digest == token_digest_hex)
                .order_by(ReceiptRow.created_at, ReceiptRow.attestation_id)
                .limit(MAX_RECEIPTS_PER_TOKEN))
            return [StoredReceipt(attestation_id=row.attestation_id, document=row.document,
                                  token_digest=row.token_digest,
                                  receipt_auth=row.receipt_auth, created_at=row.created_at)
                    for row in rows]

    def purge_used_tokens(self, now: int) -> int:
        """Forget used tokens that expired before ``now`` (they fail the expiry check anyway).

        Rows with an unknown expiry (0) are kept for ever.
        """
        with self._transaction() as session:
            session.execute(delete(TokenRedemption).where(
                TokenRedemption.expires_at > 0, TokenRedemption.expires_at < now))
            return session.execute(delete(UsedToken).where(
                UsedToken.expires_at > 0, UsedToken.expires_at < now)).rowcount


def _first_row(cursor) -> tuple | None:
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def _rollback_quietly(connection, cursor) -> None:
    """End an explicit transaction after a failure (a dead connection is discarded)."""
    try:
        cursor.execute("ROLLBACK")
    except Exception:  # the original error is what the caller reports
        if connection.is_valid:
            connection.invalidate()


def _close_quietly(cursor) -> None:
    """Close a DB-API cursor; one on a broken connection may fail to (nothing to keep)."""
    if cursor is None:
        return
    try:
        cursor.close()
    except Exception:  # noqa: S110 - closing is best effort; the connection is checked in
        pass


def _chained_insert(rows: list[tuple]):
    """INSERT of the first row with the others as data-modifying CTEs (bound parameters)."""
    inserts = [insert(table).values({column: bindparam(f"{table.name}_{column}")
                                     for column in row}) for table, row in rows]
    first, *others = inserts
    return first.add_cte(*(statement.cte(f"insert_{index}")
                           for index, statement in enumerate(others)))


def _redemption_rows(record: AttestationRecord, digest_hex: str, expires_at: int,
                     receipt: StoredReceipt | None, certify_digest: str | None
                     ) -> list[tuple]:
    """(table, values) of a first redemption, the used-token row first."""
    now = utcnow()
    rows: list[tuple] = [(UsedToken.__table__, {
        "token_digest": digest_hex, "attestation_id": record.id, "expires_at": expires_at,
        "launch_id": record.launch_id})]
    if certify_digest is not None:
        rows.append((TokenRedemption.__table__, {
            "certify_digest": certify_digest, "token_digest": digest_hex,
            "attestation_id": record.id, "expires_at": expires_at}))
    rows.append((Attestation.__table__, {
        "id": record.id, "created_at": now, "requester": record.requester,
        "host": record.host, "launch_id": record.launch_id, "verdict": record.verdict,
        "requested_profile": record.requested_profile,
        "satisfied_profile": record.satisfied_profile, "check": record.check,
        "reason": record.reason,
        "evidence_digests": json.dumps(record.evidence_digests, sort_keys=True)}))
    if receipt is not None:
        rows.append((ReceiptRow.__table__, {
            "attestation_id": receipt.attestation_id, "document": receipt.document,
            "token_digest": receipt.token_digest, "receipt_auth": receipt.receipt_auth,
            "created_at": now}))
    return rows


class _UsedTokenGone(Exception):
    """Internal: the used-token row was purged between two attempts (roll back, retry)."""


def _row_from_record(record: AttestationRecord) -> Attestation:
    return Attestation(
        id=record.id, requester=record.requester, host=record.host,
        launch_id=record.launch_id, verdict=record.verdict,
        requested_profile=record.requested_profile, satisfied_profile=record.satisfied_profile,
        check=record.check, reason=record.reason,
        evidence_digests=json.dumps(record.evidence_digests, sort_keys=True))
