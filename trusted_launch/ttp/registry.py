"""Host registration by the operator (CLI and admin API share it): add, approve, remove, list.

An EK is named by the SHA-256 of its certificate's DER, as hex (colons and
upper case are accepted and normalised). Approving a different EK for a
registered host is how a host's TPM is replaced: the AK enrolled with the
old TPM is revoked at once.
"""

from __future__ import annotations

import re
import time

from trusted_launch.ttp.db.access import AccessStore, Outcome, Registration
from trusted_launch.ttp.enrollment import check_host_name
from trusted_launch.ttp.errors import BadRequest, Conflict, NotFound

FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
FINGERPRINT_FIELD = "ek_certificate_sha256"


def normalise_fingerprint(value: object, field: str = FINGERPRINT_FIELD) -> str:
    """64 lowercase hex digits, else BadRequest naming ``field``."""
    text = value.replace(":", "").strip().lower() if isinstance(value, str) else ""
    if not FINGERPRINT.match(text):
        raise BadRequest(field, "must be the SHA-256 of the EK certificate (DER) as 64 hex "
                                "digits")
    return text


class HostRegistry:
    """The operator's host registrations."""

    def __init__(self, access: AccessStore) -> None:
        self.access = access

    def add(self, name: str, ek_fingerprint: str | None) -> Registration:
        """Register ``name`` (with its EK, or to approve the first EK it presents)."""
        check_host_name(name)
        fingerprint = None if ek_fingerprint is None else normalise_fingerprint(ek_fingerprint)
        if self.access.register(name, fingerprint) is Outcome.ALREADY_REGISTERED:
            raise Conflict("host_registered", f"host {name!r} is already registered (approve "
                                              "or remove it)")
        return self.get(name)

    def approve(self, name: str, ek_fingerprint: str | None) -> tuple[Registration, bool]:
        """Approve the host's EK, a new EK, or its next AK; (registration, old AK revoked)."""
        check_host_name(name)
        fingerprint = None if ek_fingerprint is None else normalise_fingerprint(ek_fingerprint)
        outcome, revoked = self.access.approve(name, fingerprint)
        if outcome is Outcome.NOT_REGISTERED:
            raise NotFound("host", f"host {name!r} is not registered")
        if outcome is Outcome.NOTHING_TO_APPROVE:
            raise Conflict("nothing_to_approve", f"host {name!r} has presented no EK yet; give "
                                                 f"its {FINGERPRINT_FIELD}")
        return self.get(name), revoked

    def remove(self, name: str) -> None:
        """Forget ``name`` entirely (its AK no longer attests)."""
        check_host_name(name)
        if not self.access.remove(name):
            raise NotFound("host", f"host {name!r} is not registered")

    def get(self, name: str) -> Registration:
        """The registration of ``name``, else NotFound."""
        check_host_name(name)
        registration = self.access.registration(name, int(time.time()))
        if registration is None:
            raise NotFound("host", f"host {name!r} is not registered")
        return registration

    def list(self) -> list[Registration]:
        """Every registration, by name."""
        return self.access.registrations(int(time.time()))
