"""``python -m trusted_launch.sandbox.cloud [--down] [--json]`` (what tools/run-cloud.sh runs)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import asdict

from trusted_launch.sandbox.cloud.bringup import NOVA_DRIVERS, Cloud
from trusted_launch.sandbox.cloud.horizon import default_venv
from trusted_launch.sandbox.cloud.layout import REPO, CloudPaths
from trusted_launch.sandbox.cloud.processes import CloudError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-cloud.sh", description=__doc__)
    parser.add_argument("--down", action="store_true", help="stop everything the run started")
    parser.add_argument("--purge", action="store_true",
                        help="with --down: also drop the databases, the RabbitMQ vhost and the "
                             "cloud's state (the next run starts from nothing; logs stay)")
    parser.add_argument("--json", action="store_true", help="print the bring-up report as JSON")
    parser.add_argument("--root", type=pathlib.Path, default=REPO / ".cloud",
                        help="the cloud's directory (default .cloud in the repository)")
    parser.add_argument("--venv", type=pathlib.Path, default=pathlib.Path(sys.prefix),
                        help="virtualenv holding the OpenStack services")
    parser.add_argument("--horizon-venv", type=pathlib.Path, default=default_venv(),
                        help="virtualenv holding Horizon (default .horizon-venv)")
    parser.add_argument("--no-horizon", action="store_true",
                        help="do not serve Horizon with the trusted-launch dashboard")
    parser.add_argument("--nova-driver", choices=NOVA_DRIVERS, default="trusted",
                        help="trusted: TrustedLibvirtDriver and SecurityProfileFilter (the "
                             "default); stock: Nova's own libvirt driver and filters. A "
                             "change restarts nova-scheduler and the nova-computes")
    args = parser.parse_args(argv)
    if args.purge and not args.down:
        parser.error("--purge goes with --down")
    cloud = Cloud(CloudPaths(args.root, args.venv),
                  None if args.no_horizon else args.horizon_venv, args.nova_driver)
    try:
        if args.down:
            stopped = cloud.down()
            if args.purge:
                cloud.purge()
            print(json.dumps({"stopped": stopped}) if args.json else
                  f"stopped: {' '.join(stopped) or 'nothing was running'}")
            return 0
        report = cloud.up()
    except CloudError as exc:
        print(f"run-cloud: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(report), "install_s": _install_seconds(args.venv),
                          "clouds_yaml": str(cloud.paths.clouds_yaml),
                          "horizon_url": _horizon_url(cloud),
                          "log_dir": str(cloud.paths.log)}, indent=1))
    else:
        print(f"cloud up in {report.steps['bring_up_total']} s ({report.virt_type}, "
              f"{report.nova_driver} nova driver); "
              f"OS_CLIENT_CONFIG_FILE={cloud.paths.clouds_yaml} OS_CLOUD=tl-demo"
              + (f"; dashboard {_horizon_url(cloud)}" if cloud.horizon else ""))
    return 0


def _horizon_url(cloud: Cloud) -> str | None:
    """Where the dashboard answers (None when the run does not serve it)."""
    return cloud.state.url("horizon", "/") if cloud.horizon is not None else None


def _install_seconds(venv: pathlib.Path) -> float | None:
    """How long tools/run-cloud.sh took to install the venv (its stamp file holds it)."""
    for stamp in venv.glob(".installed-*"):
        try:
            return float(stamp.read_text())
        except ValueError:
            return None
    return None


if __name__ == "__main__":
    sys.exit(main())
