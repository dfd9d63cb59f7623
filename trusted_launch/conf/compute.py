"""Options of the compute host's side of the protocol (nova.conf [trusted_launch])."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "trusted_launch"

compute_opts = [
    cfg.ListOpt(
        "allowed_ttp_urls", default=[],
        help="Base URLs of the trusted third parties this host may contact, "
             "for example https://ttp.example.org:9443. An instance's "
             "trusted_ttp property must match one exactly; any other URL is "
             "refused before a connection is made (no SSRF through instance "
             "properties). Empty: trusted launches are refused."),
    cfg.StrOpt(
        "ttp_transport", default="https", choices=["https", "rpc"],
        help="How this host sends its requests to the TTP (attestations, periodic "
             "host attestations). https: POST to the TTP's /v1 API at the allowed "
             "URL. rpc: oslo.messaging RPC calls on ttp_rpc_topic over [DEFAULT] "
             "transport_url, served by trusted-launch-ttp-rpc; the TTP URL must "
             "still be in allowed_ttp_urls and names the TTP the request is for "
             "(the token is sealed to that TTP's key). See doc/ttp-transports.md."),
    cfg.StrOpt(
        "ttp_rpc_topic", default="trusted_launch_ttp",
        help="RPC topic the TTP serves (its [rpc] topic), with ttp_transport = rpc."),
    cfg.StrOpt(
        "ttp_rpc_transport_url", secret=True,
        help="oslo.messaging transport URL of the bus the TTP's RPC topic is on, with "
             "ttp_transport = rpc; for example a vhost of its own, so that the TTP needs "
             "no credentials on Nova's: rabbit://compute:PASSWORD@rabbit:5672/ttp. "
             "Unset: [DEFAULT] transport_url."),
    cfg.StrOpt(
        "ttp_receipt_key_file",
        help="PEM file of the TTP's receipt public key (GET /v1/keys: "
             "receipt_keys[0].public_key). Set: each release must come with the TTP's "
             "signed receipt of a trusted decision about this launch and host, bound to "
             "the N the release holds; else the launch is refused "
             "(release_unauthenticated). Required with ttp_transport = rpc, where "
             "nothing else authenticates the TTP's answer (unset: trusted launch is "
             "disabled on this host, saying why)."),
    cfg.StrOpt(
        "ttp_ca_file",
        help="PEM bundle of CA certificates that sign the TTP's HTTPS "
             "certificate. Unset: the system trust store."),
    cfg.StrOpt(
        "ttp_auth_token_file",
        help="File holding this host's TTP API token (role host, made with "
             "'trusted-launch-ttp-manage token create --role host --host NAME', NAME "
             "being host_name). Sent as X-Auth-Token to the TTP; the TTP requires it for "
             "periodic attestation. Unset: no token (launch attestation still works: "
             "its evidence is signed by this host's AK)."),
    cfg.FloatOpt(
        "ttp_timeout", default=10.0, min=0.1,
        help="Seconds to wait for the TTP to answer one request, over either "
             "transport (the RPC call timeout with ttp_transport = rpc)."),
    cfg.IntOpt(
        "ttp_connect_retries", default=2, min=0,
        help="Times to retry a failed connection to the TTP (over HTTPS) or to the "
             "message bus (over RPC) before the launch is refused as TTP unreachable."),
    cfg.StrOpt(
        "host_name",
        help="Name under which this host is enrolled at the TTP. Unset: the "
             "nova-compute host name."),
    cfg.StrOpt(
        "ak_certificate_file", default="/etc/trusted-launch/ak-cert.pem",
        help="The AK certificate the TTP issued to this host at enrollment."),
    cfg.BoolOpt(
        "notifications_enabled", default=False,
        help="Emit trusted_launch.attestation.success / .refused notifications "
             "(oslo.messaging, messagingv2 driver, topic 'notifications') for "
             "each trusted launch. The transport is [oslo_messaging_notifications] "
             "transport_url, else [DEFAULT] transport_url. Payloads carry the "
             "instance, host, profile and outcome only: never the nonce, token "
             "or image key. Sending never delays or fails a launch."),
    cfg.IntOpt(
        "notification_queue_size", default=1000, min=1,
        help="Notifications kept in memory while the message bus is slow or "
             "down. When the queue is full, new notifications are dropped, "
             "counted and logged once; the launch goes on."),
    cfg.StrOpt(
        "host_security_profile",
        help="Security profile this host is built to meet (a name from "
             "security_profiles). The trusted compute driver reports the "
             "placement trait CUSTOM_TRUSTED_SP_<NAME> for it and for every "
             "weaker profile, and removes other CUSTOM_TRUSTED_SP_* traits "
             "from its provider. Unset, or while the host's TPM or AK "
             "certificate is not usable: no such trait is reported. The TTP "
             "still judges every launch; the trait only guides scheduling."),
    cfg.FloatOpt(
        "host_attestation_interval", default=60.0, min=0.0,
        help="Seconds between this host's periodic attestations: a TPM2_Quote over "
             "bind_key_pcrs (and PCR 10 when ima_measurement_list is set) with a fresh "
             "TTP nonce, sent with the event log and the new part of the IMA list to "
             "POST /v1/hosts/{host}/attestations. The TTP stores the host's status and "
             "announces changes; while the last status is below host_security_profile "
             "the driver reports no CUSTOM_TRUSTED_SP_* trait. 0 disables."),
    cfg.StrOpt(
        "host_attestation_ttp_url",
        help="Base URL of the TTP that receives the periodic attestations. Unset: the "
             "first of allowed_ttp_urls (none: periodic attestation is off)."),
    cfg.StrOpt(
        "ima_measurement_list",
        help="The IMA measurement list to send with periodic attestations, for example "
             "/sys/kernel/security/ima/binary_runtime_measurements. Only the part after "
             "what the TTP already replayed is sent. Unset: IMA is not attested."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(compute_opts, group=GROUP)


def list_opts() -> list:
    return [(GROUP, compute_opts)]
