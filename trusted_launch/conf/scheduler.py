"""Options of the security-profile scheduler filter (nova.conf [trusted_launch])."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "trusted_launch"

scheduler_opts = [
    cfg.ListOpt(
        "security_profiles", default=["low", "medium", "high"],
        help="Security profile names, weakest first. A host in a profile "
             "satisfies requests for that profile and every profile listed "
             "before it. Names match [a-z0-9_-]{1,32}; each maps to the "
             "placement trait CUSTOM_TRUSTED_SP_<NAME> (upper case, '-' -> "
             "'_'), so two names must not map to the same trait."),
    cfg.StrOpt(
        "profile_aggregate_key", default="trusted_sp",
        help="Host aggregate metadata key whose value is the security profile "
             "of the aggregate's hosts (for example trusted_sp=high). A host "
             "in several aggregates with different profiles counts as the "
             "weakest of them; a host in none passes only requests without a "
             "profile."),
    cfg.BoolOpt(
        "profile_from_server_metadata", default=True,
        help="Also read the requested profile from the server's metadata key "
             "trusted_sp (server create --property trusted_sp=high). Costs "
             "two database reads per scheduling request (never per host)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(scheduler_opts, group=GROUP)


def list_opts() -> list:
    return [(GROUP, scheduler_opts)]
