"""Project dashboard panel: the trust status of the tenant's instances, trusted launch."""
