"""``vidcls import-checkpoint FILE... --out DIR``: reference .pt checkpoints → our checkpoints.

The reference project saved ``torch.save`` dicts: ``model_state_dict``, ``model_config`` (the
TemporalConfig keys), optimizer state, ``metrics`` holding numpy arrays and scalars, ``history``.
Those are pickles, and a full unpickler runs whatever a crafted file tells it to. So they are
read only with PyTorch's restricted unpickler (``torch.load(weights_only=True)``): tensors,
containers, numbers and strings, plus exactly the numpy globals such files need to rebuild
arrays and scalars (:data:`NUMPY_GLOBALS`). Anything else in a file (a class, a function to
call) is refused before it is built, so importing a file never runs code from it, whatever the
flags or the ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` environment variable say.

The result is a safetensors + JSON checkpoint (vidcls.checkpoint) that loads without pickle.
Several files are imported all or nothing: each is converted into a staging folder inside
``--out`` and the ``model_i`` folders appear only when every file has converted.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidcls.arguments import config_file, existing_file
from vidcls.backbones import BACKBONES
from vidcls.config import (BACKBONE_DIMS, EXTERNAL_BACKBONE, TemporalConfig, VidclsConfig, backbones_for_width,
                           default_backbone_weights)

log = logging.getLogger(__name__)

# What numpy needs to rebuild the arrays (``_reconstruct`` + ``ndarray`` + ``dtype``) and scalars
# (``scalar`` + ``dtype``) in a reference checkpoint's metrics, under the names numpy 1.x and 2.x
# write into pickles. Each rebuilds plain numeric data from bytes and calls nothing else.
NUMPY_GLOBALS: tuple[tuple[str, str], ...] = (
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
)
# Rebuilding a dtype sets its state, which the restricted unpickler allows only on allow-listed
# types: the dtypes of plain data (numbers, booleans, text). Object arrays stay refused.
NUMPY_DTYPES: tuple[str, ...] = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "str", "bytes",
)


class CheckpointImportError(ValueError):
    """A file that cannot be imported; the message is one line naming the file and the reason."""


def _numpy_safe_globals() -> list[tuple[Any, str]]:
    """(object, pickled name) pairs for ``torch.serialization.safe_globals``. The objects are taken
    from this numpy; the names are the ones written by whichever numpy saved the file."""
    try:
        from numpy._core import multiarray  # numpy 2's home of it; numpy 1.26 aliases numpy.core's
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray
    objects = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
               "ndarray": np.ndarray, "dtype": np.dtype}
    dtype_types = sorted({type(np.dtype(name)) for name in NUMPY_DTYPES}, key=lambda t: t.__name__)
    return [(objects[name], f"{module}.{name}") for module, name in NUMPY_GLOBALS] + dtype_types


def read_reference(file: str | Path) -> dict:
    """The dict a reference ``torch.save`` wrote, read with the restricted unpickler.

    Raises :class:`CheckpointImportError` (one line) for empty, truncated, damaged, non-checkpoint
    and refused files, and for files holding anything but a dict.
    """
    import torch

    file = Path(file)
    if not file.is_file():
        raise CheckpointImportError(f"{file}: no such file")
    if file.stat().st_size == 0:
        raise CheckpointImportError(f"{file}: the file is empty")
    with open(file, "rb") as f:
        head = f.read(16)
    is_zip = zipfile.is_zipfile(file)
    if head[:4] == b"PK\x03\x04" and not is_zip:
        raise CheckpointImportError(f"{file}: truncated or damaged: a zip archive without its end (central directory)")
    if is_zip:
        _check_archive(file)
    elif head[:1] != b"\x80":  # torch.save writes a zip or (its older format) a protocol-2 pickle
        if len(head) >= 9 and head[8:9] == b"{":
            raise CheckpointImportError(f"{file}: a safetensors file, not a reference checkpoint (our own "
                                        "checkpoints are folders that evaluate and export read as they are)")
        raise CheckpointImportError(f"{file}: not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever torch raises becomes one line naming the file
        raise CheckpointImportError(f"{file}: {_load_failure(file, exc)}") from None
    if not isinstance(blob, dict):
        raise CheckpointImportError(f"{file}: holds a {type(blob).__name__}, not a checkpoint dict")
    return blob


def _check_archive(file: Path) -> None:
    """torch.save's zip format stores a CRC-32 of every record, but torch.load does not check them:
    a flipped bit in a tensor would load as a wrong weight. Check them all first (~1 GB/s). (The
    older non-zip format carries no checksums.)"""
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointImportError(f"{file}: damaged checkpoint archive ({_first_sentence(str(exc))})") from None
    if bad is not None:
        raise CheckpointImportError(f"{file}: damaged: the record {bad} fails its checksum")


def _first_sentence(text: str) -> str:
    return text.strip().splitlines()[0].split(". ")[0][:200] if text.strip() else ""


def _load_failure(file: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line, without torch's advice to load with weights_only=False."""
    text = str(exc)
    refused = re.search(r"GLOBAL ([\w.]+)", text)  # torch names what the file asked for
    if refused:
        return (f"refused: it asks to build {refused.group(1)}, which no checkpoint holds (unpickling it would "
                "run code); nothing from the file was run")
    if "weights_only" in text.lower() or "unpickl" in type(exc).__name__.lower():
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("Unsupported", "Unpickler error", "Trying", "Can only"))),
                      lines[-1] if lines else type(exc).__name__)
        return f"refused by the restricted unpickler: {detail[:200]}"
    if zipfile.is_zipfile(file) or "zip archive" in text or "PytorchStreamReader" in text:
        return f"damaged or truncated checkpoint archive ({_first_sentence(text) or type(exc).__name__})"
    if isinstance(exc, EOFError) or "unexpected EOF" in text:
        return f"truncated: the data ends early ({_first_sentence(text) or 'EOF'})"
    first = _first_sentence(text)
    return f"not a readable PyTorch checkpoint ({type(exc).__name__}{': ' + first if first else ''})"


