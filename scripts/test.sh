#!/usr/bin/env bash
# The test suite, as CI runs it: install (with test extras), lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VITRINA_EXTRAS=test bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests scripts benchmarks
python -m pytest "$@"
