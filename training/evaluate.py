"""``vidcls evaluate FEATURES CHECKPOINTS``: standard, TTA and ensemble metrics + confusion PNGs.

For every model: *standard* (the original [L, D] sequence only) and *TTA* (the views of
config.tta_views, each at its own length, softmax averaged over views). Then the ensemble with
TTA: the mean over models of each model's TTA average, exactly as the served ensemble and
:class:`vidcls.reference.ReferencePipeline` compute it. Padding is trimmed with ``num_frames``
before any view is built, so a view never sees zero rows.

Outputs (``--out``, default CHECKPOINTS/eval_{split}): ``metrics.json``, one confusion-matrix
PNG per model and mode plus the ensemble's, and ``predictions.csv`` (ensemble probabilities).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidcls.arguments import existing_dir, existing_path, positive_int
from vidcls.config import VidclsConfig
from vidcls.errors import UsageError
from vidcls.sampling import tta_views
from vidcls.training.features_h5 import FeatureSet, read_features, split_path
from vidcls.training.metrics import classification_metrics


@torch.inference_mode()
def view_probabilities(model, fs: FeatureSet, views: list[str], batch: int = 64, device: str = "cpu") -> np.ndarray:
    """[N, len(views), C] softmax probabilities; each view of each video at its own length.

    Videos with the same valid length are batched together, so no batch needs padding.
    """
    model.eval()
    out = np.zeros((len(fs), len(views), fs.config.num_classes), np.float32)
    lengths = fs.num_frames
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        for s in range(0, len(rows), batch):
            idx = rows[s:s + batch]
            seq = torch.from_numpy(np.ascontiguousarray(fs.features[idx, :n])).to(device)
            per_view = tta_views(seq, views)
            for v_i, v in enumerate(views):
                out[idx, v_i] = torch.softmax(model(per_view[v]), dim=-1).float().cpu().numpy()
    return out


def evaluate(features: FeatureSet, models: list, names: list[str], config: VidclsConfig,
             device: str = "cpu") -> tuple[dict, dict]:
    """(metrics, probabilities) for each model's standard and TTA run and the ensemble."""
    views = list(dict.fromkeys(["original", *config.tta_views]))
    tta_cols = [views.index(v) for v in config.tta_views]
    classes, y = config.classes, features.labels
    metrics: dict = {"models": {}}
    probs: dict = {}
    tta_all = []
    for name, model in zip(names, models):
        p = view_probabilities(model, features, views, device=device)
        standard, tta = p[:, 0], p[:, tta_cols].mean(axis=1)
        tta_all.append(tta)
        probs[f"{name}_standard"], probs[f"{name}_tta"] = standard, tta
        metrics["models"][name] = {
            "standard": classification_metrics(y, standard.argmax(1), classes),
            "tta": classification_metrics(y, tta.argmax(1), classes),
        }
    ensemble = np.mean(tta_all, axis=0)
    probs["ensemble_tta"] = ensemble
    metrics["ensemble_tta"] = classification_metrics(y, ensemble.argmax(1), classes)
    metrics["ensemble_tta"]["num_models"] = len(models)
    return metrics, probs


def plot_confusion(cm, labels, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # keep the rotated y-label inside the image
    plt.close(fig)


def write_outputs(out: Path, metrics: dict, probs: dict, features: FeatureSet, config: VidclsConfig) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    written = [out / "metrics.json"]
    panels = [(f"{n}_{mode}", m[mode]) for n, m in metrics["models"].items() for mode in ("standard", "tta")]
    panels.append(("ensemble_tta", metrics["ensemble_tta"]))
    for key, m in panels:
        path = out / f"confusion_{key.replace('/', '_')}.png"
        plot_confusion(m["confusion_matrix"], config.display_names,
                       f"{key.replace('_', ' ')}: accuracy {m['accuracy']:.1%}, macro F1 {m['f1_macro']:.3f}", path)
        written.append(path)
    ens = probs["ensemble_tta"]
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "true", "predicted", *config.classes])
        for vid, t, p in zip(features.video_ids, features.labels, ens):
            w.writerow([vid, config.classes[int(t)], config.classes[int(p.argmax())], *[f"{x:.6f}" for x in p]])
    written.append(out / "predictions.csv")
    return written


def summary_table(metrics: dict) -> str:
    lines = [f"{'model':<12} {'mode':<9} {'accuracy':>9} {'F1 macro':>9} {'F1 weighted':>12}"]
    for name, m in metrics["models"].items():
        for mode in ("standard", "tta"):
            r = m[mode]
            lines.append(f"{name:<12} {mode:<9} {r['accuracy']:>9.4f} {r['f1_macro']:>9.4f} {r['f1_weighted']:>12.4f}")
    r = metrics["ensemble_tta"]
    lines.append(f"{'ensemble':<12} {'tta':<9} {r['accuracy']:>9.4f} {r['f1_macro']:>9.4f} {r['f1_weighted']:>12.4f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("features", type=existing_path,
                        help="a feature file, or a folder holding {split}_features_multiscale.h5")
    parser.add_argument("checkpoints", type=existing_dir, nargs="+", help="model folders or folders of model_* folders")
    parser.add_argument("--split", default="test", help="split to evaluate when FEATURES is a folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: first CHECKPOINTS/eval_{split})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    from vidcls.checkpoint import find_models, load_ensemble

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.features if args.features.is_file() else split_path(args.features, args.split)
    if not path.is_file():
        raise UsageError(f"no {args.split} feature file {path}: make it with 'vidcls extract' "
                         f"(DATA/{args.split} holds the videos), or choose another --split")
    start = time.perf_counter()
    try:
        dirs = [d for p in args.checkpoints for d in find_models(p)]
    except FileNotFoundError as exc:
        raise UsageError(f"{exc}: give the folder 'vidcls train' wrote") from None
    models, config, metas = load_ensemble(args.checkpoints, args.device)
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):  # model_0 of two ensembles: keep them apart
        names = [f"{d.parent.name}/{d.name}" for d in dirs]
    features = read_features(path, config)
    weights = {m.get("backbone_weights") for m in metas} - {None}
    if weights and features.backbone_weights not in weights:
        print(f"warning: features made with backbone weights {features.backbone_weights!r}, "
              f"models trained on {sorted(weights)}", file=sys.stderr)
    metrics, probs = evaluate(features, models, names, config, args.device)
    metrics.update(split=args.split, features=str(path), checkpoints=[str(c) for c in args.checkpoints])
    out = args.out or Path(args.checkpoints[0]) / f"eval_{args.split}"
    write_outputs(out, metrics, probs, features, config)
    print(summary_table(metrics))
    print(f"{len(features)} videos; results in {out} [{time.perf_counter() - start:.1f} s]")
    return 0
