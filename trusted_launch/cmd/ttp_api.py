"""``trusted-launch-ttp``: run the TTP's HTTPS API server."""

from __future__ import annotations

import errno
import sys

from oslo_config import cfg
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
    from trusted_launch.ttp import server
    conf = None
    try:
        conf = load_config(None, prog="trusted-launch-ttp", description=DESCRIPTION,
                           argv=sys.argv[1:] if argv is None else argv)
        check_server_files(conf)
        logging.setup(conf, "trusted-launch-ttp")
        server.run(conf, lambda: _make_app(conf))
    except OSError as exc:
        print(f"trusted-launch-ttp: error: {_os_problem(exc, conf)}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError) as exc:
        print(f"trusted-launch-ttp: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _os_problem(exc: OSError, conf: cfg.ConfigOpts | None) -> str:
    """One line for an OS error at start-up: a taken port names the option to change."""
    listening = exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
    if conf is not None and listening and exc.filename is None:
        return (f"cannot listen on {conf.api.bind_host}:{conf.api.bind_port} "
                f"({exc.strerror}): set [api] bind_host / bind_port to a free local address")
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _make_app(conf: cfg.ConfigOpts):
    """The WSGI app; imported only now, after the server set up its metrics directory."""
    from trusted_launch.ttp import wsgi
    return wsgi.make_pipeline(conf)


if __name__ == "__main__":
    sys.exit(main())
