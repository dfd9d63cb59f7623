#!/bin/sh
# Build (or find in the cache) the trusted launch guest image: Debian bookworm from
# Debian packages with trusted-launch-guest as a service. Needs root, mmdebstrap,
# e2fsprogs and qemu-utils (bindep.txt). Prints the image path, size and
# build time (--json: one JSON object). See doc/guest-image.md.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" -m trusted_launch.sandbox.cloud.guest_image "$@"
