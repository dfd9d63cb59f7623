"""Fixtures for the scheduler-filter unit tests (real Nova objects, no services)."""

from __future__ import annotations

import os

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

# Nova's unit-test package picks the thread backend; it must come first.
import nova.tests.unit  # noqa: I001
import nova.conf
import pytest
from nova import objects

from trusted_launch.conf import scheduler as scheduler_conf

objects.register_all()
CONF = nova.conf.CONF
scheduler_conf.register_opts(CONF)


@pytest.fixture
def trusted_conf():
    """Override [trusted_launch] options for one test; metadata reads off by default."""
    overridden: list[str] = []

    def override(**options: object) -> None:
        for name, value in options.items():
            CONF.set_override(name, value, group="trusted_launch")
            overridden.append(name)

    override(profile_from_server_metadata=False)
    yield override
    for name in overridden:
        CONF.clear_override(name, group="trusted_launch")
