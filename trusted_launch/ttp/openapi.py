"""The OpenAPI 3.0 description of the TTP's /v1 API (served at /v1/openapi.json).

Each operation names its oslo.policy rule (``x-policy-rule``, from
:mod:`trusted_launch.ttp.policies`) and requires the API token unless every
rule of the operation is public.
"""

from __future__ import annotations

import copy

from trusted_launch.ttp.policies import ROUTE_RULES

_B64 = {"type": "string", "format": "byte", "minLength": 1}
_HOST = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
_PROFILE_NAME = {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}
_UUID = {"type": "string", "format": "uuid",
         "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return {"description": description, **_json(_ref("Error"))}


_COMMON_ERRORS = {"400": _error("Malformed request"), "405": _error("Method not allowed"),
                  "503": _error("A backing store is unavailable")}
_BODY_ERRORS = {"413": _error("Body larger than the limit"),
                "415": _error("Unsupported content type")}

_SCHEMAS: dict = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["code", "check", "reason"], "properties": {
            "code": {"type": "string"}, "check": {"type": "string"},
            "reason": {"type": "string"}}},
        "attestation_id": {"type": "string"}}},
    "Link": {"type": "object", "properties": {"rel": {"type": "string"},
                                              "href": {"type": "string"}}},
    "Version": {"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": "string"}, "status": {"type": "string"},
        "links": {"type": "array", "items": _ref("Link")}}},
    "TokenKey": {"type": "object", "required": ["id", "algorithm", "public_key", "not_after"],
                 "properties": {
                     "id": {"type": "string"},
                     "algorithm": {"type": "string",
                                   "enum": ["hpke-x25519-hkdf-sha256-aes128gcm"]},
                     "public_key": {"type": "string", "description": "base64url raw key"},
                     "not_after": {"type": "integer", "nullable": True}}},
    "ReceiptKey": {"type": "object", "required": ["id", "algorithm", "public_key"],
                   "properties": {
                       "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                       "algorithm": {"type": "string", "enum": ["ecdsa-p256-sha256"]},
                       "public_key": {"type": "string", "description": "PEM SPKI"}}},
    "Receipt": {"type": "object", "additionalProperties": False, "required": [
        "format", "key_id", "algorithm", "payload", "signature"],
        "description": "ECDSA P-256 signature over 'trusted-launch/v1 receipt' 0x00 key_id "
                       "0x00 payload; the payload is canonical JSON (ReceiptPayload)",
        "properties": {
            "format": {"type": "string", "enum": ["trusted-launch-receipt/v1"]},
            "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "algorithm": {"type": "string", "enum": ["ES256"]},
            "payload": {"type": "string", "description": "base64url canonical JSON"},
            "signature": {"type": "string", "description": "base64url r || s (64 bytes)"}}},
    "ReceiptPayload": {"type": "object", "additionalProperties": False, "required": [
        "version", "attestation_id", "launch_id", "host", "verdict", "issued_at"],
        "properties": {
            "version": {"type": "integer", "enum": [1]},
            "attestation_id": {"type": "string"}, "launch_id": {"type": "string"},
            "host": {"type": "string"},
            "verdict": {"type": "string", "enum": ["trusted", "refused"]},
            "issued_at": {"type": "integer", "description": "unix seconds"},
            "requested_profile": {"type": "string", "nullable": True},
            "satisfied_profile": {"type": "string", "nullable": True},
            "check": {"type": "string", "nullable": True},
            "reason": {"type": "string", "nullable": True},
            "image_digest": {"type": "string", "nullable": True, "example": "sha512:..."},
            "token_digest": {"type": "string", "nullable": True, "pattern": "^[0-9a-f]{64}$"},
            "nonce_binding": {"type": "string", "nullable": True,
                              "description": "HMAC(HKDF(N, 'trusted-launch/v1 "
                                             "receipt-binding'), token digest), hex"},
            "ttp_key_id": {"type": "string", "nullable": True},
            "evidence": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "SHA-256 hex of each piece of evidence"}}},
    "EnrollmentRequest": {"type": "object", "additionalProperties": False, "required": [
        "host", "ek_certificate", "ek_public", "ak_public"], "properties": {
        "host": _HOST, "ek_certificate": {**_B64, "description": "DER X.509"},
        "ek_public": {**_B64, "description": "TPM2B_PUBLIC"},
        "ak_public": {**_B64, "description": "TPM2B_PUBLIC"}}},
    "Challenge": {"type": "object", "required": [
        "host", "credential_blob", "encrypted_secret"], "properties": {
        "host": {"type": "string"}, "credential_blob": _B64, "encrypted_secret": _B64}},
    "Activation": {"type": "object", "additionalProperties": False, "required": ["secret"],
                   "properties": {"secret": _B64}},
    "AKCertificate": {"type": "object", "required": ["ak_certificate"], "properties": {
        "ak_certificate": {"type": "string", "description": "PEM"}}},
    "Host": {"type": "object", "required": ["host", "state"], "properties": {
        "host": {"type": "string"},
        "state": {"type": "string", "enum": ["awaiting_approval", "registered", "active"]},
        "ek_certificate_sha256": {"type": "string", "nullable": True},
        "pending_ek_certificate_sha256": {"type": "string", "nullable": True},
        "enrollment_approved": {"type": "boolean"},
        "failed_activations": {"type": "integer"},
        "live_challenges": {"type": "integer"},
        "ak_name": {"type": "string", "nullable": True},
        "registered_at": {"type": "string", "nullable": True},
        "activated_at": {"type": "string", "nullable": True},
        "last_attested_at": {"type": "string", "nullable": True, "description":
                             "ISO 8601 UTC time of the host's latest accepted periodic "
                             "quote; null: it never sent one"},
        "revoked_ak": {"type": "boolean", "description": "approval only: the AK of the "
                                                         "previous TPM was revoked"}}},
    "HostRegistration": {"type": "object", "additionalProperties": False, "properties": {
        "ek_certificate_sha256": {"type": "string", "pattern": "^[0-9A-Fa-f:]{64,95}$",
                                  "description": "SHA-256 of the EK certificate (DER)"}}},
    "TokenRequest": {"type": "object", "required": ["role"], "additionalProperties": False,
                     "properties": {
                         "role": {"type": "string", "enum": ["admin", "reader", "host"]},
                         "host": {"type": "string", "nullable": True,
                                  "description": "role host only: the host it acts for"},
                         "description": {"type": "string", "maxLength": 255,
                                         "nullable": True}}},
    "TokenCreated": {"type": "object", "required": ["id", "role", "token"], "properties": {
        "id": {"type": "string"}, "role": {"type": "string"},
        "host": {"type": "string", "nullable": True},
        "token": {"type": "string", "description": "shown once; only its SHA-256 is kept"}}},
    "Profile": {"type": "object", "required": ["name", "level"],
                "additionalProperties": True, "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"},
                    "level": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "description": {"type": "string"},
                    "require_secure_boot": {"type": "boolean"},
                    "pcrs": {"type": "object"}, "event_digests": {"type": "object"},
                    "forbid_event_types": {"type": "array"}, "ima": {"type": "object"}}},
    "ProfileSummary": {"type": "object", "required": ["name", "level"], "properties": {
        "name": {"type": "string"}, "level": {"type": "integer"},
        "description": {"type": "string"}}},
    "AttestationRequest": {"type": "object", "additionalProperties": False, "required": [
        "host", "launch_id", "token", "ak_certificate", "bind_key_public", "certify_info",
        "certify_signature", "event_log", "bind_key_pcrs"], "properties": {
        "host": _HOST, "launch_id": {"type": "string", "pattern": "^[!-~]{1,255}$"},
        "token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,4096}$",
                  "description": "sealed launch token (base64url)"},
        "ak_certificate": {"type": "string", "pattern": "-----BEGIN CERTIFICATE-----",
                           "maxLength": 16384, "description": "PEM"},
        "bind_key_public": {**_B64, "description": "TPM2B_PUBLIC"},
        "certify_info": {**_B64, "description": "TPMS_ATTEST"},
        "certify_signature": {**_B64, "description": "TPMT_SIGNATURE"},
        "event_log": {**_B64, "description": "binary_bios_measurements"},
        "bind_key_pcrs": {"type": "string", "maxLength": 256,
                          "pattern": "^(sha1|sha256|sha384|sha512|sm3_256):[0-9]{1,2}(,[0-9]{1,2})*"
                                     "(\\+(sha1|sha256|sha384|sha512|sm3_256):[0-9]{1,2}"
                                     "(,[0-9]{1,2})*)*$",
                          "example": "sha256:0,1,2,3,4,5,6,7"}}},
    "AttestationResult": {"type": "object", "required": [
        "attestation_id", "verdict", "profile", "satisfied_profile", "released"],
        "properties": {
            "attestation_id": {"type": "string"},
            "verdict": {"type": "string", "enum": ["trusted"]},
            "profile": {"type": "string"}, "satisfied_profile": {"type": "string"},
            "released": {**_B64, "description": "envelope sealed to the bind key"},
            "receipt": _ref("Receipt")}},
    "AttestationRecord": {"type": "object", "required": ["attestation_id", "verdict"],
                          "properties": {
                              "attestation_id": {"type": "string"},
                              "created_at": {"type": "string", "nullable": True},
                              "requester": {"type": "string"}, "host": {"type": "string"},
                              "launch_id": {"type": "string"},
                              "verdict": {"type": "string", "enum": ["trusted", "refused"]},
                              "profile": {"type": "string", "nullable": True},
                              "satisfied_profile": {"type": "string", "nullable": True},
                              "check": {"type": "string", "nullable": True},
                              "reason": {"type": "string", "nullable": True},
                              "evidence_digests": {"type": "object", "additionalProperties":
                                                   {"type": "string"}}}},
    "HostNonce": {"type": "object", "required": ["host", "nonce", "expires_at"], "properties": {
        "host": {"type": "string"}, "nonce": _B64, "expires_at": {"type": "number"}}},
    "HostQuote": {"type": "object", "additionalProperties": False,
                  "required": ["nonce", "quote", "signature", "event_log"], "properties": {
                      "nonce": _B64, "quote": {**_B64, "description": "TPMS_ATTEST"},
                      "signature": {**_B64, "description": "TPMT_SIGNATURE"},
                      "event_log": {**_B64, "description": "binary_bios_measurements"},
                      "ima_log": {"type": "string", "format": "byte", "description":
                                  "the IMA list from byte ima_offset on (the last entry "
                                  "the TTP replayed, then new ones); needs PCR 10 quoted"},
                      "ima_offset": {"type": "integer", "minimum": 0, "description":
                                     "0 replays the whole list again"}}},
    "HostStatus": {"type": "object", "required": ["host", "profile", "trusted", "checked_at"],
                   "properties": {
                       "host": {"type": "string"},
                       "profile": {"type": "string", "nullable": True,
                                   "description": "strongest profile met; null: untrusted"},
                       "trusted": {"type": "boolean"},
                       "check": {"type": "string", "nullable": True},
                       "reason": {"type": "string", "nullable": True},
                       "checked_at": {"type": "number"},
                       "last_attested_at": {"type": "string", "description":
                                            "checked_at as ISO 8601 UTC"},
                       "previous_profile": {"type": "string", "nullable": True},
                       "ima_offset": {"type": "integer"},
                       "ima_count": {"type": "integer", "nullable": True}}},
}


