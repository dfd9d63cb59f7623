"""Security profiles: documents, ordered sets, evaluation and drafting.

A profile says what boot evidence a compute host must present to be
trusted at that level; a stricter (higher level) profile satisfies a request
for a weaker one. Everything here is pure: no I/O, no clock.
"""

from trusted_launch.policy.draft import draft_profile
from trusted_launch.policy.errors import PolicyError, UnknownProfile
from trusted_launch.policy.evaluate import Finding, Verdict, evaluate, evaluate_for_request
from trusted_launch.policy.profile import (
    ImaPolicy,
    SecurityProfile,
    dump_profile,
    load_profile,
    parse_document,
)
from trusted_launch.policy.profiles import ProfileSet

__all__ = [
    "Finding",
    "ImaPolicy",
    "PolicyError",
    "ProfileSet",
    "SecurityProfile",
    "UnknownProfile",
    "Verdict",
    "draft_profile",
    "dump_profile",
    "evaluate",
    "evaluate_for_request",
    "load_profile",
    "parse_document",
]

