"""OpenStackClient plugin: ``openstack trusted token create``, ``trusted server create|verify``.

Registered through the ``openstack.cli.extension`` entry point as
:mod:`trusted_launch.client.osc.plugin`; the commands live in :mod:`.v1`.
"""
