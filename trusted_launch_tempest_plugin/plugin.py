"""The Tempest plugin class that the ``tempest.test_plugins`` entry point names."""

from __future__ import annotations

import os

from tempest.test_discover import plugins

from trusted_launch_tempest_plugin import config


class TrustedLaunchTempestPlugin(plugins.TempestPlugin):
    """Registers ``[trusted_launch]`` and ``[service_available] trusted_launch``."""

    def load_tests(self):
        base_path = os.path.split(os.path.dirname(os.path.abspath(__file__)))[0]
        test_dir = "trusted_launch_tempest_plugin/tests"
        return os.path.join(base_path, test_dir), base_path

    def register_opts(self, conf):
        conf.register_opt(config.service_option, group="service_available")
        conf.register_group(config.trusted_launch_group)
        conf.register_opts(config.TrustedLaunchOpts, group=config.trusted_launch_group)

    def get_opt_lists(self):
        return [(config.trusted_launch_group.name, config.TrustedLaunchOpts),
                ("service_available", [config.service_option])]
