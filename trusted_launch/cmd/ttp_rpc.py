"""``trusted-launch-ttp-rpc``: serve the TTP's host-facing API on an oslo.messaging topic."""

from __future__ import annotations

import sys

from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.conf import ttp as ttp_conf


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config-file`` (the TTP's own), set up logging, serve until SIGTERM."""
    import oslo_messaging

    from trusted_launch.ttp import rpc, wsgi
    conf = cfg.CONF  # oslo.messaging reads some of its options from the global one only
    ttp_conf.register_opts(conf)
    logging.register_options(conf)
    conf(sys.argv[1:] if argv is None else argv, project="trusted-launch",
         prog="trusted-launch-ttp-rpc")
    logging.setup(conf, "trusted-launch-ttp-rpc")
    try:
        rpc.run(conf, lambda: wsgi.make_app(conf))
    except (ValueError, OSError, oslo_messaging.MessagingException) as exc:
        print(f"trusted-launch-ttp-rpc: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
