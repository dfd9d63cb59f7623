"""``list_opts`` entry points for oslo-config-generator."""

from __future__ import annotations

import importlib

# Config modules per generated sample file; each has list_opts().
_TTP_MODULES = ("ttp",)
_COMPUTE_MODULES = ("tpm", "compute", "scheduler")


def _collect(names: tuple[str, ...]) -> list:
    groups: dict[str, list] = {}
    for name in names:
        module = importlib.import_module(f"trusted_launch.conf.{name}")
        for group, opts in module.list_opts():
            groups.setdefault(group, []).extend(opts)
    return sorted(groups.items())


def list_ttp_opts() -> list:
    """Options of the trusted third party service (ttp.conf)."""
    return _collect(_TTP_MODULES)


def list_compute_opts() -> list:
    """Options read by nova services from nova.conf's [trusted_launch] section."""
    return _collect(_COMPUTE_MODULES)
