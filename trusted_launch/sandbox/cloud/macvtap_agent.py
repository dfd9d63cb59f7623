"""neutron-macvtap-agent, with its privsep channels closed before oslo.service forks.

Neutron 29 runs its agents on oslo.service's threading backend, whose
launcher forks a worker process.  The macvtap agent starts its privsep daemon
before that fork (checking the interface mappings), so the worker inherits a
privsep client whose reader thread stayed in the parent, and its first
privileged call waits forever: the agent never reports.  Closing the channels
just before the fork lets the worker start its own privsep daemon.  Everything
else is neutron's own ``neutron-macvtap-agent`` entry point.
"""

from __future__ import annotations

import sys


def main() -> None:
    import neutron.privileged
    from neutron.cmd.plugins import macvtap_neutron_agent
    from oslo_privsep import priv_context
    from oslo_service import service

    launch = service.launch

    def launch_with_fresh_privsep(*args, **kwargs):
        for context in vars(neutron.privileged).values():
            if isinstance(context, priv_context.PrivContext):
                context.stop()
        return launch(*args, **kwargs)

    service.launch = launch_with_fresh_privsep
    sys.argv[0] = "neutron-macvtap-agent"
    macvtap_neutron_agent.main()


if __name__ == "__main__":
    main()
