"""Trusted launch of VM instances on TPM-attested OpenStack compute hosts."""
