"""Configuration options, each defined once, grouped by the party that reads them.

Every module here has ``register_opts(conf)`` and ``list_opts()``; the
``oslo.config.opts`` entry points in setup.cfg expose them to
``oslo-config-generator`` through :mod:`trusted_launch.conf.opts`.
"""