def _path_param(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_PROFILE_PARAM = [_path_param("name", _PROFILE_NAME)]
_HOST_PARAM = [_path_param("host", _HOST)]

_PATHS: dict = {
    "/": {"get": {"operationId": "listVersions", "summary": "API versions", "responses": {
        "200": {"description": "Versions", **_json({"type": "object", "properties": {
            "versions": {"type": "array", "items": _ref("Version")}}})}}}},
    "/v1": {"get": {"operationId": "showVersion", "summary": "The v1 API", "responses": {
        "200": {"description": "Version", **_json({"type": "object", "properties": {
            "version": _ref("Version")}})}}}},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                 "responses": {"200": {"description": "OpenAPI 3 document",
                                                       **_json({"type": "object"})}}}},
    "/v1/keys": {"get": {"operationId": "listTokenKeys",
                         "summary": "Public keys to seal launch tokens to (current first)",
                         "responses": {"200": {"description": "Keys", **_json({
                             "type": "object", "required": ["keys"], "properties": {
                                 "keys": {"type": "array", "items": _ref("TokenKey")},
                                 "receipt_keys": {"type": "array",
                                                  "items": _ref("ReceiptKey")},
                                 "profiles": {"type": "array", "items": {"type": "string"},
                                              "description": "Names of the security "
                                              "profiles a token may ask for, weakest "
                                              "first"}}})},
                             "503": _error("Key store unavailable")}}},
    "/v1/hosts": {"get": {
        "operationId": "listHosts",
        "summary": "Host registrations; with status=1 the current trust status of every host",
        "parameters": [{"name": "status", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["1", "true"]}}],
        "responses": {"200": {"description": "Registrations (Host) or statuses (HostStatus)",
                              **_json({"type": "object", "required": ["hosts"], "properties": {
                                  "hosts": {"type": "array", "items": {"oneOf": [
                                      _ref("Host"), _ref("HostStatus")]}},
                                  "now": {"type": "number"}}})},
            "404": _error("Host status not enabled"), **_COMMON_ERRORS}}, "post": {
        "operationId": "enrollHost", "summary": "Start enrolling a compute host's TPM",
        "requestBody": {"required": True, **_json(_ref("EnrollmentRequest"))},
        "responses": {"201": {"description": "Credential challenge", **_json(_ref("Challenge"))},
                      "403": _error("Enrollment refused (not registered, EK not the "
                                    "registered one, new AK not approved)"),
                      "409": _error("A challenge for this AK is live"),
                      "429": _error("Too many live challenges for this host"),
                      **_COMMON_ERRORS, **_BODY_ERRORS}}},
    "/v1/hosts/{host}": {
        "get": {"operationId": "showHost", "summary": "Registration and enrollment of a host",
                "parameters": _HOST_PARAM,
                "responses": {"200": {"description": "Host", **_json(_ref("Host"))},
                              "404": _error("Not registered"), **_COMMON_ERRORS}},
        "put": {"operationId": "registerHost",
                "summary": "Register a host (operator consent to enroll)",
                "parameters": _HOST_PARAM,
                "requestBody": {"required": False, **_json(_ref("HostRegistration"))},
                "responses": {"201": {"description": "Registered", **_json(_ref("Host"))},
                              "409": _error("Already registered"), **_COMMON_ERRORS,
                              **_BODY_ERRORS}},
        "delete": {"operationId": "removeHost",
                   "summary": "Remove a host: registration, AK, status, host tokens",
                   "parameters": _HOST_PARAM,
                   "responses": {"204": {"description": "Removed"},
                                 "404": _error("Not registered"), **_COMMON_ERRORS}}},
    "/v1/hosts/{host}/approval": {"post": {
        "operationId": "approveHost",
        "summary": "Approve the host's EK, a replacement TPM's EK, or its next AK",
        "parameters": _HOST_PARAM,
        "requestBody": {"required": False, **_json(_ref("HostRegistration"))},
        "responses": {"200": {"description": "Approved", **_json(_ref("Host"))},
                      "404": _error("Not registered"),
                      "409": _error("No EK presented yet; give it"), **_COMMON_ERRORS,
                      **_BODY_ERRORS}}},
    "/v1/tokens": {"post": {
        "operationId": "createToken", "summary": "Create an API token (shown once)",
        "requestBody": {"required": True, **_json(_ref("TokenRequest"))},
        "responses": {"201": {"description": "Created", **_json(_ref("TokenCreated"))},
                      **_COMMON_ERRORS, **_BODY_ERRORS}}},
    "/v1/hosts/{host}/activation": {"post": {
        "operationId": "activateHost", "summary": "Answer the credential challenge",
        "parameters": _HOST_PARAM,
        "requestBody": {"required": True, **_json(_ref("Activation"))},
        "responses": {"200": {"description": "AK certificate", **_json(_ref("AKCertificate"))},
                      "403": _error("Activation failed: wrong or late answer, or no such "
                                    "host (changes nothing)"),
                      "429": _error("Too many wrong answers from this client"),
                      **_COMMON_ERRORS, **_BODY_ERRORS}}},
    "/v1/hosts/{host}/challenges": {"post": {
        "operationId": "hostChallenge", "summary": "A fresh single-use nonce to quote over",
        "parameters": _HOST_PARAM,
        "responses": {"201": {"description": "Nonce", **_json(_ref("HostNonce"))},
                      "403": _error("Host not enrolled and active"), **_COMMON_ERRORS}}},
    "/v1/hosts/{host}/attestations": {"post": {
        "operationId": "hostAttestation",
        "summary": "Periodic quote of a host; its current status",
        "parameters": _HOST_PARAM,
        "requestBody": {"required": True, **_json(_ref("HostQuote"))},
        "responses": {"200": {"description": "The host's status (maybe untrusted)",
                              **_json(_ref("HostStatus"))},
                      "403": _error("Not the host's evidence (nonce, AK); nothing changed"),
                      **_COMMON_ERRORS, **_BODY_ERRORS}}},
    "/v1/profiles": {"get": {
        "operationId": "listProfiles", "summary": "Security profiles, weakest first",
        "responses": {"200": {"description": "Profiles", **_json({
            "type": "object", "properties": {
                "profiles": {"type": "array", "items": _ref("ProfileSummary")}}})},
            "503": _error("Database unavailable")}}},
    "/v1/profiles/{name}": {
        "get": {"operationId": "showProfile", "parameters": _PROFILE_PARAM,
                "responses": {"200": {"description": "Profile", **_json(_ref("Profile"))},
                              "404": _error("No such profile"), **_COMMON_ERRORS}},
        "put": {"operationId": "putProfile", "parameters": _PROFILE_PARAM,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("Profile")},
                    "application/yaml": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "Replaced", **_json(_ref("Profile"))},
                              "201": {"description": "Created", **_json(_ref("Profile"))},
                              "409": _error("Level already used by another profile"),
                              **_COMMON_ERRORS, **_BODY_ERRORS}},
        "delete": {"operationId": "deleteProfile", "parameters": _PROFILE_PARAM,
                   "responses": {"204": {"description": "Deleted"},
                                 "404": _error("No such profile"), **_COMMON_ERRORS}}},
    "/v1/attestations": {"post": {
        "operationId": "attest", "summary": "Attest a host for one launch; release N, H",
        "requestBody": {"required": True, **_json(_ref("AttestationRequest"))},
        "responses": {"200": {"description": "Trusted", **_json(_ref("AttestationResult"))},
                      "403": _error("Refused (recorded)"), **_COMMON_ERRORS,
                      **_BODY_ERRORS}}},
    "/v1/attestations/{attestation_id}": {"get": {
        "operationId": "showAttestation", "summary": "Audit record of an attestation",
        "parameters": [_path_param("attestation_id", _UUID)],
        "responses": {"200": {"description": "Record", **_json(_ref("AttestationRecord"))},
                      "404": _error("No such attestation"), **_COMMON_ERRORS}}},
    "/v1/receipts/{token_digest}": {"get": {
        "operationId": "listReceipts",
        "summary": "Signed receipts of every decision about one launch token",
        "description": "token_digest is the SHA-256 hex of the decoded token. The caller "
                       "proves knowledge of N with X-Receipt-Proof; the TTP stores only "
                       "SHA-256 of that proof.",
        "parameters": [
            _path_param("token_digest", {"type": "string", "pattern": "^[0-9a-f]{64}$"}),
            {"name": "X-Receipt-Proof", "in": "header", "required": True,
             "description": "base64url(HKDF-SHA256(N, info='trusted-launch/v1 receipt'))",
             "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Receipts, oldest first", **_json({
            "type": "object", "required": ["token_digest", "receipts"], "properties": {
                "token_digest": {"type": "string"},
                "receipts": {"type": "array", "items": _ref("Receipt")}}})},
            "403": _error("The proof does not match"),
            "404": _error("No decision about this token"), **_COMMON_ERRORS}}},
}


