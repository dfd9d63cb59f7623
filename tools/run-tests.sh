#!/usr/bin/env bash
# The whole test suite: set-up, then pytest (unit, functional on swtpm, Nova's
# functional harness, integration against the TTP over HTTPS, PostgreSQL,
# MariaDB and RabbitMQ). Nova runs on native threads (its default) in the main
# run; its trusted-launch tests then run once more in Nova's eventlet mode, and
# Nova's own libvirt driver unit tests run with the stock LibvirtDriver and with
# TrustedLibvirtDriver in its place (tools/nova_driver_tests.py, both counts).
# tests/cloud (a real OpenStack on this machine, tools/run-cloud.sh) runs last,
# serially: one bring-up and one tear-down for the session; it skips, saying
# why, where the machine cannot run it (TL_CLOUD_TESTS=0 skips it on purpose).
# Arguments, if any, go to the main pytest run only.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
if [ "$#" -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest -n 2 --ignore=tests/cloud
.venv/bin/python tools/pytest_eventlet.py tests/nova/test_trusted_compute.py tests/nova/test_trusted_rpc.py \
    tests/nova/test_security_profile_filter.py::BootPlacementTest
.venv/bin/python tools/nova_driver_tests.py
.venv/bin/python -m pytest tests/cloud
