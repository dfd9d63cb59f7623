"""Version 1 of the ``openstack trusted ...`` commands."""
