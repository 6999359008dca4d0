#!/usr/bin/env bash
# Run the test suite offline. pytest's exit 5 (no tests collected) is a failure here.
#
# Offline means no network at all, not only the hub's offline switches: where the kernel lets us
# make a network namespace (root, or unprivileged user namespaces), pytest runs in a new one whose
# only interface is loopback (JupyterLab, kernels and the browser tests talk over it). Anything
# that reaches for the network then fails at once, and tests/test_offline.py checks the cut is
# real. COURSE_LIB_TESTS_NETWORK=host keeps the host's network (e.g. to debug a single test).
set -uo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
PYTEST=("${VENV:-.venv}/bin/python" -m pytest "$@")

UNSHARE=()
if [ "${COURSE_LIB_TESTS_NETWORK:-none}" = "none" ] && command -v ip >/dev/null 2>&1; then
    for flags in "--net" "--net --map-root-user"; do
        # shellcheck disable=SC2086  # the flags are two words on purpose
        if unshare $flags ip link set lo up 2>/dev/null; then
            read -r -a UNSHARE <<< "unshare $flags"
            break
        fi
    done
fi

if [ ${#UNSHARE[@]} -gt 0 ]; then
    echo "run_tests: no network (a new network namespace with loopback only: ${UNSHARE[*]})"
    COURSE_LIB_TESTS_NETWORK=none "${UNSHARE[@]}" sh -c 'ip link set lo up && exec "$@"' sh "${PYTEST[@]}"
else
    echo "run_tests: the host's network stays up (no network namespace here); the hub switches are off" >&2
    COURSE_LIB_TESTS_NETWORK=host "${PYTEST[@]}"
fi
status=$?
if [ "$status" -eq 5 ]; then
    echo "run_tests: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
