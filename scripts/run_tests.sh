#!/usr/bin/env bash
# Run the test suite offline. pytest's exit 5 (no tests collected) is a failure here.
set -uo pipefail
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
"${VENV:-.venv}/bin/python" -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "run_tests: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
