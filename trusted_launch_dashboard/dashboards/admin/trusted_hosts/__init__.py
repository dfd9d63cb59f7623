"""Admin dashboard panel: compute hosts by security profile and their attestation status."""
