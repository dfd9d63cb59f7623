"""``trusted-launch demo``: every protocol outcome, shown on real parts."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the trusted launch demonstration",
        description="Replay real firmware event logs, verify a real vTPM quote, then run "
                    "the trusted launch protocol on swtpm hosts and a TTP over HTTPS: one "
                    "accepted launch and each refusal, with the time of every step.")
    demo.add_argument("--json", action="store_true",
                      help='print one JSON object {"scenarios": [...]} on stdout')
    demo.add_argument("--data-dir", type=pathlib.Path,
                      default=pathlib.Path(os.environ.get("TRUSTED_LAUNCH_DEMO_DATA",
                                                          "tests/data")),
                      help="folder with eventlogs/ (default: tests/data of the source tree)")
    demo.add_argument("--profiles-dir", type=pathlib.Path,
                      default=pathlib.Path("examples/profiles"),
                      help="security-profile documents low/medium/high.yaml for the TTP")
    demo.add_argument("--no-nova", action="store_true",
                      help="skip the stage that runs the scenarios inside real Nova")
    demo.add_argument("--cloud", nargs="?", metavar="TARGET_JSON", const="",
                      help="instead, run the scenarios on the real cloud that "
                           "tools/run-cloud.sh started (in .cloud, services in "
                           "$TL_CLOUD_VENV or .cloud-venv), through the openstack CLI, on "
                           "real guests; TARGET_JSON describes another cloud")
    demo.set_defaults(func=demo_command)


def _cloud_target(path: str):
    from trusted_launch.sandbox.cloud.layout import REPO
    from trusted_launch.sandbox.cloud.scenarios import CloudTarget, cloud_target

    if path:
        return CloudTarget.from_file(path)
    venv = pathlib.Path(os.environ.get("TL_CLOUD_VENV", REPO / ".cloud-venv"))
    return cloud_target(REPO / ".cloud", venv)


def demo_command(args: argparse.Namespace) -> int:
    from trusted_launch.demo import evidence_stage, nova_stage, protocol_stage
    from trusted_launch.demo.report import Recorder

    echo = None if args.json else print
    recorder = Recorder(echo=echo)
    if args.cloud is not None:
        from trusted_launch.sandbox.cloud.scenarios import run_scenarios

        run_scenarios(_cloud_target(args.cloud), recorder)
    else:
        evidence_stage.run(recorder, args.data_dir / "eventlogs")
        protocol_stage.run(recorder, args.data_dir, args.profiles_dir)
        if not args.no_nova:
            nova_stage.run(recorder, args.data_dir)
    if args.json:
        json.dump({"scenarios": [r.to_json() for r in recorder.results],
                   "all_as_expected": recorder.all_as_expected}, sys.stdout, indent=2)
        print()
    else:
        good = sum(r.as_expected for r in recorder.results)
        print(f"\n{good} of {len(recorder.results)} scenarios ended as expected")
    return 0 if recorder.all_as_expected else 1
