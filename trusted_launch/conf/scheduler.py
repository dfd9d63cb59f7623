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
    cfg.BoolOpt(
        "host_status_enabled", default=False,
        help="Also refuse hosts whose current trust status, as the TTP last judged it "
             "from their periodic quotes, is below the requested profile. The status "
             "is kept in memory, fed by a background notification listener "
             "(trusted_launch.host.status) and the optional periodic pull below; "
             "the filter itself makes no call per host or per request."),
    cfg.StrOpt(
        "host_status_transport_url", secret=True,
        help="Transport URL of the bus the TTP sends host status notifications to. "
             "Unset: [oslo_messaging_notifications] transport_url, else [DEFAULT] "
             "transport_url."),
    cfg.ListOpt(
        "host_status_topics", default=["notifications"],
        help="Notification topics to listen on for trusted_launch.host.status."),
    cfg.StrOpt(
        "host_status_pool",
        help="Listener pool name: every pool gets its own copy of each notification, "
             "so other consumers of the topic keep theirs. Unset: "
             "trusted-launch-scheduler-<host name>. Scheduler workers on one host share "
             "the pool and so split the notifications; the periodic pull bounds how "
             "late a worker learns of a change it did not receive."),
    cfg.StrOpt(
        "host_status_ttp_url",
        help="Base URL of the TTP to pull GET /v1/hosts?status=1 from every "
             "host_status_pull_interval seconds, in a background thread. Unset: "
             "notifications only."),
    cfg.StrOpt(
        "host_status_ttp_ca_file",
        help="PEM CA bundle for the TTP's HTTPS certificate. Unset: the system store."),
    cfg.StrOpt(
        "host_status_ttp_token_file",
        help="File holding a TTP API token of role reader (made with "
             "'trusted-launch-ttp-manage token create --role reader'), sent as "
             "X-Auth-Token with the pull: the TTP does not list host status anonymously."),
    cfg.IntOpt(
        "host_status_pull_interval", default=60, min=1,
        help="Seconds between two pulls of the host status listing from the TTP."),
    cfg.IntOpt(
        "host_status_max_age", default=300, min=1,
        help="Seconds after which a host's good status no longer counts as current "
             "(only matters with host_status_required). A status below the request "
             "always refuses the host until a newer one arrives."),
    cfg.BoolOpt(
        "host_status_required", default=False,
        help="Refuse hosts with no current status (never attested, or last judged more "
             "than host_status_max_age seconds ago). Default: such hosts are judged by "
             "their aggregate's profile alone."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(scheduler_opts, group=GROUP)


def list_opts() -> list:
    return [(GROUP, scheduler_opts)]
