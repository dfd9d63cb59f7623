"""``trusted-launch-ttp``: run the TTP's HTTPS API server."""

from __future__ import annotations

import sys

from oslo_log import log as logging

from trusted_launch.ttp.configuration import (
    DEFAULT_CONFIG,
    ConfigError,
    check_server_files,
    load_config,
)

DESCRIPTION = ("Run the trusted-launch TTP's HTTPS API server (pre-forked workers) until "
               f"SIGTERM. Options come from --config-file (default {DEFAULT_CONFIG}); see "
               "doc/operator-guide.md.")


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config-file``, check the configuration, set up logging, serve until SIGTERM."""
    from trusted_launch.ttp import server, wsgi
    try:
        conf = load_config(None, prog="trusted-launch-ttp", description=DESCRIPTION,
                           argv=sys.argv[1:] if argv is None else argv)
        check_server_files(conf)
        logging.setup(conf, "trusted-launch-ttp")
        server.run(conf, lambda: wsgi.make_app(conf))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"trusted-launch-ttp: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
