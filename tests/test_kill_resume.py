"""`vidcls train` killed with SIGKILL mid-run, then run again with the same
command, ends with the same checkpoint and training state as an uninterrupted run, bit for bit.

(`vidcls extract` killed mid-run is tested in tests/test_extract.py::test_killed_process_resumes;
training resumed after a clean stop in tests/test_train.py. This is the hard-kill case for train.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EPOCHS = 8
KILL_AFTER_EPOCH = 3


def _cmd(features: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "vidcls.cli", "train", str(features), str(out), "--models", "1",
            "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--no-progress", "--threads", "1"]


def _saved_epoch(model_dir: Path) -> int:
    marks = sorted((model_dir / "train_state").glob("epoch_*.json"))
    return int(marks[-1].stem.split("_")[1]) if marks else 0


def _log_without_timing(model_dir: Path) -> list[dict]:
    with open(model_dir / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.timeout(600)
def test_killed_train_resumes_to_the_same_checkpoint(synthetic_feature_dir, tmp_path):
    from safetensors.torch import load_file
    import torch

    killed_out = tmp_path / "killed"
    model_dir = killed_out / "model_0"
    proc = subprocess.Popen(_cmd(synthetic_feature_dir, killed_out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while _saved_epoch(model_dir) < KILL_AFTER_EPOCH:
            assert proc.poll() is None, f"train ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no training progress in 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # at whatever point of the next epoch it has reached
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    at_kill = _saved_epoch(model_dir)
    assert KILL_AFTER_EPOCH <= at_kill < EPOCHS, "the run was not interrupted"

    subprocess.run(_cmd(synthetic_feature_dir, killed_out), check=True, capture_output=True, timeout=300)
    straight_out = tmp_path / "straight"
    subprocess.run(_cmd(synthetic_feature_dir, straight_out), check=True, capture_output=True, timeout=300)

    a_dir, b_dir = straight_out / "model_0", model_dir
    for name in ("model.safetensors", f"train_state/epoch_{EPOCHS:04d}.safetensors"):
        a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    assert _log_without_timing(a_dir) == _log_without_timing(b_dir)
    assert json.loads((a_dir / "config.json").read_text()) == json.loads((b_dir / "config.json").read_text())
    best = [json.loads((d / "metrics.json").read_text())["best"] for d in (a_dir, b_dir)]
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in best][0] == \
        [{k: v for k, v in m.items() if k != "seconds"} for m in best][1]
    assert not list(b_dir.rglob("*.tmp")), "a temporary file was left behind"
