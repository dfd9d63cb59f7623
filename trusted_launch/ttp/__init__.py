"""The trusted third party (TTP): host enrollment, launch attestation, secret release.

The TTP is an HTTPS service (:mod:`trusted_launch.ttp.api`), optionally also
serving hosts over oslo.messaging RPC (:mod:`trusted_launch.ttp.rpc`), over a
SQL database (:mod:`trusted_launch.ttp.db`); it enrolls compute hosts' TPMs,
judges their launch evidence with :mod:`trusted_launch.ttp.verifier` and
releases the tenant's nonce only to a bind key it has verified.
"""
