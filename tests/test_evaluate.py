"""vidcls evaluate: standard/TTA/ensemble math (views at their own lengths) and output files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from vidcls.checkpoint import save_model
from vidcls.cli import main
from vidcls.models.temporal import SuperEnhancedTemporalModel
from vidcls.sampling import tta_views
from vidcls.training.evaluate import evaluate
from vidcls.training.features_h5 import read_features, split_path
from vidcls.training.metrics import classification_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_models(tmp_path, config, n=2):
    models = []
    for i in range(n):
        torch.manual_seed(100 + i)
        m = SuperEnhancedTemporalModel(config.temporal).eval()
        save_model(tmp_path / "ckpt" / f"model_{i}", m, config, meta={"seed": 100 + i, "backbone_weights": "none"})
        models.append(m)
    return models


def test_metrics_hand_computed():
    m = classification_metrics([0, 0, 1, 1, 2, 3], [0, 1, 1, 1, 2, 2], ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_per_class"] == pytest.approx({"a": 2 / 3, "b": 0.8, "c": 2 / 3, "d": 0.0})
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 4)
    assert m["f1_weighted"] == pytest.approx((2 * 2 / 3 + 2 * 0.8 + 2 / 3) / 6)
    assert m["confusion_matrix"][0] == [1, 1, 0, 0] and m["confusion_matrix"][3] == [0, 0, 1, 0]


def test_tta_and_ensemble_math(synthetic_feature_dir, tmp_path, tiny_config):
    fs = read_features(split_path(synthetic_feature_dir, "test"))
    assert (fs.num_frames < fs.features.shape[1]).any()  # some padded videos: trimming matters
    models = _random_models(tmp_path, tiny_config)
    metrics, probs = evaluate(fs, models, ["model_0", "model_1"], tiny_config)
    for i in range(len(fs)):  # one video at a time, each view at its own length, as served
        seq = torch.from_numpy(fs.features[i, : fs.num_frames[i]])
        views = tta_views(seq, tiny_config.tta_views)
        with torch.no_grad():
            per_model = [torch.stack([torch.softmax(m(views[v][None]), -1)[0] for v in tiny_config.tta_views])
                         for m in models]
            original = torch.softmax(models[0](seq[None]), -1)[0]
        np.testing.assert_allclose(probs["model_0_standard"][i], original.numpy(), atol=1e-6)
        np.testing.assert_allclose(probs["model_1_tta"][i], per_model[1].mean(0).numpy(), atol=1e-6)
        expected = torch.stack([p.mean(0) for p in per_model]).mean(0)
        np.testing.assert_allclose(probs["ensemble_tta"][i], expected.numpy(), atol=1e-6)
    assert metrics["ensemble_tta"]["num_models"] == 2
    assert set(metrics["models"]["model_0"]) == {"standard", "tta"}


def test_cli_writes_metrics_pngs_and_predictions(synthetic_feature_dir, tmp_path, tiny_config, capsys):
    _random_models(tmp_path, tiny_config)
    out = tmp_path / "eval"
    assert main(["evaluate", str(synthetic_feature_dir), str(tmp_path / "ckpt"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and set(metrics["models"]) == {"model_0", "model_1"}
    for block in (metrics["ensemble_tta"], metrics["models"]["model_1"]["tta"]):
        assert {"accuracy", "f1_weighted", "f1_macro", "f1_per_class", "confusion_matrix"} <= set(block)
        assert set(block["f1_per_class"]) == set(tiny_config.classes)
        assert np.sum(block["confusion_matrix"]) == 16
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["confusion_ensemble_tta.png", "confusion_model_0_standard.png", "confusion_model_0_tta.png",
                    "confusion_model_1_standard.png", "confusion_model_1_tta.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    rows = list(csv.reader(open(out / "predictions.csv")))
    assert rows[0] == ["video_id", "true", "predicted", *tiny_config.classes] and len(rows) == 17
    assert "ensemble" in capsys.readouterr().out
