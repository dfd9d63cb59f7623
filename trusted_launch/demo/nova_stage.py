"""Demo stage 3: the same protocol inside real Nova (API, scheduler, computes).

Nova's functional harness ships in the nova wheel but runs as a test case, so
this stage runs the source tree's ``tests/nova/demo_scenarios.py`` with pytest
in a child process and reads the scenario results it writes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from trusted_launch.demo.report import Recorder, ScenarioResult

SCENARIOS = "tests/nova/demo_scenarios.py"
TIMEOUT_S = 900


def run(recorder: Recorder, source_root: pathlib.Path) -> None:
    """Run the Nova scenarios; each becomes a result, a harness failure one refusal."""
    with tempfile.TemporaryDirectory(prefix="trusted-launch-nova-demo-") as tmp:
        out = pathlib.Path(tmp) / "scenarios.json"
        env = dict(os.environ, TRUSTED_LAUNCH_DEMO_OUT=str(out),
                   OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
        command = [sys.executable, "-m", "pytest", SCENARIOS, "-q", "-p", "no:cacheprovider",
                   "-p", "no:randomly", "-x"]
        finished = subprocess.run(command, cwd=source_root, env=env, capture_output=True,
                                  text=True, timeout=TIMEOUT_S, check=False)
        if not out.exists():
            tail = (finished.stdout + finished.stderr).strip().splitlines()[-3:]
            recorder.add(ScenarioResult("nova_harness", "accepted", "refused",
                                        "Nova scenarios did not run: " + " | ".join(tail)))
            return
        for item in json.loads(out.read_text())["scenarios"]:
            recorder.add(ScenarioResult(item["name"], item["expected"], item["outcome"],
                                        item["reason"], item["duration_ms"]))
