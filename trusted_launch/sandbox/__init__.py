"""A local sandbox of the parties for tests and the demo.

swtpm processes standing in for compute hosts' TPMs, a throw-away PKI, and the
TTP run as a real HTTPS server process. Never used by a deployment.
"""