def config_for(model_config: dict[str, Any], backbone: str | None = None,
               base: VidclsConfig | None = None, source: str = "the checkpoint") -> VidclsConfig:
    """A VidclsConfig for a reference model_config. The backbone is ``backbone`` when given (its
    width must match), else the preferred backbone of the model's feature width (1280 →
    efficientnet_v2_s, 2048 → resnet50, 128 → tiny), else :data:`EXTERNAL_BACKBONE` (features of
    that width come from files: training and evaluation work, extraction and export do not).
    :func:`backbone_note` says which choice was made when it was not given."""
    known = {f.name for f in dataclasses.fields(TemporalConfig)}
    try:
        temporal = TemporalConfig(**{k: v for k, v in model_config.items() if k in known})
        width = int(temporal.feature_dim)
    except (TypeError, ValueError) as exc:
        raise CheckpointImportError(f"{source}: model_config is not a model description ({exc})") from None
    candidates = backbones_for_width(width)
    if backbone is None:
        backbone = candidates[0] if candidates else EXTERNAL_BACKBONE
    elif backbone != EXTERNAL_BACKBONE and BACKBONE_DIMS[backbone] != width:
        hint = (f"pass --backbone {' or '.join(candidates)}, or omit --backbone" if candidates else
                f"no backbone vidcls runs gives {width}-d features; omit --backbone to import it for "
                f"features read from files")
        raise CheckpointImportError(f"{source}: backbone {backbone} gives {BACKBONE_DIMS[backbone]}-d features, "
                                    f"the model expects {width}-d ({hint})")
    data = (base or VidclsConfig()).to_dict()
    data.update(backbone=backbone, temporal=dataclasses.asdict(temporal))
    try:
        return VidclsConfig.from_dict(data)
    except ValueError as exc:  # e.g. num_classes against the --config file's classes
        raise CheckpointImportError(f"{source}: {exc}") from None


