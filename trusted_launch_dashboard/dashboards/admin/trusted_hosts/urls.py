"""URLs of the Admin dashboard's trusted-hosts panel."""
from django.urls import re_path

from trusted_launch_dashboard.dashboards.admin.trusted_hosts import views

urlpatterns = [re_path(r"^$", views.IndexView.as_view(), name="index")]