def _operation_rules() -> dict[tuple[str, str], list]:
    """(path, method) -> the policy rules that govern it."""
    rules: dict[tuple[str, str], list] = {}
    for rule in ROUTE_RULES:
        for operation in rule.operations:
            for path in operation["path"].split(", "):
                key = (path.split("?")[0], operation["method"].lower())
                rules.setdefault(key, []).append(rule)
    return rules


def _with_security(paths: dict) -> dict:
    rules = _operation_rules()
    for path, operations in paths.items():
        for method, operation in operations.items():
            governing = rules[(path, method)]
            operation["x-policy-rule"] = ", ".join(rule.name for rule in governing)
            if all(rule.check_str == "" for rule in governing):
                operation["security"] = []
                continue
            operation["security"] = [{"apiToken": []}]
            operation["responses"].setdefault("401", _error("No or unknown credentials"))
            operation["responses"].setdefault("403", _error("The policy does not allow it"))
    return paths


def openapi_document(server_url: str | None = None) -> dict:
    """The OpenAPI 3.0.3 document; ``server_url`` becomes its server entry."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "trusted-launch TTP", "version": "1.0",
                 "description": "Trusted third party of the trusted VM launch protocol."},
        "servers": [{"url": server_url or "/"}],
        "paths": _with_security(copy.deepcopy(_PATHS)),
        "components": {"schemas": copy.deepcopy(_SCHEMAS), "securitySchemes": {
            "apiToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token",
                         "description": "A TTP API token (role admin, reader or host), or "
                                        "a Keystone token with auth_strategy = keystone. "
                                        "Hosts may instead use a TLS client certificate "
                                        "where mtls_host_identity is set."}}},
    }
