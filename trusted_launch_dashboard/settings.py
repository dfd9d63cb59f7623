"""The plugin's view of Horizon's settings: the TTP client for a request."""
from __future__ import annotations

from django.conf import settings

from trusted_launch_dashboard.ttp import TTPClient, TTPSettings


def ttp_settings() -> TTPSettings:
    return TTPSettings.from_mapping(getattr(settings, "TRUSTED_LAUNCH", None))


def ttp_client(request) -> TTPClient:
    """A client for the configured TTP; with auth = keystone, the user's own token."""
    configured = ttp_settings()
    token = None
    if configured.auth == "keystone":
        token = getattr(getattr(request.user, "token", None), "id", None)
    return TTPClient(configured, keystone_token=token)
