"""vidcls import-checkpoint: reference .pt pickles → safetensors checkpoints, same logits, and a
file can never run code, leave a half import behind or end in a traceback."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest
import torch

from vidcls.checkpoint import load_model
from vidcls.cli import main
from vidcls.config import TemporalConfig, VidclsConfig
from vidcls.models.backbone import build_backbone
from vidcls.models.temporal import SuperEnhancedTemporalModel, config_dict
from vidcls.training.import_checkpoint import CheckpointImportError, import_checkpoint


def _reference_blob(temporal: TemporalConfig, with_config: bool = True, seed: int = 3):
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
                    "per_class_f1": np.array([0.9, 0.95, 0.92, 0.96]), "support": np.int64(412)},
        "history": {"train_loss": [1.2, 0.8], "val_acc": [np.float32(0.7), np.float32(0.8)]},
    }
    if with_config:
        blob["model_config"] = config_dict(temporal)
    return blob, model.eval()


def _reference_checkpoint(path, temporal: TemporalConfig, with_config: bool = True, seed: int = 3):
    blob, model = _reference_blob(temporal, with_config, seed)
    torch.save(blob, path)
    return model


SMALL = TemporalConfig(feature_dim=1280, hidden_dim=32, num_lstm_layers=2, num_attention_heads=4, dropout=0.3)
# Without model_config the attention heads cannot be read from the weights: the default 12 is assumed.
NO_CONFIG = TemporalConfig(feature_dim=1280, hidden_dim=48, num_lstm_layers=2)
TINY_WIDTH = TemporalConfig(feature_dim=128, hidden_dim=16, num_lstm_layers=1, num_attention_heads=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def _import(capsys, *args) -> tuple[int, str]:
    rc = main(["import-checkpoint", *map(str, args)])
    return rc, capsys.readouterr().err


def _one_line_error(err: str, file) -> None:
    """The whole of stderr is one line naming the file; no traceback, no torch advice to unpickle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {file}: ") and "nothing was written" in lines[0], err
    assert "Traceback" not in err and "weights_only=False" not in err and "weights_only` set to `False" not in err


@pytest.mark.parametrize("with_config", [True, False])
def test_converted_model_gives_identical_logits(tmp_path, with_config):
    temporal = SMALL if with_config else NO_CONFIG
    original = _reference_checkpoint(tmp_path / "ref.pt", temporal, with_config)
    assert main(["import-checkpoint", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "ours")]) == 0
    model, config, meta = load_model(tmp_path / "ours" / "model_0")
    assert config.backbone == "efficientnet_v2_s" and config.temporal == temporal
    assert meta["imported_from"] == "ref.pt" and meta["backbone_weights"] == "imagenet" and len(meta["sha256"]) == 64
    with torch.no_grad():
        for length in (73, 36, 109):
            xi = torch.randn(2, length, 1280)
            assert torch.equal(original(xi), model(xi))
    metrics = json.loads((tmp_path / "ours" / "model_0" / "metrics.json").read_text())
    assert metrics["reference_metrics"]["confusion_matrix"][2] == [0, 0, 3, 0]
    assert metrics["reference_metrics"]["support"] == 412
    assert metrics["history"]["val_acc"] == pytest.approx([0.7, 0.8])


def test_legacy_format_and_trust_pickle_is_a_no_op(tmp_path, capsys):
    """torch.save's pre-zip format reads the same way; the old flag is accepted and changes nothing."""
    blob, original = _reference_blob(SMALL)
    torch.save(blob, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    rc, err = _import(capsys, tmp_path / "old.pt", "--out", tmp_path / "ours", "--trust-pickle")
    assert rc == 0 and "--trust-pickle is no longer needed" in err
    model, _, _ = load_model(tmp_path / "ours" / "model_0")
    x = torch.randn(1, 73, 1280)
    with torch.no_grad():
        assert torch.equal(original(x), model(x))


# ---- a file never runs code ------------------------------------------------------------------------
class _OpenTrap:
    """Unpickling this opens (creates) the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class _ExecTrap(_OpenTrap):
    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class _SystemTrap(_OpenTrap):
    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _write_malicious(path, blob, form: str) -> None:
    if form == "zip":  # torch.save's default: a zip holding data.pkl
        torch.save(blob, path)
    elif form == "legacy":  # torch.save's pre-1.6 format: pickles one after the other
        torch.save(blob, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle stream, not written by torch at all
        with open(path, "wb") as f:
            pickle.dump(blob, f, protocol=2)


@pytest.mark.parametrize("form", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("trap", [_OpenTrap, _ExecTrap, _SystemTrap])
def test_malicious_checkpoint_runs_nothing(tmp_path, capsys, monkeypatch, form, trap):
    """A payload where the reference keeps numpy metrics: refused before it is built, whatever the
    flags, even with torch's switch for turning the restricted unpickler off set in the environment."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    blob, _ = _reference_blob(SMALL)
    blob["metrics"]["accuracy"] = trap(marker)
    bad = tmp_path / f"evil_{form}.pt"
    _write_malicious(bad, blob, form)
    rc, err = _import(capsys, bad, "--out", tmp_path / "out", "--trust-pickle")
    assert not marker.exists(), "importing the file ran its payload"
    assert rc == 1 and not (tmp_path / "out").exists()
    _one_line_error(err.replace("note: --trust-pickle is no longer needed and changes nothing: checkpoints are "
                                "read with a restricted unpickler that runs no code from the file\n", ""), bad)
    assert "refused" in err
    with pytest.raises(CheckpointImportError, match="refused"):
        import_checkpoint(bad, tmp_path / "lib")
    assert not marker.exists()


def test_payload_in_place_of_the_weights_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"model_state_dict": _OpenTrap(marker), "model_config": config_dict(SMALL)}, tmp_path / "x.pt")
    rc, err = _import(capsys, tmp_path / "x.pt", "--out", tmp_path / "out")
    assert rc == 1 and not marker.exists() and "refused: it asks to build io.open" in err


