"""Adds the Trusted Launch panel to the Project dashboard's Compute group."""
PANEL = "trusted_launch"
PANEL_DASHBOARD = "project"
PANEL_GROUP = "compute"
ADD_PANEL = "trusted_launch_dashboard.dashboards.project.trusted_launch.panel.TrustedLaunch"
ADD_INSTALLED_APPS = ["trusted_launch_dashboard"]
