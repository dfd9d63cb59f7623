"""The panel's registration in the Project dashboard."""
import horizon
from django.utils.translation import gettext_lazy as _


class TrustedLaunch(horizon.Panel):
    name = _("Trusted Launch")
    slug = "trusted_launch"
    permissions = ("openstack.services.compute",)
