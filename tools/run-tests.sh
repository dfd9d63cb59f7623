#!/usr/bin/env bash
# The whole test suite: set-up, then pytest (unit, functional on swtpm,
# integration against the TTP over HTTPS, PostgreSQL, MariaDB and RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python -m pytest "$@"
