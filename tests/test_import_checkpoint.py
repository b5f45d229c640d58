"""vidcls import-checkpoint: reference .pt pickles → safetensors checkpoints, same logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidcls.checkpoint import load_model
from vidcls.cli import main
from vidcls.config import TemporalConfig
from vidcls.models.temporal import SuperEnhancedTemporalModel, config_dict
from vidcls.training.import_checkpoint import import_checkpoint


def _reference_checkpoint(path, temporal: TemporalConfig, with_config: bool = True, seed: int = 3):
    """What the reference project's torch.save wrote: state, config, optimizer, numpy metrics."""
    torch.manual_seed(seed)
    model = SuperEnhancedTemporalModel(temporal)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 9, temporal.feature_dim)).sum().backward()
    opt.step()
    blob = {
        "epoch": 17,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "metrics": {"accuracy": np.float64(0.9345), "confusion_matrix": np.eye(4, dtype=np.int64) * 3,
                    "per_class_f1": np.array([0.9, 0.95, 0.92, 0.96])},
        "history": {"train_loss": [1.2, 0.8], "val_acc": [np.float32(0.7), np.float32(0.8)]},
    }
    if with_config:
        blob["model_config"] = config_dict(temporal)
    torch.save(blob, path)
    return model.eval()


SMALL = TemporalConfig(feature_dim=1280, hidden_dim=32, num_lstm_layers=2, num_attention_heads=4, dropout=0.3)
# Without model_config the attention heads cannot be read from the weights: the default 12 is assumed.
NO_CONFIG = TemporalConfig(feature_dim=1280, hidden_dim=48, num_lstm_layers=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_refuses_without_trust_flag(tmp_path, capsys):
    _reference_checkpoint(tmp_path / "ref.pt", SMALL)
    with pytest.raises(PermissionError, match="pickle"):
        import_checkpoint(tmp_path / "ref.pt", tmp_path / "out")
    assert main(["import-checkpoint", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("with_config", [True, False])
def test_converted_model_gives_identical_logits(tmp_path, with_config):
    temporal = SMALL if with_config else NO_CONFIG
    original = _reference_checkpoint(tmp_path / "ref.pt", temporal, with_config)
    assert main(["import-checkpoint", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "ours"), "--trust-pickle"]) == 0
    model, config, meta = load_model(tmp_path / "ours" / "model_0")
    assert config.backbone == "efficientnet_v2_s" and config.temporal == temporal
    assert meta["imported_from"] == "ref.pt" and meta["backbone_weights"] == "imagenet" and len(meta["sha256"]) == 64
    x = torch.randn(3, 73, 1280)
    with torch.no_grad():
        for length in (73, 36, 109):
            xi = torch.randn(2, length, 1280)
            assert torch.equal(original(xi), model(xi))
        assert torch.equal(original(x), model(x))
    metrics = json.loads((tmp_path / "ours" / "model_0" / "metrics.json").read_text())
    assert metrics["reference_metrics"]["confusion_matrix"][2] == [0, 0, 3, 0]
    assert metrics["history"]["val_acc"] == pytest.approx([0.7, 0.8])


def test_backbone_flag_and_mismatch(tmp_path):
    big = TemporalConfig(feature_dim=2048, hidden_dim=16, num_lstm_layers=1, num_attention_heads=2)
    _reference_checkpoint(tmp_path / "r.pt", big)
    out = import_checkpoint(tmp_path / "r.pt", tmp_path / "a", trust_pickle=True, backbone="resnet101")
    assert load_model(out)[1].backbone == "resnet101"
    assert load_model(import_checkpoint(tmp_path / "r.pt", tmp_path / "b", trust_pickle=True))[1].backbone == "resnet50"
    with pytest.raises(ValueError, match="1280-d"):
        import_checkpoint(tmp_path / "r.pt", tmp_path / "c", trust_pickle=True, backbone="efficientnet_v2_s")