def backbone_note(config: VidclsConfig, given: str | None) -> tuple[int, str] | None:
    """(log level, text) saying which backbone an import assumed, when the user named none and the
    width leaves a choice (1280-d, 2048-d) or matches no backbone vidcls runs; else None."""
    if given is not None:
        return None
    width, candidates = config.feature_dim, backbones_for_width(config.feature_dim)
    if len(candidates) > 1:
        return logging.INFO, (f"{width}-d features: assumed the {config.backbone} backbone ({' or '.join(candidates[1:])} "
                              "gives the same width: pass --backbone if it made the features)")
    if not candidates:
        return logging.WARNING, (f"{width}-d features match no backbone vidcls runs ({_widths()}): imported as "
                                 f"backbone {EXTERNAL_BACKBONE!r}; train and evaluate on feature files of that "
                                 "width, but extract and export need one of those backbones")
    return None


def _widths() -> str:
    by_width: dict[int, list[str]] = {}
    for name, dim in BACKBONE_DIMS.items():
        by_width.setdefault(dim, []).append(name)
    return ", ".join(f"{dim}-d {'/'.join(names)}" for dim, names in sorted(by_width.items()))


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


def import_checkpoint(file: str | Path, out_dir: str | Path, backbone: str | None = None,
                      backbone_weights: str | None = None, base: VidclsConfig | None = None) -> Path:
    """Convert one reference checkpoint into the model folder ``out_dir``; returns it.

    ``backbone_weights`` is recorded for extraction and export (default: ``none`` for the tiny
    CNN, ``imagenet`` otherwise). Raises :class:`CheckpointImportError` with a one-line reason.
    """
    path, note = _convert(file, out_dir, backbone, backbone_weights, base)
    if note:
        log.log(note[0], "%s: %s", file, note[1])
    return path


def _convert(file, out_dir, backbone, backbone_weights, base) -> tuple[Path, tuple[int, str] | None]:
    import torch

    from vidcls.checkpoint import save_model
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    file = Path(file)
    blob = read_reference(file)
    state = blob.get("model_state_dict")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        keys = ", ".join(sorted(map(str, blob))[:6]) or "none"
        raise CheckpointImportError(f"{file}: not a reference checkpoint: no model_state_dict of tensors "
                                    f"(keys: {keys})")
    model_config = blob.get("model_config") or _infer_model_config(state, file)
    if not isinstance(model_config, dict):
        raise CheckpointImportError(f"{file}: model_config is a {type(model_config).__name__}, not a dict")
    config = config_for(model_config, backbone, base, source=str(file))
    weights = backbone_weights or default_backbone_weights(config.backbone)
    if weights == "imagenet" and config.backbone in BACKBONES and not BACKBONES[config.backbone].pretrained:
        raise CheckpointImportError(f"{file}: the {config.backbone} backbone has no ImageNet weights: pass "
                                    "--backbone-weights none or a weights file")
    try:
        model = SuperEnhancedTemporalModel(config.temporal)
        model.load_state_dict(state)  # strict: every reference parameter name and shape must match ours
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        raise CheckpointImportError(f"{file}: the weights do not fit the temporal model: {_fit_problem(exc)}") from None
    meta = {"imported_from": file.name, "sha256": _sha256(file), "backbone_weights": weights,
            "seed": plain(blob.get("seed")), "epoch": plain(blob.get("epoch"))}
    metrics = {"reference_metrics": plain(blob.get("metrics", {})), "history": plain(blob.get("history", {}))}
    return save_model(out_dir, model, config, meta=meta, metrics=metrics), backbone_note(config, backbone)


