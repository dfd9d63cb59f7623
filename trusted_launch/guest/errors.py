"""Errors of the guest agent: each becomes one JSON error answer."""


class BadRequest(Exception):
    """A request the agent refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
