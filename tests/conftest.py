"""Shared fixtures. Each tests/fixtures/*.py module is a pytest plugin (one per area, so parallel
work on training, serving and client fixtures never edits the same file)."""

from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly where no CUDA device is visible."""
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _has_gpu() -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except Exception:
        return False
