"""Demo stage 3: the same protocol inside real Nova (API, scheduler, computes).

Nova's functional harness (shipped in the nova wheel) owns its process's
configuration and threads, so this stage runs the scenarios of
:mod:`trusted_launch.demo.nova_scenarios` in a child Python process and reads
the results it writes; nothing of the source tree's tests is needed.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from trusted_launch.demo.report import Recorder, ScenarioResult

SCENARIOS_MODULE = "trusted_launch.demo.nova_scenarios"
TIMEOUT_S = 900


def run(recorder: Recorder, data_dir: pathlib.Path) -> None:
    """Run the Nova scenarios; each becomes a result, a harness failure one refusal."""
    with tempfile.TemporaryDirectory(prefix="trusted-launch-nova-demo-") as tmp:
        out = pathlib.Path(tmp) / "scenarios.json"
        env = dict(os.environ, OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
        command = [sys.executable, "-m", SCENARIOS_MODULE, "--data-dir",
                   str(data_dir.resolve()), "--out", str(out)]
        finished = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        if not out.exists():
            tail = (finished.stdout + finished.stderr).strip().splitlines()[-3:]
            recorder.add(ScenarioResult("nova_harness", "accepted", "refused",
                                        "Nova scenarios did not run: " + " | ".join(tail)))
            return
        for item in json.loads(out.read_text())["scenarios"]:
            recorder.add(ScenarioResult(item["name"], item["expected"], item["outcome"],
                                        item["reason"], item["duration_ms"]))
