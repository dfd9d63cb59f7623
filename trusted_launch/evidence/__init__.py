"""Evidence formats: TCG event logs, IMA lists and TPM 2.0 structures.

Pure Python, no I/O: every function takes bytes and returns typed records or
raises a subclass of :class:`~trusted_launch.evidence.errors.EvidenceError`.
"""
