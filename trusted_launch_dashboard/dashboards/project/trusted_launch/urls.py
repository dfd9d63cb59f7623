"""URLs of the Project dashboard's trusted-launch panel."""
from django.urls import re_path

from trusted_launch_dashboard.dashboards.project.trusted_launch import views

urlpatterns = [
    re_path(r"^$", views.IndexView.as_view(), name="index"),
    re_path(r"^launch/$", views.LaunchView.as_view(), name="launch"),
    re_path(r"^(?P<server_id>[0-9a-f-]{36})/receipts/$", views.ReceiptsView.as_view(),
            name="receipts"),
]
