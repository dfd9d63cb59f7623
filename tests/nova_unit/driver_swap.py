"""pytest plugin: run Nova's libvirt driver unit tests with TrustedLibvirtDriver in place.

``-p tests.nova_unit.driver_swap --libvirt-driver=trusted`` makes
``nova.virt.libvirt.driver.LibvirtDriver`` our driver before any Nova test
module is imported, so every test that builds, patches or calls
``LibvirtDriver`` gets ``TrustedLibvirtDriver`` (a subclass, so the stock
code is still what ``super()`` reaches). ``--libvirt-driver=stock`` (the
default) leaves Nova untouched, for the baseline.
"""

from __future__ import annotations

import os

import pytest

# Native threads, decided before anything imports eventlet (as tests/conftest.py does).
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
from nova import monkey_patch

monkey_patch.patch()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--libvirt-driver", choices=("stock", "trusted"), default="stock",
                     help="the class Nova's libvirt tests get as LibvirtDriver")


def pytest_configure(config: pytest.Config) -> None:
    from fixtures._fixtures import monkeypatch as monkeypatch_module
    from nova import test as nova_test
    from nova.virt.libvirt import driver as libvirt_driver

    nova_test.TestCase._clear_attrs = _keep_test_method(nova_test.TestCase._clear_attrs)
    monkeypatch_module._coerce_values = _see_inherited(monkeypatch_module._coerce_values)

    if config.getoption("libvirt_driver") == "trusted":
        from trusted_launch.compute.driver import TrustedLibvirtDriver

        libvirt_driver.LibvirtDriver = TrustedLibvirtDriver
    config.stash[DRIVER_KEY] = libvirt_driver.LibvirtDriver


def pytest_report_header(config: pytest.Config) -> str:
    driver = config.stash[DRIVER_KEY]
    return f"LibvirtDriver under test: {driver.__module__}.{driver.__qualname__}"


def _keep_test_method(clear_attrs):
    """Nova deletes every instance attribute after a test; pytest's unittest
    runner then deletes the bound test method itself and fails if it is gone."""
    def clear(self) -> None:
        name = self._testMethodName
        saved = self.__dict__.get(name)
        clear_attrs(self)
        if saved is not None:
            self.__dict__[name] = saved
    return clear


def _see_inherited(coerce_values):
    """``fixtures.MonkeyPatch`` looks for a patched method only in the class's own
    ``__dict__``: on a subclass it takes an inherited staticmethod for a plain
    function (the patch then receives ``self`` as first argument) and on cleanup
    copies the unwrapped function into the subclass for good. Look the attribute
    up where it is defined, and delete the patch on cleanup so the subclass
    inherits again. A no-op for attributes a class defines itself."""
    def coerce(obj, name, new_value, sentinel):
        if isinstance(obj, type) and name not in obj.__dict__:
            owner = next((cls for cls in obj.__mro__ if name in cls.__dict__), None)
            if owner is not None:
                return coerce_values(owner, name, new_value, sentinel)[0], sentinel
        return coerce_values(obj, name, new_value, sentinel)
    return coerce


DRIVER_KEY = pytest.StashKey[type]()
