"""Party CH: the compute host's side of the trusted launch protocol.

:mod:`.ttp_client` talks to the TTP over HTTPS (or :mod:`.ttp_rpc_client` over
oslo.messaging RPC), :mod:`.launch` runs steps 5-12 for one instance on top of
the host's TPM (:mod:`trusted_launch.tpm`), :mod:`.release_receipt` checks that
a release comes from the TTP.
"""
