"""``trusted-launch-ttp``: run the TTP's HTTPS API server."""

from __future__ import annotations

import sys

from oslo_config import cfg
from oslo_log import log as logging

from trusted_launch.conf import ttp as ttp_conf


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config-file``, set up logging, serve until SIGTERM."""
    from trusted_launch.ttp import server
    conf = cfg.ConfigOpts()
    ttp_conf.register_opts(conf)
    logging.register_options(conf)
    conf(sys.argv[1:] if argv is None else argv, project="trusted-launch",
         prog="trusted-launch-ttp")
    logging.setup(conf, "trusted-launch-ttp")
    try:
        server.run(conf, lambda: _make_app(conf))
    except (ValueError, OSError) as exc:
        print(f"trusted-launch-ttp: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _make_app(conf: cfg.ConfigOpts):
    """The WSGI app; imported only now, after the server set up its metrics directory."""
    from trusted_launch.ttp import wsgi
    return wsgi.make_app(conf)


if __name__ == "__main__":
    sys.exit(main())
