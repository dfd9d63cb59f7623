"""The panel's registration in the Admin dashboard (admins only)."""
import horizon
from django.utils.translation import gettext_lazy as _


class TrustedHosts(horizon.Panel):
    name = _("Trusted Hosts")
    slug = "trusted_hosts"
    permissions = ("openstack.roles.admin", "openstack.services.compute")
