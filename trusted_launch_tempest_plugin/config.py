"""tempest.conf's ``[trusted_launch]`` group: where the TTP is and what the cloud offers.

Every test skips, saying why, when ``[service_available] trusted_launch`` is
false or the option a test needs is empty (see doc/tempest.md).
"""

from __future__ import annotations

from oslo_config import cfg

service_option = cfg.BoolOpt(
    "trusted_launch", default=False,
    help="Whether the cloud runs trusted launch (TrustedLibvirtDriver on its computes, "
         "SecurityProfileFilter in its scheduler, a TTP).")

trusted_launch_group = cfg.OptGroup(name="trusted_launch",
                                    title="Trusted launch options")

TrustedLaunchOpts = [
    cfg.StrOpt("ttp_url",
               help="Base URL of the TTP (https://...), as tenants use it to make tokens."),
    cfg.StrOpt("ca_file",
               help="CA bundle that verifies the TTP's TLS certificate."),
    cfg.ListOpt("profiles", default=["low", "medium", "high"],
                help="The cloud's security profiles, weakest first (as nova.conf's "
                     "[trusted_launch] security_profiles)."),
    cfg.StrOpt("profile", default="high",
               help="The profile the tests ask for; a host meets it when it meets this "
                    "profile or a stronger one."),
    cfg.DictOpt("host_profiles", default={},
                help="host:profile for every compute host (the strongest profile it "
                     "meets). Empty: read from the host aggregates whose metadata has "
                     "trusted_sp=<profile> (admin credentials)."),
    cfg.StrOpt("image_ref",
               help="Glance image ID of a guest that runs the trusted-launch agent (it "
                    "answers the tenant's challenge)."),
    cfg.StrOpt("image_file",
               help="Local file of that same image (for the encrypted-image test, which "
                    "encrypts it and uploads the result). Empty: that test skips."),
    cfg.StrOpt("flavor_ref",
               help="Flavor ID big enough for image_ref's guest."),
    cfg.IntOpt("agent_port", default=8950,
               help="TCP port of the guest agent."),
    cfg.StrOpt("tenant_namespace", default="",
               help="Network namespace from which the tenant reaches its guests' fixed "
                    "IPs (the challenge runs there through 'ip netns exec'; needs root). "
                    "Empty: guests are reachable from where tempest runs."),
    cfg.StrOpt("nonce_dir",
               help="Directory (0700) for the tenant's nonce files. Default: a temporary "
                    "directory per test class."),
    cfg.IntOpt("answer_timeout", default=900,
               help="Seconds to wait for a booted guest's agent to answer the challenge."),
    cfg.IntOpt("challenge_timeout", default=60,
               help="Seconds one challenge waits for the agent's answer (a guest under "
                    "TCG on a loaded host answers slowly)."),
    cfg.IntOpt("scheduling_launches", default=2,
               help="How many extra servers the 'weak host never chosen' test launches."),
    cfg.BoolOpt("encrypted_images", default=True,
                help="Whether the cloud boots LUKS-encrypted images whose key the TTP "
                     "releases."),
]
