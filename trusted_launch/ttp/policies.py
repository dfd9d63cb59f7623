"""The TTP's access policy: one oslo.policy rule per route, defaults in code.

Roles: ``admin`` (profiles, host registrations, API tokens), ``reader``
(host status, registrations and audit records; admin includes it), ``host``
(a compute host acting for itself only: its credentials name one host, and
``host:%(host)s`` compares that name with the host in the path). Operators
override rules in the file ``[oslo_policy] policy_file`` names; a sample is
generated with ``oslopolicy-sample-generator --namespace trusted-launch-ttp``.

Public rules ("") are the routes whose answer is either public by nature
(the version documents, the OpenAPI document, the TTP's public keys, the
profile names tenants choose from) or authenticated by what the request
proves rather than by who sends it: enrollment (the operator's registration
of the EK, and a challenge only that TPM can answer), activation (the
secret only that TPM could decrypt), launch attestation (evidence signed by
the AK the TTP certified for the host it names) and receipts (the tenant's
proof of N). Every other route needs a role; a route without a rule is
refused (``policy_missing``).
"""

from __future__ import annotations

from oslo_policy import policy

NAMESPACE = "trusted-launch-ttp"
ADMIN = "rule:admin"
READER = "rule:reader"
HOST_SELF = "rule:host_self"
PUBLIC = ""


def _route(name: str, check: str, description: str, method: str,
           path: str) -> policy.DocumentedRuleDefault:
    return policy.DocumentedRuleDefault(name=name, check_str=check, description=description,
                                        operations=[{"method": method, "path": path}])


BASE_RULES = [
    policy.RuleDefault("admin", "role:admin", description="TTP operators."),
    policy.RuleDefault("reader", "role:admin or role:reader",
                       description="Read host status, registrations and audit records."),
    policy.RuleDefault("host_self", "role:host and host:%(host)s",
                       description="A compute host acting for itself (the host in the path)."),
]

ROUTE_RULES = [
    _route("ttp:versions:get", PUBLIC, "API version discovery (public).", "GET", "/, /v1"),
    _route("ttp:openapi:get", PUBLIC, "The OpenAPI document (public).", "GET",
           "/v1/openapi.json"),
    _route("ttp:keys:get", PUBLIC, "The TTP's public token and receipt keys; tenants seal "
           "launch tokens to them (public).", "GET", "/v1/keys"),
    _route("ttp:hosts:enroll", PUBLIC, "Start enrollment; allowed only for a host the operator "
           "registered, with its registered EK.", "POST", "/v1/hosts"),
    _route("ttp:hosts:activate", PUBLIC, "Answer the credential challenge (the secret only the "
           "host's TPM can recover).", "POST", "/v1/hosts/{host}/activation"),
    _route("ttp:hosts:list", READER, "List host registrations.", "GET", "/v1/hosts"),
    _route("ttp:hosts:status", READER, "The fleet's current attestation status.", "GET",
           "/v1/hosts?status=1"),
    _route("ttp:hosts:get", f"{READER} or {HOST_SELF}", "One host's registration and "
           "enrollment state.", "GET", "/v1/hosts/{host}"),
    _route("ttp:hosts:register", ADMIN, "Register a host (operator consent to enroll).", "PUT",
           "/v1/hosts/{host}"),
    _route("ttp:hosts:approve", ADMIN, "Approve a host's EK or its enrollment of a new AK.",
           "POST", "/v1/hosts/{host}/approval"),
    _route("ttp:hosts:remove", ADMIN, "Remove a host: registration, AK, status, host tokens.",
           "DELETE", "/v1/hosts/{host}"),
    _route("ttp:hosts:challenge", HOST_SELF, "A quote nonce for continuous attestation.",
           "POST", "/v1/hosts/{host}/challenges"),
    _route("ttp:hosts:attest", HOST_SELF, "A periodic quote (continuous attestation).", "POST",
           "/v1/hosts/{host}/attestations"),
    _route("ttp:profiles:list", PUBLIC, "Profile names, levels and descriptions; tenants "
           "choose one (public).", "GET", "/v1/profiles"),
    _route("ttp:profiles:get", READER, "A profile document with its reference values.", "GET",
           "/v1/profiles/{name}"),
    _route("ttp:profiles:put", ADMIN, "Create or replace a profile.", "PUT",
           "/v1/profiles/{name}"),
    _route("ttp:profiles:delete", ADMIN, "Delete a profile.", "DELETE", "/v1/profiles/{name}"),
    _route("ttp:attestations:create", PUBLIC, "Launch attestation: evidence signed by the AK "
           "the TTP certified for the host it names.", "POST", "/v1/attestations"),
    _route("ttp:attestations:get", READER, "An attestation's audit record.", "GET",
           "/v1/attestations/{attestation_id}"),
    _route("ttp:receipts:get", PUBLIC, "Signed receipts; released only on the tenant's proof "
           "of N (X-Trusted-Launch-Receipt-Auth).", "GET", "/v1/receipts/{token_digest}"),
    _route("ttp:tokens:create", ADMIN, "Create an API token (printed once; only its hash is "
           "stored).", "POST", "/v1/tokens"),
    _route("ttp:metrics:get", READER, "Operational metrics.", "GET", "/metrics"),
]


def list_rules() -> list[policy.RuleDefault]:
    """Every default rule (the ``oslo.policy.policies`` entry point)."""
    return [*BASE_RULES, *ROUTE_RULES]


def get_enforcer():
    """An enforcer with the defaults (the ``oslo.policy.enforcer`` entry point, for the tools)."""
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf([], project="trusted-launch", default_config_files=[])
    enforcer = policy.Enforcer(conf)
    enforcer.register_defaults(list_rules())
    return enforcer
