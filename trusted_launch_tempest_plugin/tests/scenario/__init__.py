"""Scenario tests: real launches through Nova, checked from the tenant's side."""
