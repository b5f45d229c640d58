"""Stage 2: the recipe learns, resume is bit-identical, checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vidcls.checkpoint import load_ensemble, load_model
from vidcls.cli import main
from vidcls.config import TrainConfig
from vidcls.training.train import (class_alpha, epoch_order, focal_loss, make_batch, SequenceData,
                                   train_ensemble)
from vidcls.training.features_h5 import read_features, split_path


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(features, out, **kw):
    kw.setdefault("progress", False)
    return train_ensemble(split_path(features, "train"), split_path(features, "val"), out, **kw)


def test_recipe_pieces():
    labels = torch.tensor([0] * 8 + [1] * 2 + [2] * 1 + [3] * 1)
    alpha = class_alpha(labels, 4, TrainConfig())
    assert alpha.tolist() == pytest.approx([0.5, 1.5, 3.0, 3.0])  # 12/(4*8)=0.375 → clamped to 0.5
    gen = torch.Generator().manual_seed(0)
    drawn = torch.tensor([epoch_order(labels, 4, True, gen) for _ in range(200)]).flatten()
    share = torch.bincount(labels[drawn], minlength=4).float() / len(drawn)
    assert (share - 0.25).abs().max() < 0.03  # class-balanced sampling
    logits = torch.tensor([[4.0, 0, 0, 0], [0, 0, 0, 4.0]])
    easy = focal_loss(logits, torch.tensor([0, 3]), torch.ones(4), 2.0, 0.1)
    hard = focal_loss(logits, torch.tensor([1, 2]), torch.ones(4), 2.0, 0.1)
    assert 0 < easy < hard


def test_augmented_batches_are_padded_and_masked(synthetic_feature_dir, tiny_config):
    data = SequenceData.from_set(read_features(split_path(synthetic_feature_dir, "train")))
    tc = TrainConfig(aug_subsample_p=1.0, aug_noise_p=0.0, aug_roll_p=0.0)
    x, lengths, y = make_batch(data, [0, 1, 2], tc, torch.Generator().manual_seed(0))
    assert x.shape == (3, tiny_config.seq_len, 128)
    for j in range(3):
        n = int(lengths[j])
        assert n >= tc.aug_subsample_min_rows and n >= int(0.7 * int(data.lengths[j])) - 1
        assert not x[j, n:].any()


def test_loss_decreases_and_model_learns(synthetic_feature_dir, tmp_path):
    (model_dir,) = _train(synthetic_feature_dir, tmp_path / "run", models=1, epochs=8, patience=8)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    losses = [r["train_loss"] for r in metrics["history"]]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert metrics["best"]["val_accuracy"] >= 0.75
    log = (model_dir / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss") and len(log) == 9
    model, config, meta = load_model(model_dir)
    assert meta["seed"] == 42 and meta["backbone_weights"] == "none"
    assert meta["features"].endswith("train_features_multiscale.h5")
    assert config.temporal == model.config


def _final_tensors(model_dir):
    state = sorted((model_dir / "train_state").glob("*.safetensors"))
    assert len(state) == 1
    return load_file(str(model_dir / "model.safetensors")), load_file(str(state[0]))


def test_resumed_training_is_bit_identical(synthetic_feature_dir, tmp_path):
    straight = _train(synthetic_feature_dir, tmp_path / "straight", models=1, epochs=4)[0]
    _train(synthetic_feature_dir, tmp_path / "resumed", models=1, epochs=2)
    first = json.loads((tmp_path / "resumed" / "model_0" / "metrics.json").read_text())
    assert first["epochs_run"] == 2
    resumed = _train(synthetic_feature_dir, tmp_path / "resumed", models=1, epochs=4)[0]
    for a, b in zip(_final_tensors(straight), _final_tensors(resumed)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    hist = [json.loads((d / "metrics.json").read_text())["history"] for d in (straight, resumed)]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(hist[0]) == drop(hist[1])
    # A finished run is skipped; other settings in the same folder are refused.
    _train(synthetic_feature_dir, tmp_path / "resumed", models=1, epochs=4)
    with pytest.raises(SystemExit, match="other settings"):
        _train(synthetic_feature_dir, tmp_path / "resumed", models=1, epochs=5, lr=0.01)


def test_cli_ensemble(synthetic_feature_dir, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["train", str(synthetic_feature_dir), str(out), "--models", "2", "--epochs", "2",
                 "--scheduler-step", "epoch", "--no-progress"]) == 0
    models, config, metas = load_ensemble(out)
    assert [m["seed"] for m in metas] == [42, 43] and config.num_models == 2
    assert config.train.scheduler_step == "epoch" and config.train.epochs == 2
    x = torch.randn(2, config.seq_len, config.feature_dim)
    with torch.no_grad():
        assert not torch.equal(models[0](x), models[1](x))  # different seeds, different models
    assert "2 model(s)" in capsys.readouterr().out


def test_checkpoint_holds_the_trained_model(synthetic_feature_dir, tmp_path):
    """After one epoch the best checkpoint is the final training state: same tensors, same logits."""
    (model_dir,) = _train(synthetic_feature_dir, tmp_path / "one", models=1, epochs=1)
    best, state = _final_tensors(model_dir)
    trained = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    assert trained.keys() == best.keys() and all(torch.equal(trained[k], best[k]) for k in best)
    model, config, _ = load_model(model_dir)
    reference = type(model)(config.temporal).eval()
    reference.load_state_dict(trained)
    x = torch.randn(2, config.seq_len, config.feature_dim)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        assert torch.equal(model(x[:, :9]), reference(x[:, :9]))
