"""The tenant's view: each instance's trust status, the launch form, the receipt proxy.

The receipt proxy forwards a proof the tenant's browser computed from N
(``HKDF-SHA256(N, info="trusted-launch/v1 receipt")``) to the configured TTP
and returns the signed receipts; the browser verifies them. N itself never
reaches this server (doc/dashboard.md).
"""

from __future__ import annotations

import json
import logging

from django.http import JsonResponse
from django.urls import reverse_lazy
from django.utils.translation import gettext_lazy as _
from django.views import generic
from horizon import exceptions, forms, views
from openstack_dashboard import api

from trusted_launch_dashboard import status
from trusted_launch_dashboard.dashboards.project.trusted_launch import forms as launch_forms
from trusted_launch_dashboard.settings import ttp_client, ttp_settings
from trusted_launch_dashboard.ttp import TTPError

LOG = logging.getLogger(__name__)
MAX_PROOF_BODY = 1024


def _server_dict(server) -> dict:
    """The fields of a Nova server (Horizon's wrapper) that status derivation reads."""
    return {"id": server.id, "name": server.name, "status": server.status,
            "metadata": dict(getattr(server, "metadata", None) or {}),
            "fault": getattr(server, "fault", None) or {},
            "created": getattr(server, "created", "")}


def _actions(request, server_id: str) -> list[dict]:
    try:
        return [{"action": action.action, "start_time": action.start_time,
                 "message": getattr(action, "message", None)}
                for action in api.nova.instance_action_list(request, server_id)]
    except Exception:  # the list is optional: the launch time stands in
        LOG.info("no instance actions for %s", server_id)
        return []


class IndexView(views.HorizonTemplateView):
    template_name = "trusted_launch_dashboard/instances.html"
    page_title = _("Trusted Launch")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        try:
            servers, _more = api.nova.server_list(self.request)
        except Exception:
            servers = []
            exceptions.handle(self.request, _("Unable to list the instances."))
        rows = []
        for server in servers:
            fields = _server_dict(server)
            trusted = bool(fields["metadata"].get(status.TOKEN_KEY))
            rows.append(status.instance_trust(
                fields, _actions(self.request, server.id) if trusted else ()))
        context["rows"] = rows
        try:
            context["ttp_url"] = ttp_settings().ttp_url
        except TTPError as exc:
            context["ttp_url"], context["error"] = "", str(exc)
        return context


class LaunchView(forms.ModalFormView):
    form_class = launch_forms.TrustedLaunchForm
    template_name = "trusted_launch_dashboard/launch.html"
    modal_id = "trusted_launch_modal"
    page_title = _("Trusted Launch of an Instance")
    submit_label = _("Launch")
    submit_url = reverse_lazy("horizon:project:trusted_launch:launch")
    success_url = reverse_lazy("horizon:project:trusted_launch:index")


class ReceiptsView(generic.View):
    """POST {"proof": ...}: the receipts of one of the tenant's instances, and the keys."""

    http_method_names = ["post"]

    def post(self, request, server_id: str):
        if len(request.body) > MAX_PROOF_BODY:
            return JsonResponse({"error": "request too large"}, status=400)
        try:
            proof = json.loads(request.body or b"{}").get("proof")
        except (ValueError, AttributeError):
            return JsonResponse({"error": "send a JSON object {\"proof\": ...}"}, status=400)
        try:  # Nova decides whether this user may see the server
            server = _server_dict(api.nova.server_get(request, server_id))
        except Exception:
            return JsonResponse({"error": "no such instance in this project"}, status=404)
        trust = status.instance_trust(server)
        if not trust.token_digest:
            return JsonResponse({"error": "this instance has no launch token"}, status=400)
        try:
            client = ttp_client(request)
            if trust.ttp_url and trust.ttp_url.rstrip("/") != client.settings.ttp_url:
                # Never call a URL a tenant wrote into metadata from this server.
                return JsonResponse({"error": "the instance names another TTP than the "
                                              "dashboard's; fetch its receipts with "
                                              "'trusted-launch receipt show'"}, status=409)
            receipts = client.receipts(trust.token_digest, proof)
            keys = client.receipt_keys()
        except TTPError as exc:
            LOG.info("receipts of %s: %s", server_id, exc)
            return JsonResponse({"error": str(exc)}, status=502)
        return JsonResponse({"token_digest": trust.token_digest, "receipts": receipts,
                             "receipt_keys": keys})
