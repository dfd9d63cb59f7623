"""Tenant-side tooling: fetch the TTP key, make launch tokens, verify VMs.

* :func:`trusted_launch.client.ttp_keys.fetch_ttp_key`
* :func:`trusted_launch.client.launch_token.create_launch_token`
* :func:`trusted_launch.client.challenge.verify_vm`
"""
