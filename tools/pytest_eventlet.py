"""Run pytest with Nova in its eventlet concurrency mode.

Nova 34 runs services on native threads by default and still supports
eventlet. Eventlet must patch the standard library before anything imports
``ssl`` or ``threading``, which pytest's own plugins do, so this runner patches
first, as nova's service entry points do, and only then starts pytest.
anyio's pytest plugin and hypothesis's entry-point plugins are left out: they
import trio (a dependency of the dashboard test's Selenium), which cannot load
over eventlet's green sockets.
"""

import os
import sys

os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "0"
os.environ["HYPOTHESIS_NO_PLUGINS"] = "1"

from nova import monkey_patch

monkey_patch.patch()

import pytest  # noqa: E402

if __name__ == "__main__":
    sys.exit(pytest.main(["-p", "no:xdist", "-p", "no:anyio", *sys.argv[1:]]))
