"""Who is calling (authentication) and whether the policy lets them (authorization).

Credentials, in this order:

* with ``[api] auth_strategy = keystone``, the identity keystonemiddleware
  confirmed in front of the TTP (``X-Identity-Status: Confirmed``, its
  ``X-Roles``); these headers are ignored otherwise, since a client could
  send them;
* ``X-Auth-Token``: a TTP API token (``trusted-launch-ttp-manage token
  create``; the database keeps its SHA-256 only), or the legacy
  ``[api] admin_token_hash`` key (role admin). A token that is not known is
  refused (401 ``invalid_token``), never treated as anonymous;
* with ``[api] mtls_host_identity``, the verified TLS client certificate's
  common name, as a compute host acting for that host name only.

Nothing else: a request without credentials is anonymous and reaches only
the routes the policy makes public (see :mod:`trusted_launch.ttp.policies`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from oslo_config import cfg
from oslo_policy import policy

from trusted_launch.ttp import policies
from trusted_launch.ttp.db.access import AccessStore, TokenRecord
from trusted_launch.ttp.enrollment import HOST_NAME, check_host_name
from trusted_launch.ttp.errors import BadRequest, Forbidden, Unauthorized
from trusted_launch.ttp.lru import LRUCache

TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name
ROLES = ("admin", "reader", "host")
KEYSTONE_ROLES = frozenset({"admin", "reader"})
MAX_TOKEN = 512
#: Seconds a worker trusts a token it looked up (a revocation takes effect within this).
TOKEN_CACHE_SECONDS = 10.0
CACHED_TOKENS = 1024
#: Seconds a worker keeps a policy decision (an edit of the policy file applies within this).
POLICY_CACHE_SECONDS = 10.0
CACHED_DECISIONS = 4096


def token_hash(token: str) -> str:
    """What the database keeps of an API token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or nobody): roles, the host it acts for, a label for logs."""

    roles: frozenset[str] = field(default_factory=frozenset)
    host: str | None = None
    label: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        return self.label == "anonymous"

    def credentials(self) -> dict:
        """What oslo.policy checks against."""
        return {"roles": sorted(self.roles), "host": self.host}


ANONYMOUS = Principal()


class Authenticator:
    """Turns a request's credentials into a :class:`Principal`."""

    def __init__(self, access: AccessStore, *, admin_token_hash: str | None = None,
                 keystone: bool = False, mtls_host_identity: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.access, self.clock = access, clock
        self._known = LRUCache(CACHED_TOKENS)  # token hash -> (TokenRecord, looked up at)
        self.admin_token_hash = (admin_token_hash or "").lower() or None
        self.keystone, self.mtls_host_identity = keystone, mtls_host_identity

    def authenticate(self, environ: dict) -> Principal:
        """The caller of the request whose WSGI ``environ`` this is."""
        if self.keystone and environ.get("HTTP_X_IDENTITY_STATUS") == "Confirmed":
            roles = {r.strip().lower() for r in environ.get("HTTP_X_ROLES", "").split(",")}
            return Principal(frozenset(roles & KEYSTONE_ROLES),
                             label=f"keystone:{environ.get('HTTP_X_USER_ID', '?')[:64]}")
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if token:
            return self._token_principal(token)
        common_name = environ.get("SSL_CLIENT_S_DN_CN")
        if self.mtls_host_identity and common_name and HOST_NAME.match(common_name):
            return Principal(frozenset({"host"}), common_name, f"mtls:{common_name}")
        return ANONYMOUS

    def _token_principal(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN:
            raise Unauthorized("invalid_token", f"{TOKEN_HEADER} is longer than {MAX_TOKEN}")
        digest = token_hash(token)
        if self.admin_token_hash and hmac.compare_digest(digest, self.admin_token_hash):
            return Principal(frozenset({"admin"}), label="admin_token_hash")
        record = self._lookup(digest)
        if record is None:
            raise Unauthorized("invalid_token", f"the {TOKEN_HEADER} is not a token of this "
                                                "TTP, or it was revoked")
        return Principal(frozenset({record.role}), record.host, f"token:{record.id}")


    def _lookup(self, digest: str) -> TokenRecord | None:
        """The token record, from this worker's cache if looked up in the last few seconds."""
        cached = self._known.get(digest)
        now = self.clock()
        if cached is not None and now - cached[1] < TOKEN_CACHE_SECONDS:  # type: ignore[index]
            return cached[0]  # type: ignore[index]
        record = self.access.token(digest)
        if record is not None:
            self._known.put(digest, (record, now))
        return record


class Authorizer:
    """Enforces the oslo.policy rules of :mod:`trusted_launch.ttp.policies`.

    oslo.policy looks for the policy file and inspects every check on each
    call (milliseconds); a decision depends only on the rule, the caller's
    roles and host and the target, so each worker keeps decisions for
    POLICY_CACHE_SECONDS: an edit of the policy file takes effect within that.
    """

    def __init__(self, conf: cfg.ConfigOpts, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enforcer = policy.Enforcer(conf)
        self.enforcer.register_defaults(policies.list_rules())
        self.clock = clock
        self._decisions = LRUCache(CACHED_DECISIONS)

    def allowed(self, rule: str, target: dict, principal: Principal) -> bool:
        """The policy's decision (cached for a few seconds); policy_missing if no such rule."""
        key = (rule, tuple(sorted(principal.roles)), principal.host,
               tuple(sorted(target.items())))
        now = self.clock()
        cached = self._decisions.get(key)
        if cached is not None and now - cached[1] < POLICY_CACHE_SECONDS:  # type: ignore[index]
            return cached[0]  # type: ignore[index]
        try:
            decision = bool(self.enforcer.authorize(rule, target, principal.credentials(),
                                                    do_raise=False))
        except policy.PolicyNotRegistered:
            raise Forbidden("policy_missing", f"no policy rule {rule!r}: refused") from None
        self._decisions.put(key, (decision, now))
        return decision

    def check(self, rule: str, target: dict, principal: Principal) -> None:
        """Return if ``principal`` may do ``rule`` on ``target``; else 401 or 403."""
        if self.allowed(rule, target, principal):
            return
        if principal.anonymous:
            raise Unauthorized("authentication_required",
                               f"credentials required ({TOKEN_HEADER}, or a client "
                               "certificate where configured)")
        roles = ", ".join(sorted(principal.roles)) or "no role"
        raise Forbidden("not_authorized", f"{principal.label} ({roles}) may not do {rule}")


def new_token(access: AccessStore, role: str, host: str | None,
              description: str | None) -> tuple[TokenRecord, str]:
    """Create an API token: (its record, the token text, shown once and never stored)."""
    if role not in ROLES:
        raise BadRequest("role", f"must be one of {', '.join(ROLES)}")
    if (role == "host") != (host is not None):
        raise BadRequest("host", "a host token names its host; other roles name none")
    if host is not None:
        check_host_name(host)
    if description is not None and (not isinstance(description, str) or len(description) > 255):
        raise BadRequest("description", "must be text of at most 255 characters")
    token = secrets.token_urlsafe(32)
    record = TokenRecord(secrets.token_hex(8), role, host, description)
    access.add_token(record, token_hash(token))
    return record, token
