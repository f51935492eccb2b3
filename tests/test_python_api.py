"""The public Python API: a small, curated surface that imports fast."""

from __future__ import annotations

import subprocess
import sys

import vitrina


def test_public_names_resolve() -> None:
    assert vitrina.__all__ == sorted(set(vitrina.__all__), key=vitrina.__all__.index)  # no duplicates
    for name in vitrina.__all__:
        assert getattr(vitrina, name) is not None, name
    assert issubclass(vitrina.StoreLocked, vitrina.VitrinaError) and issubclass(
        vitrina.ModelUnavailable, vitrina.ModelError
    )


def test_importing_vitrina_does_not_load_torch_or_the_web_stack() -> None:
    code = "import sys, vitrina; print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
