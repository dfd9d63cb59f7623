"""Cryptographic building blocks shared by the protocol parties.

* :mod:`.token` - the launch token {N, profile, H} sealed to the TTP (HPKE).
* :mod:`.binding` - the TPM2_Certify qualifying data that binds evidence to one launch.
* :mod:`.sealing` - {N, H} released by the TTP to a host's TPM bind key.
* :mod:`.digest` - streaming image digests (the H the host recomputes).
* :mod:`.vm_challenge` - the MAC a VM computes to prove it knows N.
* :mod:`.nonce` - the on-disk form of N.
"""
