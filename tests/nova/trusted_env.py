"""The Nova tests' environment: the product's :mod:`trusted_launch.sandbox.nova_env`
with the event logs of the test data, started in pytest's temporary folders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.conftest import EVENTLOG_DIR
from tests.fixtures.swtpm import SECUREBOOT_LOG, StateCache
from trusted_launch.sandbox import nova_env
from trusted_launch.sandbox.nova_env import PROFILES, TrustedEnvironment, TrustedHost

#: A real log without Secure Boot: a host booted from it cannot meet "high".
NO_SECURE_BOOT_LOG = EVENTLOG_DIR / nova_env.NO_SECURE_BOOT_LOG_NAME


@contextlib.contextmanager
def running_environment(tmp_path_factory, swtpm_state_cache: StateCache,
                        host_logs: dict, name: str) -> Iterator[TrustedEnvironment]:
    """A started :class:`TrustedEnvironment` for ``host_logs``, stopped afterwards."""
    with nova_env.running_environment(tmp_path_factory.mktemp(f"{name}-env"),
                                      swtpm_state_cache, host_logs) as env:
        yield env


__all__ = ["NO_SECURE_BOOT_LOG", "PROFILES", "SECUREBOOT_LOG", "TrustedEnvironment",
           "TrustedHost", "running_environment"]
