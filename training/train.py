"""``vidcls train FEATURES OUT``: Stage 2, one temporal model or an ensemble, on feature files.

The defaults are the reference recipe (docs/design.md): AdamW, CosineAnnealingWarmRestarts stepped
per batch, focal loss (gamma 2, label smoothing 0.1, per-class alpha), class-balanced sampling,
gradient clipping, three sequence augmentations, early stopping on validation accuracy and the
best checkpoint by validation accuracy. Deviations are opt-in flags.

Resumable and deterministic: at the end of every epoch the complete training state (model,
optimizer, scheduler, every RNG, sampler and augmentation generators, epoch, best metrics,
early-stopping counter, history) is written as safetensors + JSON (nothing is unpickled on
resume). Re-running the same command continues where it stopped, and the result is bit-identical
to an uninterrupted run. A finished model is skipped; raising ``--epochs`` continues it.

Layout: ``OUT/model_{i}/`` holds the best checkpoint (vidcls.checkpoint format), ``log.csv`` and
``train_state/``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidcls.arguments import config_file, existing_file, existing_path, positive_int
from vidcls.config import TrainConfig, VidclsConfig
from vidcls.errors import UsageError
from vidcls.models.temporal import SuperEnhancedTemporalModel
from vidcls.training.features_h5 import FeatureSet, read_features, split_path
from vidcls.training.metrics import classification_metrics

log = logging.getLogger(__name__)

STATE_DIR = "train_state"


# ---- data ---------------------------------------------------------------------------------
@dataclass
class SequenceData:
    features: torch.Tensor  # float32 [N, L, D], zero-padded
    lengths: torch.Tensor  # int64 [N]
    labels: torch.Tensor  # int64 [N]

    @classmethod
    def from_set(cls, fs: FeatureSet) -> "SequenceData":
        return cls(torch.from_numpy(np.ascontiguousarray(fs.features)),
                   torch.from_numpy(fs.num_frames.astype(np.int64)), torch.from_numpy(fs.labels))

    def __len__(self) -> int:
        return len(self.labels)


def augment(seq: torch.Tensor, tc: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """The reference's three augmentations on the valid rows of one sequence [n, D]."""
    n = seq.shape[0]
    if _coin(gen) < tc.aug_subsample_p and n > tc.aug_subsample_min_rows:
        frac = tc.aug_subsample_min_frac + (1 - tc.aug_subsample_min_frac) * _coin(gen)
        keep = min(n, max(tc.aug_subsample_min_rows, int(n * frac)))
        rows = torch.randperm(n, generator=gen)[:keep].sort().values  # ordered: time still flows forward
        seq = seq[rows]
    if _coin(gen) < tc.aug_roll_p:
        shift = int(torch.randint(-tc.aug_roll_max, tc.aug_roll_max + 1, (1,), generator=gen))
        seq = torch.roll(seq, shift, dims=0)
    if _coin(gen) < tc.aug_noise_p:
        seq = seq + torch.randn(seq.shape, generator=gen) * tc.aug_noise_sigma
    return seq


