#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (as root): system packages from
# bindep.txt, a virtualenv in .venv with the project installed. Idempotent and
# quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

packages=$(awk '!/^#/ && NF {print $1}' bindep.txt)
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt test-requirements.txt setup.cfg | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv" >&2
    .venv/bin/pip install -q -U pip wheel >/dev/null
    .venv/bin/pip install -q -r requirements.txt -r test-requirements.txt
    .venv/bin/pip install -q --no-deps -e .
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# The editable install cannot place the compute driver shim inside Nova's own
# package; link it there so load_compute_driver finds nova.virt.trusted_launch.
nova_virt=$(.venv/bin/python -c 'import importlib.util as u; print(u.find_spec("nova").submodule_search_locations[0])')/virt
if [ -d "$nova_virt" ] && [ "$(readlink "$nova_virt/trusted_launch")" != "$PWD/nova/virt/trusted_launch" ]; then
    ln -sfn "$PWD/nova/virt/trusted_launch" "$nova_virt/trusted_launch"
fi
