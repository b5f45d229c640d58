"""``vidcls import-checkpoint FILE... --out DIR --trust-pickle``: reference .pt → our checkpoints.

The reference project saved ``torch.save`` dicts: ``model_state_dict``, ``model_config`` (the
TemporalConfig keys), optimizer state, ``metrics`` holding numpy arrays, ``history``. Loading
them needs full unpickling (``weights_only=False``), which can run arbitrary code from the file;
so this command refuses unless ``--trust-pickle`` says the files come from a trusted source.
The result is a safetensors + JSON checkpoint (vidcls.checkpoint) that loads without pickle.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vidcls.arguments import config_file, existing_file
from vidcls.config import BACKBONE_DIMS, TemporalConfig, VidclsConfig

REFUSAL = ("refusing to load {file}: reference checkpoints are Python pickles, and unpickling runs "
           "whatever code the file contains. Import only files from a source you trust, and say so "
           "with --trust-pickle. (Our own checkpoints are safetensors + JSON and never need this.)")


def config_for(model_config: dict[str, Any], backbone: str | None = None,
               base: VidclsConfig | None = None) -> VidclsConfig:
    """A VidclsConfig for a reference model_config; the backbone comes from ``backbone`` or,
    failing that, the first backbone with the model's feature_dim (1280 → efficientnet_v2_s,
    2048 → resnet50: pass --backbone resnet101 when that is what made the features)."""
    known = {f.name for f in dataclasses.fields(TemporalConfig)}
    temporal = TemporalConfig(**{k: v for k, v in model_config.items() if k in known})
    if backbone is None:
        matches = [name for name, dim in BACKBONE_DIMS.items() if dim == temporal.feature_dim]
        if not matches:
            raise ValueError(f"no backbone gives {temporal.feature_dim}-d features; pass --backbone")
        backbone = matches[0]
    if BACKBONE_DIMS[backbone] != temporal.feature_dim:
        raise ValueError(f"backbone {backbone} gives {BACKBONE_DIMS[backbone]}-d features, "
                         f"the checkpoint expects {temporal.feature_dim}")
    base = base or VidclsConfig()
    data = base.to_dict()
    data.update(backbone=backbone, temporal=dataclasses.asdict(temporal))
    return VidclsConfig.from_dict(data)


def plain(value: Any) -> Any:
    """numpy/torch values inside the reference's metrics/history → JSON-able values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def import_checkpoint(file: str | Path, out_dir: str | Path, trust_pickle: bool = False,
                      backbone: str | None = None, backbone_weights: str = "imagenet",
                      base: VidclsConfig | None = None) -> Path:
    """Convert one reference checkpoint into ``out_dir`` (a model folder). Returns out_dir."""
    import torch

    from vidcls.checkpoint import save_model
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    file = Path(file)
    if not trust_pickle:
        raise PermissionError(REFUSAL.format(file=file))
    blob = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "model_state_dict" not in blob:
        raise ValueError(f"{file} is not a reference checkpoint (no model_state_dict)")
    state = blob["model_state_dict"]
    model_config = blob.get("model_config") or _infer_model_config(state)
    config = config_for(model_config, backbone, base)
    model = SuperEnhancedTemporalModel(config.temporal)
    model.load_state_dict(state)  # strict: every reference parameter name must match ours
    meta = {"imported_from": file.name, "sha256": _sha256(file), "backbone_weights": backbone_weights,
            "seed": blob.get("seed"), "epoch": plain(blob.get("epoch"))}
    metrics = {"reference_metrics": plain(blob.get("metrics", {})), "history": plain(blob.get("history", {}))}
    return save_model(out_dir, model, config, meta=meta, metrics=metrics)


def _infer_model_config(state: dict) -> dict:
    """Shapes → TemporalConfig keys, for checkpoints saved without model_config (heads and
    dropout cannot be read from shapes: the defaults are assumed)."""
    d_in = state["input_projection.0.weight"].shape[1]
    hidden = state["input_projection.0.weight"].shape[0]
    layers = len({k.split("_l")[1].split("_")[0] for k in state if k.startswith("lstm.weight_ih_l")})
    heads = TemporalConfig().num_attention_heads
    if state["attention.in_proj_weight"].shape[1] % heads:
        raise ValueError("the checkpoint has no model_config and its attention width is not divisible by "
                         f"the default {heads} heads: the head count cannot be recovered")
    return {"feature_dim": int(d_in), "hidden_dim": int(hidden), "num_lstm_layers": layers,
            "num_classes": int(state["classifier.12.weight"].shape[0]),
            "bidirectional": any("reverse" in k for k in state if k.startswith("lstm."))}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=existing_file, nargs="+", help="reference .pt checkpoints")
    parser.add_argument("--out", type=Path, required=True, help="output folder: model_0, model_1, ... (in FILE order)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="required: confirms the files come from a trusted source (they are unpickled)")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_DIMS), default=None,
                        help="backbone the features came from (default: inferred from feature_dim; "
                             "2048-d is ambiguous between resnet50 and resnet101)")
    parser.add_argument("--backbone-weights", default="imagenet", help="recorded in the checkpoint for extraction/export")
    parser.add_argument("--config", type=config_file, default=None,
                        help="a VidclsConfig JSON for the other settings (default: the default preset's)")


def run(args: argparse.Namespace) -> int:
    if not args.trust_pickle:
        print(REFUSAL.format(file=", ".join(map(str, args.files))), file=sys.stderr)
        return 2
    base = VidclsConfig.load(args.config) if args.config else None
    for i, file in enumerate(args.files):
        target = args.out / f"model_{i}"
        import_checkpoint(file, target, True, args.backbone, args.backbone_weights, base)
        print(f"{file} → {target}")
    return 0