def _coin(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def make_batch(data: SequenceData, idx: list[int], tc: TrainConfig, gen: torch.Generator | None):
    """Stack (augmented) sequences, zero-padded to the file's max length → (x, lengths, labels)."""
    seqs = [data.features[i, : int(data.lengths[i])] for i in idx]
    if gen is not None:
        seqs = [augment(s, tc, gen) for s in seqs]
    x = torch.zeros(len(idx), data.features.shape[1], data.features.shape[2])
    for j, s in enumerate(seqs):
        x[j, : len(s)] = s
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    return x, lengths, data.labels[idx]


# ---- recipe pieces ------------------------------------------------------------------------
def class_alpha(labels: torch.Tensor, num_classes: int, tc: TrainConfig) -> torch.Tensor:
    """Per-class focal alpha = total / (C * count), clamped; a missing class gets the maximum."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    alpha = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)),
                        torch.tensor(tc.alpha_max, dtype=torch.float64))
    return alpha.clamp(tc.alpha_min, tc.alpha_max).float()


def focal_loss(logits, targets, alpha, gamma: float, smoothing: float) -> torch.Tensor:
    ce = F.cross_entropy(logits, targets, reduction="none", label_smoothing=smoothing)
    pt = torch.exp(-ce)
    return (alpha[targets] * (1 - pt) ** gamma * ce).mean()


def epoch_order(labels: torch.Tensor, num_classes: int, balanced: bool, gen: torch.Generator) -> list[int]:
    """One epoch of sample indices: class-balanced draws with replacement, or a shuffle."""
    if not balanced:
        return torch.randperm(len(labels), generator=gen).tolist()
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = 1.0 / counts[labels]
    sampler = torch.utils.data.WeightedRandomSampler(weights, len(labels), replacement=True, generator=gen)
    return list(sampler)


def build_optimizer(model, tc: TrainConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=tc.cosine_t0, T_mult=tc.cosine_t_mult, eta_min=tc.cosine_eta_min)
    return opt, sched


@torch.no_grad()
def predict_logits(model, data: SequenceData, batch: int, mask: bool) -> torch.Tensor:
    model.eval()
    out = []
    for s in range(0, len(data), batch):
        x, lengths = data.features[s:s + batch], data.lengths[s:s + batch]
        out.append(model(x, lengths if mask else None))
    return torch.cat(out) if out else torch.zeros(0, model.config.num_classes)


# ---- training state (safetensors + JSON, never a pickle) ----------------------------------
@dataclass
class Progress:
    epoch: int = 0  # completed epochs
    best_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best, for early stopping
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)


class Trainer:
    """Trains one model of the ensemble into ``directory``; resumes from its saved state."""

    def __init__(self, directory: Path, config: VidclsConfig, seed: int, train: SequenceData,
                 val: SequenceData, meta: dict, progress: bool = True):
        self.dir, self.config, self.seed = Path(directory), config, seed
        self.tc = config.train
        self.train_data, self.val_data, self.meta, self.show = train, val, meta, progress
        torch.manual_seed(seed)  # model init and dropout
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.model = SuperEnhancedTemporalModel(config.temporal)
        self.opt, self.sched = build_optimizer(self.model, self.tc)
        self.sampler_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator().manual_seed(seed + 1_000_003)
        self.alpha = class_alpha(train.labels, config.num_classes, self.tc)
        self.state = Progress()

    # ---- one epoch -------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, float]:
        tc, data = self.tc, self.train_data
        self.model.train()
        order = epoch_order(data.labels, self.config.num_classes, tc.balanced_sampler, self.sampler_gen)
        total_loss, correct = 0.0, 0
        for s in range(0, len(order), tc.batch_size):
            idx = order[s:s + tc.batch_size]
            x, lengths, y = make_batch(data, idx, tc, self.aug_gen)
            logits = self.model(x, lengths if tc.mask_padding else None)
            loss = focal_loss(logits, y, self.alpha, tc.focal_gamma, tc.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.opt.step()
            if tc.scheduler_step == "batch":
                self.sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        if tc.scheduler_step == "epoch":
            self.sched.step()
        return total_loss / len(order), correct / len(order)

    def validate(self) -> dict:
        logits = predict_logits(self.model, self.val_data, self.tc.batch_size, self.tc.mask_padding)
        y = self.val_data.labels
        loss = focal_loss(logits, y, self.alpha, self.tc.focal_gamma, self.tc.label_smoothing)
        m = classification_metrics(y.numpy(), logits.argmax(1).numpy(), self.config.classes)
        return {"val_loss": float(loss), "val_accuracy": m["accuracy"], "val_f1_macro": m["f1_macro"]}

    # ---- the loop --------------------------------------------------------------------------
    def fit(self) -> Progress:
        from tqdm import tqdm

        self.load_state()
        st, tc = self.state, self.tc
        if st.stopped_early or st.epoch >= tc.epochs:
            return st
        bar = tqdm(total=tc.epochs, initial=st.epoch, desc=self.dir.name, unit="epoch",
                   disable=not self.show, file=sys.stderr)
        while st.epoch < tc.epochs and not st.stopped_early:
            start = time.perf_counter()
            train_loss, train_acc = self.train_epoch()
            row = {"epoch": st.epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                   **self.validate(), "lr": self.opt.param_groups[0]["lr"]}
            st.epoch += 1
            if row["val_accuracy"] > st.best_acc:
                st.best_acc, st.best_epoch, st.bad_epochs = row["val_accuracy"], st.epoch, 0
                self.save_best(row)
            else:
                st.bad_epochs += 1
                st.stopped_early = st.bad_epochs >= tc.patience
            row["seconds"] = round(time.perf_counter() - start, 3)
            st.history.append(row)
            self.save_state()
            self.write_log()
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{row['val_accuracy']:.3f}",
                            best=f"{st.best_acc:.3f}")
        bar.close()
        self.write_summary()
        return st

    # ---- outputs ---------------------------------------------------------------------------
    def save_best(self, row: dict) -> None:
        from vidcls.checkpoint import save_model

        meta = {**self.meta, "seed": self.seed, "epoch": self.state.epoch}
        save_model(self.dir, self.model, self.config, meta=meta, metrics={"best": row})

    def write_log(self) -> None:
        """log.csv rewritten from the saved history, so a resumed run never duplicates rows."""
        rows = self.state.history
        tmp = self.dir / "log.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.dir / "log.csv")

    def write_summary(self) -> None:
        st = self.state
        best = next((r for r in st.history if r["epoch"] == st.best_epoch), {})
        body = {"best": best, "best_epoch": st.best_epoch, "epochs_run": st.epoch,
                "stopped_early": st.stopped_early, "seed": self.seed, "history": st.history}
        tmp = self.dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.dir / "metrics.json")

    # ---- state -----------------------------------------------------------------------------
    def _state_paths(self, epoch: int) -> tuple[Path, Path]:
        d = self.dir / STATE_DIR
        return d / f"epoch_{epoch:04d}.safetensors", d / f"epoch_{epoch:04d}.json"

    def save_state(self) -> None:
        """Tensors first, then the JSON (the commit marker); then drop older epochs."""
        from safetensors.torch import save_file

        st = self.state
        tensors, opt_json = _optimizer_tensors(self.opt)
        tensors.update({f"model.{k}": v.detach().clone().contiguous() for k, v in self.model.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.sampler"] = self.sampler_gen.get_state()
        tensors["rng.aug"] = self.aug_gen.get_state()
        np_state = np.random.get_state()
        body = {
            "epoch": st.epoch, "best_acc": st.best_acc, "best_epoch": st.best_epoch,
            "bad_epochs": st.bad_epochs, "stopped_early": st.stopped_early, "history": st.history,
            "optimizer": opt_json, "scheduler": self.sched.state_dict(),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "rng_python": _py_state_json(random.getstate()),
            "seed": self.seed, "config": _resume_identity(self.config),
        }
        tensor_path, json_path = self._state_paths(st.epoch)
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tensor_path) + ".tmp")
        Path(str(tensor_path) + ".tmp").replace(tensor_path)
        json_path.with_suffix(".json.tmp").write_text(json.dumps(body))
        json_path.with_suffix(".json.tmp").replace(json_path)
        for old in tensor_path.parent.glob("epoch_*"):
            if old not in (tensor_path, json_path):
                old.unlink()

    def load_state(self) -> bool:
        from safetensors.torch import load_file

        d = self.dir / STATE_DIR
        marks = sorted(d.glob("epoch_*.json")) if d.is_dir() else []
        marks = [m for m in marks if m.with_suffix(".safetensors").exists()]
        if not marks:
            return False
        body = json.loads(marks[-1].read_text())
        if body["config"] != _resume_identity(self.config) or body["seed"] != self.seed:
            raise SystemExit(f"{self.dir} holds a run with other settings; use another OUT folder or delete it")
        tensors = load_file(str(marks[-1].with_suffix(".safetensors")))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizer(self.opt, tensors, body["optimizer"])
        self.sched.load_state_dict(body["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        self.sampler_gen.set_state(tensors["rng.sampler"])
        self.aug_gen.set_state(tensors["rng.aug"])
        np_state = body["rng_numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
        random.setstate(_py_state_from_json(body["rng_python"]))
        self.state = Progress(body["epoch"], body["best_acc"], body["best_epoch"], body["bad_epochs"],
                              body["stopped_early"], body["history"])
        return True


def _optimizer_tensors(opt) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().clone().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _load_optimizer(opt, tensors: dict, body: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in body["plain"].items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": body["param_groups"]})


def _py_state_json(state) -> list:
    return [state[0], list(state[1]), state[2]]


def _py_state_from_json(data) -> tuple:
    return (data[0], tuple(data[1]), data[2])


def _resume_identity(config: VidclsConfig) -> dict:
    """What must not change between a run and its resume (epochs may grow)."""
    d = config.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k != "epochs"}
    d.pop("num_models", None)
    return json.loads(json.dumps(d))


# ---- driver -------------------------------------------------------------------------------
def apply_overrides(config: VidclsConfig, **train_overrides) -> VidclsConfig:
    changes = {k: v for k, v in train_overrides.items() if v is not None}
    return config.replace(train=dataclasses.replace(config.train, **changes)) if changes else config


def train_ensemble(train_file: Path, val_file: Path, out_dir: Path, config: VidclsConfig | None = None,
                   models: int | None = None, progress: bool = True, **train_overrides) -> list[Path]:
    """Train ``models`` models (seeds config.seed + i) into out_dir/model_i; returns their folders."""
    train_set = read_features(train_file, config)
    config = apply_overrides(config or train_set.config, **train_overrides)
    val_set = read_features(val_file, config)
    models = models or config.num_models
    config = config.replace(num_models=models)
    train, val = SequenceData.from_set(train_set), SequenceData.from_set(val_set)
    meta = {"backbone_weights": train_set.backbone_weights, "features": str(Path(train_file).resolve()),
            "val_features": str(Path(val_file).resolve())}
    dirs = []
    for i in range(models):
        directory = Path(out_dir) / f"model_{i}"
        directory.mkdir(parents=True, exist_ok=True)
        state = Trainer(directory, config, config.seed + i, train, val, meta, progress).fit()
        log.info("model_%d: best val accuracy %.4f at epoch %d (%d epochs%s)", i, state.best_acc,
                 state.best_epoch, state.epoch, ", early stop" if state.stopped_early else "")
        dirs.append(directory)
    return dirs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("features", type=existing_path,
                        help="folder with train/val_features_multiscale.h5 from vidcls extract (or use --train/--val)")
    parser.add_argument("out", type=Path, help="output folder: model_0 .. model_{K-1}")
    parser.add_argument("--train", dest="train_file", type=existing_file, default=None, help="training feature file")
    parser.add_argument("--val", dest="val_file", type=existing_file, default=None, help="validation feature file")
    parser.add_argument("--config", type=config_file, default=None,
                        help="VidclsConfig JSON (default: the one stored in the training feature file)")
    parser.add_argument("--models", type=positive_int, default=None, help="ensemble size K (default: config.num_models); seeds config.seed+i")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: config.seed, 42)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="max epochs; raising it continues a finished run (default: the config's; "
                             f"{defaults.epochs} in the default preset)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help=f"sequences per training batch (default: the config's; {defaults.batch_size} in the default preset)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"AdamW learning rate (default: the config's; {defaults.lr:g} in the default preset)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"AdamW weight decay (default: the config's; {defaults.weight_decay:g} in the default preset)")
    parser.add_argument("--patience", type=positive_int, default=None,
                        help="early stopping patience on val accuracy, in epochs "
                             f"(default: the config's; {defaults.patience} in the default preset)")
    parser.add_argument("--scheduler-step", choices=["batch", "epoch"], default=None,
                        help="when to step CosineAnnealingWarmRestarts: 'batch' = the reference (T_0 counts "
                             "batches), 'epoch' = opt-in fix (T_0 counts epochs as the schedule intends)")
    parser.add_argument("--no-balanced-sampler", action="store_true", help="plain shuffle instead of WeightedRandomSampler")
    parser.add_argument("--no-mask-padding", action="store_true",
                        help="reference behaviour: attention/pooling/LSTM see the zero padding of augmented batches")
    parser.add_argument("--no-augment", action="store_true", help="turn the three augmentations off")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster for small models on a busy machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    train_file = args.train_file or split_path(args.features, "train")
    val_file = args.val_file or split_path(args.features, "val")
    for f in (train_file, val_file):
        if not Path(f).exists():
            raise UsageError(f"missing feature file {f}: make it with 'vidcls extract DATA {args.features}' "
                             "(DATA/train and DATA/val hold the videos), or pass --train/--val")
    config = VidclsConfig.load(args.config) if args.config else None
    if args.seed is not None:
        config = (config or read_features(train_file).config).replace(seed=args.seed)
    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     weight_decay=args.weight_decay, patience=args.patience, scheduler_step=args.scheduler_step)
    if args.no_balanced_sampler:
        overrides["balanced_sampler"] = False
    if args.no_mask_padding:
        overrides["mask_padding"] = False
    if args.no_augment:
        overrides.update(aug_subsample_p=0.0, aug_roll_p=0.0, aug_noise_p=0.0)
    start = time.perf_counter()
    dirs = train_ensemble(Path(train_file), Path(val_file), args.out, config, args.models,
                          progress=not args.no_progress, **overrides)
    print(f"{len(dirs)} model(s) in {args.out} [{time.perf_counter() - start:.1f} s]")
    return 0
