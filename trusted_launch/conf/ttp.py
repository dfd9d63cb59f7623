"""Options of the trusted third party (TTP) service, read from its own config file."""

from __future__ import annotations

from oslo_config import cfg

api_group = cfg.OptGroup("api", title="TTP REST API", help="HTTPS listener of the TTP.")
database_group = cfg.OptGroup("database", title="TTP database")
keys_group = cfg.OptGroup("key_store", title="TTP token keys and attestation CA")
enrollment_group = cfg.OptGroup("enrollment", title="Compute host enrollment")
attestation_group = cfg.OptGroup("attestation", title="Launch attestation")
host_status_group = cfg.OptGroup("host_status", title="Continuous host attestation")
rpc_group = cfg.OptGroup("rpc", title="TTP RPC server",
                         help="trusted-launch-ttp-rpc: the host-facing API over oslo.messaging "
                              "RPC on [DEFAULT] transport_url.")

api_opts = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1",
                       help="Address the HTTPS API listens on. The default serves this "
                            "machine only; set the address compute hosts and tenants reach "
                            "(or 0.0.0.0 / :: for every interface)."),
    cfg.PortOpt("bind_port", default=8443, help="TCP port of the HTTPS API (0: any free port)."),
    cfg.StrOpt("cert_file", help="PEM server certificate (with chain) for HTTPS. Required."),
    cfg.StrOpt("key_file", help="PEM private key of the server certificate. Required."),
    cfg.StrOpt("client_ca_file",
               help="If set, clients must present a certificate issued by this CA (mutual TLS)."),
    cfg.IntOpt("threads", default=8, min=1,
               help="Requests the application runs at once per worker process (each "
                    "holds a database connection meanwhile). Only complete requests "
                    "(headers and body read) take one: a slow client holds none."),
    cfg.IntOpt("workers", default=1, min=1,
               help="Worker processes sharing the listening socket (pre-fork)."),
    cfg.IntOpt("max_request_body_size", default=6 * 1024 * 1024, min=1024,
               help="Largest accepted request body in bytes; larger bodies get 413 "
                    "unread. Attestations carry the base64 event log (up to 4 MiB)."),
    cfg.IntOpt("max_json_depth", default=16, min=2,
               help="Deepest JSON nesting accepted in a request body."),
    cfg.FloatOpt("tls_handshake_timeout", default=5.0, min=0.1,
                 help="Seconds a new connection has to complete its TLS handshake; a "
                      "client that sends no ClientHello is closed then. Handshakes run "
                      "beside each other, never in the accept path."),
    cfg.FloatOpt("header_timeout", default=10.0, min=0.1,
                 help="Seconds a client has for the whole request line and headers: from "
                      "the end of the TLS handshake for a connection's first request, "
                      "from the request's first byte on a kept-alive connection. Past it "
                      "the connection is closed (with 408 if part of a request came), "
                      "however slowly bytes trickle in."),
    cfg.FloatOpt("body_timeout", default=30.0, min=0.1,
                 help="Seconds a client has to send a whole request body (bodies are read "
                      "before any application thread is taken), and to take in a whole "
                      "response. Past it the connection is closed."),
    cfg.FloatOpt("keep_alive_timeout", default=30.0, min=0.1,
                 help="Seconds an idle kept-alive connection may wait for its next "
                      "request before the server closes it."),
    cfg.IntOpt("max_connections", default=512, min=1,
               help="Open connections per worker process (each has its own thread "
                    "for TLS and reading); a connection beyond it is closed at once. Keep "
                    "workers x max_connections below the open-file limit (ulimit -n)."),
    cfg.IntOpt("max_connections_per_address", default=32, min=1,
               help="Open connections per client IP address and worker process; a "
                    "connection beyond it is closed at once, so one client cannot take "
                    "the slots of others."),
    cfg.StrOpt("admin_token_hash",
               help="SHA-256 hex digest of a legacy admin API key, sent in X-Auth-Token "
                    "(role admin). Prefer tokens from 'trusted-launch-ttp-manage token "
                    "create', which can be listed and revoked. Unset: none."),
    cfg.StrOpt("auth_strategy", default="local", choices=[
        ("local", "API tokens of this TTP (trusted-launch-ttp-manage token create)"),
        ("keystone", "Keystone tokens validated by keystonemiddleware ([keystone_authtoken]), "
                     "and API tokens of this TTP")],
               help="How operators authenticate. Authorization is oslo.policy in both cases "
                    "([oslo_policy] policy_file; roles admin, reader, host)."),
    cfg.BoolOpt("mtls_host_identity", default=False,
                help="Treat the common name of a verified TLS client certificate "
                     "(client_ca_file) as a compute host name: role host, for that host "
                     "only. Only for a client CA that issues certificates to compute hosts "
                     "and names each by its TTP host name."),
    cfg.StrOpt("port_file",
               help="If set, write the bound port number to this file once listening "
                    "(useful with bind_port = 0)."),
]

