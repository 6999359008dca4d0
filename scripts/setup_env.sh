#!/usr/bin/env bash
# Create (or reuse) the kit's virtual environment and install what it needs.
#
# On a machine without an NVIDIA GPU the CPU build of torch is installed first,
# so the package's `torch>=2.6` range is already satisfied and pip does not
# pull a multi-GB CUDA build. Machines with a GPU get pip's default (CUDA) build,
# and a torch that is already installed is always kept.
set -euo pipefail

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-dev}"
# LATEST=1 (in a new environment): the newest releases the ranges allow, instead of constraints.txt (the versions the
# test suite passed with, written by scripts/lock_versions.py).
LATEST="${LATEST:-}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
STAMP="$VENV/.course_lib-installed"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: installing the default (CUDA) torch build"
        "${PIP[@]}" install "torch>=2.6"
    elif "${PIP[@]}" install --dry-run --no-index --no-deps --quiet --report - \
            "torch==$TORCH_VERSION" 2>/dev/null | grep -q '+cpu'; then
        # A CPU wheel is reachable through pip's own find-links (e.g. a local wheel folder).
        echo "[setup] no GPU: installing the local CPU build torch==$TORCH_VERSION"
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    else
        echo "[setup] no GPU: installing torch==$TORCH_VERSION from the PyTorch CPU index"
        "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" \
            --extra-index-url https://pypi.org/simple
    fi
fi

CONSTRAINTS=()
if [ -z "$LATEST" ] && [ -f constraints.txt ]; then
    CONSTRAINTS=(-c constraints.txt)
fi
# Reinstall the kit only when its dependency list, its constraints or the choice changed.
want="$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)-$EXTRAS-${LATEST:+latest}"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    if [ ${#CONSTRAINTS[@]} -gt 0 ]; then
        echo "[setup] installing course_lib[$EXTRAS] (editable) at the verified versions (constraints.txt)"
    else
        echo "[setup] installing course_lib[$EXTRAS] (editable) at the newest versions the ranges allow"
    fi
    "${PIP[@]}" install -e ".[$EXTRAS]" "${CONSTRAINTS[@]}"
    echo "$want" > "$STAMP"
fi
# ipykernel stages the kernel spec in a temporary folder it leaves behind: give it one we remove.
KERNEL_TMP="$(mktemp -d)"
TMPDIR="$KERNEL_TMP" "$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python3 >/dev/null
rm -rf "$KERNEL_TMP"
echo "[setup] environment ready: $VENV"
