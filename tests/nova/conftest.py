"""Run Nova's functional harness in native-thread mode inside pytest.

Nova's test packages monkey-patch with eventlet on import unless
``OS_NOVA_DISABLE_EVENTLET_PATCHING`` is set; this must happen before the
first ``nova`` import, which is why it is done at conftest import time.
"""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = pathlib.Path(__file__).parent
    for item in items:
        if here in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.nova)