database_opts = [
    cfg.StrOpt("connection", secret=True,
               default="sqlite:////var/lib/trusted-launch/ttp.sqlite",
               help="SQLAlchemy URL of the TTP database (sqlite, postgresql+psycopg2, "
                    "mysql+pymysql)."),
]

keys_opts = [
    cfg.StrOpt("key_dir", default="/var/lib/trusted-launch/keys",
               help="Directory of the TTP token key pairs (files mode 0600)."),
    cfg.IntOpt("rotation_overlap", default=7 * 24 * 3600, min=0,
               help="Seconds a previous token key is still accepted after rotation."),
    cfg.StrOpt("attestation_ca_cert", default="/var/lib/trusted-launch/ca/ak-ca.pem",
               help="PEM certificate of the attestation CA that issues AK certificates."),
    cfg.StrOpt("attestation_ca_key", default="/var/lib/trusted-launch/ca/ak-ca.key",
               help="PEM private key of the attestation CA (mode 0600)."),
    cfg.IntOpt("ak_certificate_days", default=365, min=1,
               help="Validity in days of issued AK certificates."),
]

enrollment_opts = [
    cfg.ListOpt("ek_ca_files", default=[],
                help="PEM files of TPM vendor CA certificates (roots and intermediates) "
                     "that EK certificates must chain to."),
    cfg.IntOpt("activation_timeout", default=600, min=10,
               help="Seconds a host has to answer the credential challenge."),
]

attestation_opts = [
    cfg.StrOpt("bind_key_pcrs", default="sha256:0,1,2,3,4,5,6,7",
               help="PCRs that every bind key policy must cover at least."),
    cfg.StrOpt("profile_dir",
               help="Directory of security profile documents (YAML/JSON) loaded into "
                    "the database at start-up if the profile is not there yet."),
]

host_status_opts = [
    cfg.IntOpt("challenge_ttl", default=60, min=1,
               help="Seconds a host's quote nonce (POST /v1/hosts/{host}/challenges) "
                    "stays valid; each nonce is accepted once."),
    cfg.BoolOpt("notifications_enabled", default=False,
                help="Emit trusted_launch.host.status notifications (oslo.messaging, "
                     "messagingv2) when a host's status changes: WARN when it drops to a "
                     "weaker profile or to untrusted, INFO otherwise. Payload: host, "
                     "profile, previous_profile, reason, time."),
    cfg.StrOpt("notification_transport_url", secret=True,
               help="oslo.messaging transport URL for the host status notifications, for "
                    "example rabbit://user:password@host:5672/. Unset: "
                    "[oslo_messaging_notifications] transport_url, else "
                    "[DEFAULT] transport_url."),
    cfg.ListOpt("notification_topics", default=["notifications"],
                help="Topics the host status notifications are sent to."),
]

rpc_opts = [
    cfg.StrOpt("topic", default="trusted_launch_ttp",
               help="RPC topic trusted-launch-ttp-rpc serves; compute hosts with "
                    "ttp_transport = rpc call it ([trusted_launch] ttp_rpc_topic)."),
    cfg.URIOpt("ttp_url", schemes=["https"],
               help="This TTP's base URL as tenants and compute hosts know it (the URL "
                    "tenants fetch the token key from and hosts allow in "
                    "allowed_ttp_urls). Each RPC request names the TTP it is for; one "
                    "naming another URL is refused (check ttp_url). Required by "
                    "trusted-launch-ttp-rpc."),
    cfg.StrOpt("server_name",
               help="Name of this RPC server on the topic. Unset: the host name."),
]

_GROUPS = [
    (api_group, api_opts),
    (database_group, database_opts),
    (keys_group, keys_opts),
    (enrollment_group, enrollment_opts),
    (attestation_group, attestation_opts),
    (host_status_group, host_status_opts),
    (rpc_group, rpc_opts),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register all TTP options on ``conf``."""
    for group, opts in _GROUPS:
        conf.register_group(group)
        conf.register_opts(opts, group=group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options per group for oslo-config-generator."""
    return [(group.name, opts) for group, opts in _GROUPS]
