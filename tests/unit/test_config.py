"""Every option is defined once, with help text, and the samples are current."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from trusted_launch.conf import opts

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR_CONFIGS = sorted((ROOT / "etc" / "oslo-config-generator").glob("*.conf"))


@pytest.mark.parametrize("lister", [opts.list_ttp_opts, opts.list_compute_opts])
def test_every_option_has_help_and_a_unique_name(lister):
    seen = set()
    for group, options in lister():
        for option in options:
            assert option.help and len(option.help) > 20, f"[{group}] {option.name}"
            assert (group, option.name) not in seen, f"[{group}] {option.name} twice"
            seen.add((group, option.name))
    assert seen


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
def test_generated_sample_is_current(config, tmp_path):
    output = tmp_path / "sample.conf"
    generator = pathlib.Path(sys.executable).parent / "oslo-config-generator"
    subprocess.run([str(generator), "--config-file", str(config), "--output-file",
                    str(output)], check=True, cwd=ROOT, capture_output=True)
    committed = next(line.split("=", 1)[1].strip() for line in config.read_text().splitlines()
                     if line.startswith("output_file"))
    assert output.read_text() == (ROOT / committed).read_text(), \
        f"{committed} is stale: run tox -e genconfig"
