"""The ``trusted-launch demo`` scenarios: each protocol outcome shown on real parts.

Not a party of the protocol: it drives the parties through their public
interfaces, the way an operator and a tenant would, and reports each
scenario's expected and actual outcome with its timing.
"""
