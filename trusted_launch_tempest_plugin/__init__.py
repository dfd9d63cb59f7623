"""Tempest plugin for trusted launch: scenario tests for any cloud with it enabled.

Registered through the ``tempest.test_plugins`` entry point (setup.cfg); its
options live in tempest.conf's ``[trusted_launch]`` group (:mod:`.config`).
See doc/tempest.md.
"""
