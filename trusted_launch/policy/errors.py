"""Exception types of the security-profile policy package."""

from __future__ import annotations


class PolicyError(ValueError):
    """A profile document is invalid.

    ``path`` names the offending field (``pcrs.sha256.0[2]``), ``problem``
    says what is wrong with it; the message is ``"path: problem"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class UnknownProfile(PolicyError):
    """A profile name that the profile set does not contain."""

    def __init__(self, name: str) -> None:
        super().__init__("profile", f"no security profile named {name!r}")
        self.name = name
