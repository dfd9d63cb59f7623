"""``POST /v1/challenge``: answer the tenant's challenge with an HMAC keyed from N.

Request ``{"challenge": base64url (16-64 bytes), "server_id": str}``; answer
``{"server_id", "ssh_host_key_fingerprint", "ssh_host_key", "mac"}``. The
agent answers only for its own server id, rejects bad input with 400 and a
reason, oversized bodies with 413, and never logs N. ``GET /v1/status`` shows
the server id and SSH host key fingerprint (nothing secret).
"""

from __future__ import annotations

import http.server
import json
import logging
import socket

from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.vm_challenge import MAX_CHALLENGE, MIN_CHALLENGE, challenge_mac
from trusted_launch.guest.identity import GuestIdentity

LOG = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096


class BadRequest(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


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


def status_document(identity: GuestIdentity) -> dict:
    """What the agent may tell anyone: no secret."""
    return {"server_id": identity.server_id,
            "ssh_host_key_fingerprint": identity.ssh_host_key_fingerprint,
            "nonce_present": True}


class ChallengeHandler(http.server.BaseHTTPRequestHandler):
    """HTTP front end of :func:`answer_challenge`."""

    server_version = "trusted-launch-guest"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.path != "/v1/challenge":
            self._send(404, {"error": "not found"})
            return
        try:
            self._send(200, answer_challenge(self.server.identity, self._read_json()))
        except BadRequest as exc:
            self._send(exc.status, {"error": exc.reason})

    def do_GET(self) -> None:
        if self.path != "/v1/status":
            self._send(404, {"error": "not found"})
            return
        self._send(200, status_document(self.server.identity))

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

    def __init__(self, address: tuple[str, int], identity: GuestIdentity) -> None:
        self.identity = identity
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ChallengeHandler)