# ---- all or nothing --------------------------------------------------------------------------------
def test_multi_file_import_is_all_or_nothing(tmp_path, capsys):
    for i in range(2):
        _reference_checkpoint(tmp_path / f"ok{i}.pt", SMALL, seed=i)
    data = (tmp_path / "ok0.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    files = [tmp_path / "ok0.pt", tmp_path / "ok1.pt", tmp_path / "cut.pt"]
    rc, err = _import(capsys, *files, "--out", tmp_path / "new")
    assert rc == 1 and not (tmp_path / "new").exists()  # made by this run: removed again
    _one_line_error(err, tmp_path / "cut.pt")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    rc, _ = _import(capsys, *files, "--out", existing)
    assert rc == 1 and sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # no model_*, no staging
    rc, _ = _import(capsys, *files[:2], "--out", existing)
    assert rc == 0 and sorted(p.name for p in existing.iterdir()) == ["model_0", "model_1", "notes.txt"]
    # An ensemble mixing two imports would load as one: a folder that holds models is refused.
    rc, err = _import(capsys, files[0], "--out", existing)
    assert rc == 1 and "already holds model_0" in err
    assert load_model(existing / "model_1")[2]["imported_from"] == "ok1.pt"


# ---- one line for each kind of bad file ------------------------------------------------------------
def _bit_flipped(tmp_path, member: str):
    """A good checkpoint with one bit flipped inside ``member`` of its zip (the pickle or a tensor)."""
    _reference_checkpoint(tmp_path / "good.pt", SMALL)
    data = bytearray((tmp_path / "good.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "good.pt") as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x04
    return bytes(data)


BAD_FILES = {
    "empty": lambda tmp: b"",
    "truncated": lambda tmp: _good_bytes(tmp)[:4000],
    "truncated_tail": lambda tmp: _good_bytes(tmp)[:-30],
    "truncated_legacy": lambda tmp: _legacy_bytes(tmp)[:3000],
    "truncated_legacy_tail": lambda tmp: _legacy_bytes(tmp)[:-100],
    "flipped_pickle": lambda tmp: _bit_flipped(tmp, "data.pkl"),
    "flipped_tensor": lambda tmp: _bit_flipped(tmp, "data/0"),
    "text": lambda tmp: b"model_state_dict = {}\n",
    "png": lambda tmp: b"\x89PNG\r\n\x1a\n" + bytes(200),
    "safetensors": lambda tmp: _our_safetensors(tmp),
    "a_list": lambda tmp: _saved(tmp, [1, 2, 3]),
    "no_state_dict": lambda tmp: _saved(tmp, {"epoch": 3, "metrics": {}}),
    "other_model": lambda tmp: _saved(tmp, {"model_state_dict": torch.nn.Linear(3, 2).state_dict()}),
    "wrong_shapes": lambda tmp: _saved(tmp, {**_reference_blob(SMALL)[0], "model_config": config_dict(
        TemporalConfig(hidden_dim=48, num_lstm_layers=2, num_attention_heads=4))}),
    "impossible_config": lambda tmp: _saved(tmp, {**_reference_blob(SMALL)[0],
                                                  "model_config": config_dict(TemporalConfig(hidden_dim=64))}),
    "bad_model_config": lambda tmp: _saved(tmp, {**_reference_blob(SMALL)[0], "model_config": {"feature_dim": "x"}}),
}


def _good_bytes(tmp):
    _reference_checkpoint(tmp / "good.pt", SMALL)
    return (tmp / "good.pt").read_bytes()


def _legacy_bytes(tmp):
    torch.save(_reference_blob(SMALL)[0], tmp / "legacy.pt", _use_new_zipfile_serialization=False)
    return (tmp / "legacy.pt").read_bytes()


def _saved(tmp, obj):
    torch.save(obj, tmp / "obj.pt")
    return (tmp / "obj.pt").read_bytes()


def _our_safetensors(tmp):
    from vidcls.checkpoint import WEIGHTS, save_model
    from vidcls.config import VidclsConfig

    config = VidclsConfig.tiny()
    save_model(tmp / "ours", SuperEnhancedTemporalModel(config.temporal), config)
    return (tmp / "ours" / WEIGHTS).read_bytes()


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_one_line_and_exit_1(tmp_path, capsys, kind):
    bad = tmp_path / f"{kind}.pt"
    bad.write_bytes(BAD_FILES[kind](tmp_path))
    rc, err = _import(capsys, bad, "--out", tmp_path / "out")
    assert rc == 1 and not (tmp_path / "out").exists()
    _one_line_error(err, bad)


# ---- feature widths --------------------------------------------------------------------------------
def test_width_hints_and_backbone_flag(tmp_path, capsys):
    big = TemporalConfig(feature_dim=2048, hidden_dim=16, num_lstm_layers=1, num_attention_heads=2)
    _reference_checkpoint(tmp_path / "r.pt", big)
    rc, err = _import(capsys, tmp_path / "r.pt", "--out", tmp_path / "a", "--backbone", "resnet101")
    assert rc == 0 and load_model(tmp_path / "a" / "model_0")[1].backbone == "resnet101"
    rc, err = _import(capsys, tmp_path / "r.pt", "--out", tmp_path / "b")
    assert rc == 0 and load_model(tmp_path / "b" / "model_0")[1].backbone == "resnet50"
    assert "assumed the resnet50 backbone" in err and "resnet101" in err  # the ambiguity is said
    rc, err = _import(capsys, tmp_path / "r.pt", "--out", tmp_path / "c", "--backbone", "efficientnet_v2_s")
    assert rc == 1 and "1280-d" in err and "--backbone resnet50 or resnet101" in err
    _one_line_error(err, tmp_path / "r.pt")


def _reference_feature_file(path, dim: int, n_per_class: int = 3, seed: int = 0):
    """A feature file as the reference project wrote it (no vidcls additions), ``dim`` wide."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    feats = rng.normal(labels[:, None, None], 1.0, (len(labels), 73, dim)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset("num_frames", data=np.full(len(labels), 73, np.int32))
        f.attrs.update(num_videos=len(labels), max_frames=73, feature_dim=dim, multi_scale=True,
                       category_mapping=json.dumps({"Animation": 0, "Flat Content": 1, "Gaming": 2,
                                                    "Natural Content": 3}))
    return path


def test_any_width_from_files_is_usable(tmp_path, capsys):
    """A 64-d reference model and 64-d reference features: no backbone gives that width, yet the
    model imports and evaluates, and the feature files train; only extract/export need a backbone."""
    odd = TemporalConfig(feature_dim=64, hidden_dim=16, num_lstm_layers=1, num_attention_heads=2)
    _reference_checkpoint(tmp_path / "r64.pt", odd)
    rc, err = _import(capsys, tmp_path / "r64.pt", "--out", tmp_path / "ck", "--backbone", "resnet50")
    assert rc == 1 and "no backbone vidcls runs gives 64-d features; omit --backbone" in err
    rc, err = _import(capsys, tmp_path / "r64.pt", "--out", tmp_path / "ck")
    assert rc == 0 and "64-d features match no backbone vidcls runs" in err and "pass --backbone" not in err
    _, config, meta = load_model(tmp_path / "ck" / "model_0")
    assert config.backbone == "external" and config.feature_dim == 64 and meta["backbone_weights"] == "imagenet"

    feats = tmp_path / "feats"
    feats.mkdir()
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        _reference_feature_file(feats / f"{split}_features_multiscale.h5", 64, seed=seed)
    assert main(["evaluate", str(feats), str(tmp_path / "ck"), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["ensemble_tta"]["accuracy"] >= 0
    from vidcls.training.features_h5 import read_features

    found = read_features(feats / "train_features_multiscale.h5").config  # the file alone: any width
    assert (found.backbone, found.feature_dim) == ("external", 64)
    small = VidclsConfig.for_backbone("external", 64, temporal=odd)  # a small model: the test is about widths
    small.save(tmp_path / "small.json")
    assert main(["train", str(feats), str(tmp_path / "trained"), "--config", str(tmp_path / "small.json"),
                 "--models", "1", "--epochs", "1", "--no-progress"]) == 0
    assert load_model(tmp_path / "trained" / "model_0")[1].feature_dim == 64
    capsys.readouterr()
    assert main(["export", str(tmp_path / "ck"), str(tmp_path / "repo"), "--target", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "extraction and export need a backbone vidcls can run" in err
    assert not (tmp_path / "repo").exists()


def test_tiny_width_records_weights_export_can_build(tmp_path, capsys):
    _reference_checkpoint(tmp_path / "t.pt", TINY_WIDTH)
    rc, err = _import(capsys, tmp_path / "t.pt", "--out", tmp_path / "a", "--backbone-weights", "imagenet")
    assert rc == 1 and "no ImageNet weights" in err
    rc, _ = _import(capsys, tmp_path / "t.pt", "--out", tmp_path / "a")
    assert rc == 0
    _, config, meta = load_model(tmp_path / "a" / "model_0")
    assert config.backbone == "tiny" and meta["backbone_weights"] == "none"
    build_backbone(config, meta["backbone_weights"])  # what `vidcls export` builds from the record