def import_checkpoints(files: Sequence[str | Path], out: str | Path, backbone: str | None = None,
                       backbone_weights: str | None = None, base: VidclsConfig | None = None) -> list[Path]:
    """Import ``files`` as ``out/model_0``, ``out/model_1``, ... (in order), all or nothing.

    ``out`` must not hold model folders already (an ensemble mixing two imports would load as one).
    On any failure nothing is left in ``out`` (nor ``out`` itself, when this call created it).
    """
    out = Path(out)
    existing = sorted(p.name for p in out.glob("model_*")) if out.is_dir() else []
    if existing:
        raise CheckpointImportError(f"{out} already holds {', '.join(existing[:4])}: import into an empty folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out))
    try:
        notes = [_convert(file, staging / f"model_{i}", backbone, backbone_weights, base)[1]
                 for i, file in enumerate(files)]
        targets = []
        for i, (file, note) in enumerate(zip(files, notes)):
            target = out / f"model_{i}"
            os.replace(staging / f"model_{i}", target)
            targets.append(target)
            log.info("%s → %s", file, target)
            if note:  # said once everything converted: a failed import prints only its error
                log.log(note[0], "%s: %s", file, note[1])
        return targets
    except BaseException:
        for i in range(len(files)):  # a failure while moving into place: take back what moved
            if (out / f"model_{i}").exists() and not (staging / f"model_{i}").exists():
                shutil.rmtree(out / f"model_{i}", ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def _fit_problem(exc: Exception) -> str:
    """load_state_dict's multi-line report → counts and a few names."""
    text = str(exc)
    missing = re.search(r"Missing key\(s\) in state_dict: (.*?)\.\s*(?:Unexpected|size mismatch|$)", text, re.S)
    unexpected = re.search(r"Unexpected key\(s\) in state_dict: (.*?)\.\s*(?:size mismatch|$)", text, re.S)
    size = re.search(r"size mismatch for ([\w.]+): (.*?)\.\s*$", text, re.M)
    parts = []
    for label, match in (("missing", missing), ("unexpected", unexpected)):
        if match:
            names = re.findall(r'"([^"]+)"', match.group(1))
            parts.append(f"{len(names)} {label} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    if size:
        parts.append(f"size mismatch for {size.group(1)}: {size.group(2)}")
    return "; ".join(parts) if parts else " ".join(text.split())[:200]


def _infer_model_config(state: dict, file: Path) -> dict:
    """Shapes → TemporalConfig keys, for checkpoints saved without model_config (heads and
    dropout cannot be read from shapes: the defaults are assumed)."""
    needed = ("input_projection.0.weight", "attention.in_proj_weight", "classifier.12.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise CheckpointImportError(f"{file}: no model_config, and the weights are not a temporal model's "
                                    f"(no {', '.join(absent)})")
    d_in = state["input_projection.0.weight"].shape[1]
    hidden = state["input_projection.0.weight"].shape[0]
    layers = len({k.split("_l")[1].split("_")[0] for k in state if k.startswith("lstm.weight_ih_l")})
    heads = TemporalConfig().num_attention_heads
    if state["attention.in_proj_weight"].shape[1] % heads:
        raise CheckpointImportError(f"{file}: no model_config, and the attention width is not divisible by the "
                                    f"default {heads} heads: the head count cannot be recovered")
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
    parser.add_argument("--out", type=Path, required=True,
                        help="an empty (or new) output folder: model_0, model_1, ... in FILE order")
    # Accepted so that older scripts keep working: files are never fully unpickled any more.
    parser.add_argument("--trust-pickle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", choices=sorted(BACKBONE_DIMS) + [EXTERNAL_BACKBONE], default=None,
                        help="backbone the features came from (default: inferred from the feature width; 1280-d "
                             "is efficientnet_v2_s or _m, 2048-d resnet50 or resnet101; a width no backbone gives "
                             f"is {EXTERNAL_BACKBONE!r}: features from files only)")
    parser.add_argument("--backbone-weights", default=None,
                        help="recorded for extraction and export (default: none for tiny, else imagenet)")
    parser.add_argument("--config", type=config_file, default=None, help="a VidclsConfig JSON for the other settings (default: the production defaults)")


def run(args: argparse.Namespace) -> int:
    if args.trust_pickle:
        print("note: --trust-pickle is no longer needed and changes nothing: checkpoints are read with a "
              "restricted unpickler that runs no code from the file", file=sys.stderr)
    try:
        base = VidclsConfig.load(args.config) if args.config else None
    except (OSError, ValueError) as exc:
        print(f"error: --config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        targets = import_checkpoints(args.files, args.out, args.backbone, args.backbone_weights, base)
    except (CheckpointImportError, OSError) as exc:  # OSError: --out not writable, a full disk, ...
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return 1
    print(f"{len(targets)} checkpoint(s) in {args.out}")
    return 0
