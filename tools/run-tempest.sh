#!/usr/bin/env bash
# Tempest against the cloud of tools/run-cloud.sh (see doc/tempest.md):
#   tools/run-tempest.sh plugin     the trusted launch plugin: tempest run --regex trusted_launch
#   tools/run-tempest.sh compare    Tempest's compute API tests (tools/tempest/compute-api.txt)
#                                   with TrustedLibvirtDriver and SecurityProfileFilter, then with
#                                   the stock Nova driver and scheduler filters; prints the
#                                   counts side by side and the tests whose result differs
# Brings the cloud up (or reuses it) with TL_CLOUD_NAME; results in .cloud/tempest/results/.
# TEMPEST_CONCURRENCY (default 2) sets how many test classes run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TL_CLOUD_VENV:-$PWD/.cloud-venv}
CONCURRENCY=${TEMPEST_CONCURRENCY:-2}
mode=${1:-}
results=$PWD/.cloud/tempest/results   # inside the workspace: made after tempest init

workspace() {   # (re)write tempest.conf for the cloud as it runs now; prints the workspace
    "$VENV/bin/python" -m trusted_launch.sandbox.cloud.tempest_conf --venv "$VENV"
}

run() {         # run <name> <tempest run arguments...>: subunit into results/<name>.subunit
    local name=$1 dir started
    shift
    dir=$(workspace)
    mkdir -p "$results"
    started=$(date +%s)
    echo "run-tempest: $name: tempest run $*" >&2
    (cd "$dir" && "$VENV/bin/tempest" run --concurrency "$CONCURRENCY" --subunit "$@") \
        >"$results/$name.subunit" || true   # the counts below tell failures apart
    echo "run-tempest: $name: $(( $(date +%s) - started )) s" >&2
    "$VENV/bin/python" -m trusted_launch.sandbox.cloud.tempest_results "$results/$name.subunit"
}

case $mode in
    plugin)
        tools/run-cloud.sh --nova-driver trusted >&2
        run plugin --regex trusted_launch
        ;;
    compare)
        # Trusted first: a cloud that is up runs that driver already (one restart, not two).
        for driver in trusted stock; do
            tools/run-cloud.sh --nova-driver "$driver" >&2
            run "$driver" --include-list "$PWD/tools/tempest/compute-api.txt" >/dev/null
        done
        "$VENV/bin/python" -m trusted_launch.sandbox.cloud.tempest_results \
            "$results/stock.subunit" "$results/trusted.subunit"
        ;;
    *)
        sed -n '2,9p' "$0" >&2
        exit 2
        ;;
esac
