"""WSGI entry points: ``make_app(conf)`` and a lazily built ``application``.

For uwsgi / mod_wsgi: point them at ``trusted_launch.ttp.wsgi:application``
and set ``TRUSTED_LAUNCH_TTP_CONFIG`` (default /etc/trusted-launch/ttp.conf).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from oslo_config import cfg

from trusted_launch.ttp import configuration
from trusted_launch.ttp.api import Limits, TTPApplication
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.enrollment import Enrollment, load_ca_certificates
from trusted_launch.ttp.host_notifications import HostStatusNotifier
from trusted_launch.ttp.host_status import HostStatusService
from trusted_launch.ttp.keystore import AttestationCA, TokenKeyStore
from trusted_launch.ttp.profiles import ProfileStore
from trusted_launch.ttp.receipts import ReceiptIssuer, ReceiptKey
from trusted_launch.ttp.service import AttestationService

DEFAULT_CONFIG = configuration.DEFAULT_CONFIG


def _verifier_factory(conf: cfg.ConfigOpts, keys: TokenKeyStore,
                      profiles: ProfileStore) -> Callable[[], object]:
    from trusted_launch.evidence.tpm2 import PCRSelection
    required = PCRSelection.from_spec(conf.attestation.bind_key_pcrs)

    def make_verifier(profile_revision: int | None = None) -> object:
        from trusted_launch.ttp.verifier import LaunchVerifier
        profile_set = (profiles.profile_set() if profile_revision is None
                       else profiles.profile_set_at(profile_revision))
        return LaunchVerifier(token_keys=keys.private_keys(), profiles=profile_set,
                              required_pcrs=required)
    return make_verifier


def make_app(conf: cfg.ConfigOpts) -> TTPApplication:
    """Build the TTP WSGI application from parsed configuration."""
    db = TTPDatabase(conf.database.connection)
    keys = TokenKeyStore(conf.key_store.key_dir, conf.key_store.rotation_overlap)
    ca = AttestationCA(conf.key_store.attestation_ca_cert, conf.key_store.attestation_ca_key)
    profiles = ProfileStore(db)
    enrollment = Enrollment(db, ca, load_ca_certificates(conf.enrollment.ek_ca_files),
                            challenge_ttl=conf.enrollment.activation_timeout,
                            certificate_days=conf.key_store.ak_certificate_days)
    receipt_key = ReceiptKey(conf.key_store.key_dir)
    receipt_key.ensure()
    receipts = ReceiptIssuer(db, receipt_key)
    attestations = AttestationService(db, ca.certificate,
                                      _verifier_factory(conf, keys, profiles), receipts)
    return TTPApplication(
        db=db, token_keys=keys, enrollment=enrollment, profiles=profiles,
        attestations=attestations, receipts=receipts,
        host_status=make_host_status(conf, db, profiles),
        admin_token_hash=conf.api.admin_token_hash,
        limits=Limits(conf.api.max_request_body_size, conf.api.max_json_depth))


def make_host_status(conf: cfg.ConfigOpts, db: TTPDatabase,
                     profiles: ProfileStore) -> HostStatusService:
    """Continuous host attestation as configured by [host_status]."""
    from trusted_launch.evidence.tpm2 import PCRSelection
    group = conf.host_status
    notifier = None
    if group.notifications_enabled:
        notifier = HostStatusNotifier(group.notification_transport_url,
                                      topics=group.notification_topics, conf=conf)
    return HostStatusService(db, profiles.profile_set,
                             PCRSelection.from_spec(conf.attestation.bind_key_pcrs),
                             challenge_ttl=group.challenge_ttl, notifier=notifier)


def load_config(config_files: list[str]) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with the TTP options, parsed from ``config_files`` and checked."""
    return configuration.load_config(config_files, prog="trusted-launch-ttp")


class _LazyApplication:
    """Builds the app on the first request (after the server has forked)."""

    def __init__(self) -> None:
        self._app: TTPApplication | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> object:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    path = os.environ.get("TRUSTED_LAUNCH_TTP_CONFIG", DEFAULT_CONFIG)
                    self._app = make_app(load_config([path]))
        return self._app(environ, start_response)


application = _LazyApplication()
