#!/usr/bin/env bash
# The test suite, as CI runs it: install (with test extras), lint, then pytest.
# The web-page test drives Debian's chromium; it is installed here when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
VITRINA_EXTRAS=test bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium: the browser test will fail under CI" >&2
  else
    echo "chromium is not installed (sudo apt-get install chromium): the browser test will be skipped" >&2
  fi
fi
# The tesseract OCR engine and the language packs its tests read (vitrina ocr --engine tesseract).
if ! command -v tesseract >/dev/null 2>&1 || ! tesseract --list-langs 2>/dev/null | grep -qx nor; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-nor tesseract-ocr-deu tesseract-ocr-frk fonts-dejavu-core >/dev/null) || echo "could not install tesseract: its OCR tests will fail under CI" >&2
  else
    echo "tesseract is not installed (sudo apt-get install tesseract-ocr tesseract-ocr-nor tesseract-ocr-deu tesseract-ocr-frk)" >&2
  fi
fi
. .venv/bin/activate
ruff check src tests scripts benchmarks
ruff format --check src tests scripts benchmarks
mypy
python -m pytest "$@"
