"""Horizon plugin: trust status of trusted launches for tenants and operators.

The Project dashboard's panel shows each instance's trust status and a launch
form with the trusted-launch options; the Admin dashboard's panel shows the
compute hosts by security profile with their current attestation status.
Enable it by linking the files of ``enabled/`` into Horizon's
``openstack_dashboard/local/enabled/`` (doc/dashboard.md).
"""
