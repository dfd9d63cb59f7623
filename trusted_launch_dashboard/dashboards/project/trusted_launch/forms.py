"""The trusted launch form: what passes through the dashboard and what never does.

The tenant makes N and the sealed launch token on their own machine
(``openstack trusted token create`` / ``trusted-launch token create``) and
pastes only the token: it is sealed to the TTP, so the dashboard and Nova see
an opaque value. N never goes through this form. The TTP URL is the
dashboard's configured one, not a field (the form cannot point hosts
elsewhere).
"""

from __future__ import annotations

import logging

from django.utils.translation import gettext_lazy as _
from horizon import exceptions, forms, messages
from openstack_dashboard import api

from trusted_launch_dashboard import status
from trusted_launch_dashboard.settings import ttp_client, ttp_settings
from trusted_launch_dashboard.ttp import TTPError

LOG = logging.getLogger(__name__)


class UnechoedTextarea(forms.Textarea):
    """A textarea that never renders its value back (a rejected form shows it empty)."""

    def format_value(self, value):
        return ""


class TrustedLaunchForm(forms.SelfHandlingForm):
    name = forms.CharField(max_length=255, label=_("Instance Name"))
    image = forms.ThemableChoiceField(label=_("Image"))
    flavor = forms.ThemableChoiceField(label=_("Flavor"))
    network = forms.ThemableChoiceField(label=_("Network"))
    profile = forms.ThemableChoiceField(label=_("Security profile (trusted_sp)"))
    token = forms.CharField(
        label=_("Launch token"), widget=UnechoedTextarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text=_("The sealed token printed by 'openstack trusted token create' on your "
                    "machine (it keeps N in a local file). Never paste N here."))

    def __init__(self, request, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.fields["image"].choices = self._choices(
            lambda: api.glance.image_list_detailed(request)[0], _("images"))
        self.fields["flavor"].choices = self._choices(
            lambda: api.nova.flavor_list(request), _("flavors"))
        self.fields["network"].choices = self._choices(
            lambda: api.neutron.network_list_for_tenant(request, request.user.project_id),
            _("networks"))
        try:
            profiles = ttp_client(request).profiles()
        except TTPError as exc:
            LOG.warning("trusted launch form: %s", exc)
            profiles = []
        self.fields["profile"].choices = [(p["name"], f"{p['name']} (level {p['level']})")
                                          for p in reversed(profiles)]

    def _choices(self, lister, what):
        try:
            return [(item.id, item.name or item.id) for item in lister()]
        except Exception:
            exceptions.handle(self.request, _("Unable to list the %s.") % what)
            return []

    def clean_token(self):
        token = self.cleaned_data["token"].strip()
        if not status.launch_token_digest(token):
            raise forms.ValidationError(_("This is not a launch token (base64url, made by "
                                          "'openstack trusted token create')."))
        return token

    def handle(self, request, data):
        metadata = {status.PROFILE_KEY: data["profile"], status.TOKEN_KEY: data["token"],
                    status.TTP_KEY: ttp_settings().ttp_url}
        try:
            server = api.nova.server_create(
                request, data["name"], data["image"], data["flavor"], key_name=None,
                user_data=None, security_groups=None, nics=[{"net-id": data["network"]}],
                config_drive=True, meta=metadata)
        except Exception:
            exceptions.handle(request, _("Unable to launch the instance."))
            return False
        digest = status.short(status.launch_token_digest(data["token"]))
        messages.success(request, _("Launching %(name)s (token %(digest)s...).")
                         % {"name": data["name"], "digest": digest})
        return server
