"""A real single-region OpenStack on this machine, for tests, demo and benchmarks.

``tools/run-cloud.sh`` (``python -m trusted_launch.sandbox.cloud``) starts
keystone, glance, placement, nova, neutron, libvirtd, swtpm and the TTP as
plain processes, one log file each; see doc/real-cloud.md.  Nothing here is
part of a deployment.
"""
