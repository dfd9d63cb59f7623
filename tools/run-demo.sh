#!/usr/bin/env bash
# The main job: set-up, then the trusted-launch demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/trusted-launch demo "$@"
