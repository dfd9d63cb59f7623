#!/usr/bin/env bash
# A real single-region OpenStack on this machine (see doc/real-cloud.md):
#   tools/run-cloud.sh [--json]          bring it up (idempotent: reuses what runs)
#   tools/run-cloud.sh --down [--json]   stop everything it started
#   tools/run-cloud.sh --down --purge    ... and drop its databases and state
# Installs the services' pinned release into .cloud-venv on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TL_CLOUD_VENV:-$PWD/.cloud-venv}
PY=${PYTHON:-python3}
REQUIREMENTS=tools/cloud/requirements.txt

install_cloud_venv() {
    local stamp started
    stamp=$VENV/.installed-$(cat "$REQUIREMENTS" requirements.txt setup.cfg | sha256sum | cut -c1-16)
    [[ -f $stamp ]] && return 0
    started=$(date +%s)
    echo "run-cloud: installing the OpenStack services into $VENV" >&2
    [[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip wheel >/dev/null
    "$VENV/bin/pip" install -q -r "$REQUIREMENTS" -e "$PWD" >"$VENV/install.log" 2>&1 || {
        tail -20 "$VENV/install.log" >&2; echo "run-cloud: pip install failed" >&2; exit 1; }
    local installed
    installed=$(cd / && "$VENV/bin/python" -c 'import trusted_launch; print(trusted_launch.__file__)' 2>/dev/null)
    if [[ $installed != "$PWD/trusted_launch/"* ]]; then
        echo "run-cloud: $VENV imports trusted_launch from $installed, not from $PWD" >&2; exit 1
    fi
    # nova-compute imports nova.virt.<compute_driver>: put the driver's shim there.
    local nova_virt
    nova_virt=$("$VENV/bin/python" -c 'import nova.virt, os; print(os.path.dirname(nova.virt.__file__))')
    ln -sfn "$PWD/nova/virt/trusted_launch" "$nova_virt/trusted_launch"
    rm -f "$VENV"/.installed-*
    echo "$(( $(date +%s) - started ))" >"$stamp"
    echo "run-cloud: installed in $(cat "$stamp") s" >&2
}

# Horizon gets its own virtualenv (doc/dashboard.md): Django and the dashboard's
# client libraries never move the services' pinned set.
install_horizon_venv() {
    local stamp started
    stamp=$HORIZON_VENV/.installed-$(cat "$HORIZON_REQUIREMENTS" | sha256sum | cut -c1-16)
    [[ -f $stamp ]] && return 0
    started=$(date +%s)
    echo "run-cloud: installing Horizon into $HORIZON_VENV" >&2
    [[ -x $HORIZON_VENV/bin/python ]] || "$PY" -m venv "$HORIZON_VENV"
    "$HORIZON_VENV/bin/pip" install -q -U pip wheel >/dev/null
    "$HORIZON_VENV/bin/pip" install -q -r "$HORIZON_REQUIREMENTS" \
        >"$HORIZON_VENV/install.log" 2>&1 || {
        tail -20 "$HORIZON_VENV/install.log" >&2; echo "run-cloud: pip install failed" >&2; exit 1; }
    rm -f "$HORIZON_VENV"/.installed-*
    echo "$(( $(date +%s) - started ))" >"$stamp"
    echo "run-cloud: Horizon installed in $(cat "$stamp") s" >&2
}

HORIZON_VENV=${TL_HORIZON_VENV:-$PWD/.horizon-venv}
HORIZON_REQUIREMENTS=tools/cloud/horizon-requirements.txt
export TL_HORIZON_VENV=$HORIZON_VENV
if [[ " $* " != *" --down "* ]]; then
    install_cloud_venv
    [[ " $* " == *" --no-horizon "* ]] || install_horizon_venv
fi
exec "$VENV/bin/python" -m trusted_launch.sandbox.cloud --venv "$VENV" "$@"
