"""The admin's view: hosts by profile with their current attestation status, and a chart."""

from __future__ import annotations

import logging

from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from horizon import exceptions, views
from openstack_dashboard import api

from trusted_launch_dashboard import chart, status
from trusted_launch_dashboard.settings import ttp_client
from trusted_launch_dashboard.ttp import TTPError

LOG = logging.getLogger(__name__)


class IndexView(views.HorizonTemplateView):
    template_name = "trusted_launch_dashboard/hosts.html"
    page_title = _("Trusted Hosts")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["error"] = ""
        try:
            aggregates = [{"metadata": aggregate.metadata, "hosts": aggregate.hosts}
                          for aggregate in api.nova.aggregate_details_list(self.request)]
        except Exception:
            aggregates = []
            exceptions.handle(self.request, _("Unable to list the host aggregates."))
        try:
            client = ttp_client(self.request)
            levels = client.profile_levels()
            records, now = client.host_statuses()
            max_age = client.settings.max_age
        except TTPError as exc:
            LOG.warning("trusted hosts panel: %s", exc)
            context.update(error=str(exc), rows=[], chart="", counts=[])
            return context
        rows = status.hosts_trust(status.aggregate_profiles(aggregates, levels), records,
                                  levels, now=now or None, max_age=max_age)
        counts = status.profile_counts(rows, levels)
        # The chart is built from escaped text only (chart.profile_chart escapes names).
        context.update(rows=rows, counts=counts, chart=mark_safe(chart.profile_chart(counts)),  # noqa: S308
                       max_age=int(max_age))
        return context
