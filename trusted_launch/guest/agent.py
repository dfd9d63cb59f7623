"""``POST /v1/challenge``: answer the tenant's challenge with an HMAC keyed from N.

Request ``{"challenge": base64url (16-64 bytes), "server_id": str}``; answer
``{"server_id", "ssh_host_key_fingerprint", "ssh_host_key", "mac"}``. The
agent answers only for its own server id, rejects bad input with 400 and a
reason, oversized bodies with 413, and never logs N. ``GET /v1/status`` shows
the server id, the SSH host key fingerprint and the checked launch receipt
(nothing secret). ``POST /v1/mutual/{start,finish,authorized-keys}`` run mutual
authentication and its session (see :mod:`trusted_launch.guest.mutual`).
"""

from __future__ import annotations

import http.server
import json
import logging
import socket

from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.vm_challenge import MAX_CHALLENGE, MIN_CHALLENGE, challenge_mac
from trusted_launch.guest.errors import BadRequest
from trusted_launch.guest.identity import GuestIdentity
from trusted_launch.guest.mutual import MutualAuthenticator
from trusted_launch.guest.receipt_status import ReceiptStatus

LOG = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096


def answer_challenge(identity: GuestIdentity, request: object) -> dict:
    """The answer to one decoded request body, or BadRequest."""
    if not isinstance(request, dict):
        raise BadRequest("body must be a JSON object")
    server_id = request.get("server_id")
    if not isinstance(server_id, str) or not server_id:
        raise BadRequest("'server_id' must be a non-empty string")
    if server_id != identity.server_id:
        raise BadRequest("'server_id' is not this server's id")
    try:
        challenge = b64url_decode(request.get("challenge"))
    except ValueError:
        raise BadRequest("'challenge' must be base64url") from None
    if not MIN_CHALLENGE <= len(challenge) <= MAX_CHALLENGE:
        raise BadRequest(f"'challenge' must be {MIN_CHALLENGE}-{MAX_CHALLENGE} bytes")
    mac = challenge_mac(identity.nonce, challenge, server_id, identity.ssh_host_key_fingerprint)
    return {
        "server_id": identity.server_id,
        "ssh_host_key_fingerprint": identity.ssh_host_key_fingerprint,
        "ssh_host_key": identity.ssh_host_key,
        "mac": b64url_encode(mac),
    }


def status_document(identity: GuestIdentity,
                    receipt_status: ReceiptStatus | None = None) -> dict:
    """What the agent may tell anyone: no secret."""
    status = receipt_status or ReceiptStatus(present=False)
    return {"server_id": identity.server_id,
            "ssh_host_key_fingerprint": identity.ssh_host_key_fingerprint,
            "nonce_present": True, "receipt": status.to_json()}


class ChallengeHandler(http.server.BaseHTTPRequestHandler):
    """HTTP front end of :func:`answer_challenge`."""

    server_version = "trusted-launch-guest"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server = self.server
        routes = {
            "/v1/challenge": lambda body: answer_challenge(server.identity, body),
            "/v1/mutual/start": server.mutual.start,
            "/v1/mutual/finish": server.mutual.finish,
            "/v1/mutual/authorized-keys": server.mutual.authorize_ssh_key,
        }
        handler = routes.get(self.path)
        if handler is None:
            self._send(404, {"error": "not found"})
            return
        try:
            self._send(200, handler(self._read_json()))
        except BadRequest as exc:
            self._send(exc.status, {"error": exc.reason})

    def do_GET(self) -> None:
        if self.path != "/v1/status":
            self._send(404, {"error": "not found"})
            return
        self._send(200, status_document(self.server.identity, self.server.receipt_status))

    def _read_json(self) -> object:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise BadRequest("a Content-Length header is required", 411)
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            return json.loads(self.rfile.read(length))
        except ValueError:
            raise BadRequest("body is not JSON") from None

    def _send(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        LOG.info("%s %s", self.address_string(), format % args)


class ChallengeServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`GuestIdentity`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], identity: GuestIdentity, *,
                 mutual: MutualAuthenticator | None = None,
                 receipt_status: ReceiptStatus | None = None) -> None:
        self.identity = identity
        self.mutual = mutual or MutualAuthenticator(identity)
        self.receipt_status = receipt_status
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ChallengeHandler)
