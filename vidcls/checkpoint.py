"""Our checkpoints: safetensors weights + JSON config + JSON metrics. Never a pickle.

Layout of one model::

    model_3/model.safetensors   the SuperEnhancedTemporalModel state dict
    model_3/config.json         {"vidcls": VidclsConfig, "model_config": temporal keys, "seed": 45,
                                 "backbone_weights": "none" | "imagenet" | "<file>", ...}
    model_3/metrics.json        training metrics (written by training)

An ensemble is a folder holding ``model_*`` folders. Everything here needs torch + safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from vidcls.config import VidclsConfig
from vidcls.models.temporal import SuperEnhancedTemporalModel, config_dict

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"


def save_model(directory: str | Path, model: SuperEnhancedTemporalModel, config: VidclsConfig,
               meta: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Write then rename, so a crash never leaves a half-written checkpoint behind.
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS)
    body = {"vidcls": config.to_dict(), "model_config": config_dict(model.config), **(meta or {})}
    _write_json(directory / CONFIG, body)
    if metrics is not None:
        _write_json(directory / METRICS, metrics)
    return directory


def load_model(directory: str | Path, device: str = "cpu") -> tuple[SuperEnhancedTemporalModel, VidclsConfig, dict]:
    """(model in eval mode, its VidclsConfig, the whole config.json) from a model folder."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / CONFIG).read_text())
    config = VidclsConfig.from_dict(meta["vidcls"])
    model = SuperEnhancedTemporalModel(config.temporal)
    model.load_state_dict(load_file(str(directory / WEIGHTS), device="cpu"))
    return model.to(device).eval(), config, meta


def find_models(path: str | Path) -> list[Path]:
    """Model folders under ``path``: the folder itself if it is one, else its ``model_*`` children."""
    path = Path(path)
    if (path / WEIGHTS).exists():
        return [path]
    found = sorted((p for p in path.glob("model_*") if (p / WEIGHTS).exists()),
                   key=lambda p: (len(p.name), p.name))
    if not found:
        raise FileNotFoundError(f"no checkpoints ({WEIGHTS}) in {path} or its model_* folders")
    return found


def load_ensemble(paths, device: str = "cpu") -> tuple[list[SuperEnhancedTemporalModel], VidclsConfig, list[dict]]:
    """Every model under ``paths`` (folders or model folders); they must share one config."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    dirs = [d for p in paths for d in find_models(p)]
    loaded = [load_model(d, device) for d in dirs]
    configs = {json.dumps(_shape_keys(c), sort_keys=True) for _, c, _ in loaded}
    if len(configs) > 1:
        raise ValueError("the checkpoints disagree on backbone, frames, size or model shape")
    return [m for m, _, _ in loaded], loaded[0][1], [meta for _, _, meta in loaded]


def _shape_keys(config: VidclsConfig) -> dict:
    d = config.to_dict()
    return {k: d[k] for k in ("classes", "num_frames", "frame_size", "backbone", "scales", "temporal", "mean", "std")}


def _write_json(path: Path, body: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
