"""Shared pytest configuration: test data paths and fixture plugins."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

# Nova's functional harness runs with native threads; it must decide that before
# anything imports eventlet (oslo.messaging and oslo.service do), so say it first.
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
from nova import monkey_patch

monkey_patch.patch()

pytest_plugins = ["tests.fixtures.swtpm", "tests.fixtures.ttp"]

DATA_DIR = pathlib.Path(__file__).parent / "data"
EVENTLOG_DIR = DATA_DIR / "eventlogs"
IMA_DIR = DATA_DIR / "ima"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def expected_pcrs() -> dict:
    """``{log name: {bank: {pcr: hex}}}`` from the shared test data."""
    return json.loads((EVENTLOG_DIR / "expected_pcrs.json").read_text())
