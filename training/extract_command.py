"""``vidcls extract DATA OUT``: the command. Stage 1 in this process, or on Ray with ``--ray``.

The work itself is library code: :mod:`vidcls.training.extract` (one process) and
:mod:`vidcls.training.distributed` (shards on a Ray cluster, built on the former). This module
only turns arguments into one of those runs and prints the summary, so the two libraries import
in one direction (distributed → extract) and Ray is imported only when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vidcls.arguments import config_file, existing_dir, positive_int
from vidcls.config import BACKBONE_DIMS, PRESETS, InputLimits, class_index, default_backbone_weights
from vidcls.errors import UsageError
from vidcls.training.extract import SPLITS, ExtractSummary, VideoItem, extract_videos, list_videos, resolve_config
from vidcls.training.features_h5 import split_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=existing_dir, help="folder with {train,val,test}/<class>/<video files>")
    parser.add_argument("out", type=Path, help="folder for {split}_features_multiscale.h5 (+ {split}_errors.jsonl)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to extract (missing ones are skipped)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="config preset: default = the production model, tiny = tests, "
                             "demo = 64 frames/256px + tiny CNN")
    parser.add_argument("--config", type=config_file, default=None,
                        help="a VidclsConfig JSON file, e.g. from 'vidcls config' (overrides --preset)")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_DIMS), default=None, help="override the config's backbone")
    parser.add_argument("--weights", default=None,
                        help="backbone weights: imagenet, none (random, seeded) or a state-dict file "
                             "(default: imagenet for torchvision backbones, none for tiny)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--verbose", action="store_true", help="print one line per finished video")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster for small models on a busy machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("distributed (Ray)")
    g.add_argument("--ray", action="store_true",
                   help="run on Ray: shards of the sorted video list as tasks, then one merged file per split")
    g.add_argument("--ray-address", default=None,
                   help="auto (running cluster), local (start one here), or ray://HOST:10001 / HOST:6379; "
                        "None: $RAY_ADDRESS if set, else local")
    g.add_argument("--shards", type=int, default=None, help="shards per split (None: 2 per worker slot of the cluster)")
    g.add_argument("--cpus-per-worker", type=int, default=1, help="CPU cores (and torch threads) per CPU task")
    g.add_argument("--drop-shards", action="store_true", help="delete the shard files after the merge")


def work_lists(data: Path, splits: Sequence[str], classes: Sequence[str],
               limits: InputLimits | None = None) -> dict[str, list[VideoItem]]:
    """The videos of each split that has any; a :class:`UsageError` naming the expected layout
    when none has (before any model is built or downloaded)."""
    lists = {split: list_videos(data, split, classes, limits) for split in splits}
    found = {split: items for split, items in lists.items() if items}
    if found:
        for split in lists.keys() - found.keys():
            print(f"{split}: no videos under {data / split}, split skipped", file=sys.stderr)
        return found
    layout = f"{data}/{{{','.join(splits)}}}/<class>/<video files>"
    flat = [p.name for p in data.iterdir() if p.is_dir() and class_index(p.name, classes) is not None]
    if flat:
        hint = (f"{data} holds class folders ({', '.join(sorted(flat))}) but no split folders: move them "
                f"into {data}/train/, {data}/val/ (and {data}/test/)")
    else:
        hint = f"expected {layout} with class folders {', '.join(classes)} (or a config with your classes)"
    raise UsageError(f"no videos found in {data}: {hint}")


def run(args: argparse.Namespace) -> int:
    from vidcls.models.backbone import BackboneUnavailable, require_runnable

    config = resolve_config(args.preset, args.config, args.backbone)
    weights = args.weights or default_backbone_weights(config.backbone)
    try:
        require_runnable(config)
    except BackboneUnavailable as exc:
        raise UsageError(str(exc)) from None
    lists = work_lists(args.data, args.splits, config.classes, config.limits)
    if args.ray:  # shards on a Ray cluster, then one merged file per split
        from vidcls.training.distributed import extract_distributed

        results = extract_distributed(args.data, args.out, config, weights, args.device, list(lists),
                                      shards=args.shards, cpus_per_worker=args.cpus_per_worker,
                                      address=args.ray_address, keep_shards=not args.drop_shards,
                                      progress=not args.no_progress)
        report(list(results.values()), args.out)
        return 0
    import torch

    from vidcls.models.backbone import build_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = build_backbone(config, weights).to(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for split, items in lists.items():
        out = split_path(args.out, split)
        summary = extract_videos(items, out, config, backbone, weights, args.device,
                                 errors_path=args.out / f"{split}_errors.jsonl",
                                 progress=not args.no_progress)
        summaries.append(summary)
    report(summaries, args.out)
    return 0


def report(summaries: Sequence[ExtractSummary], out: Path) -> None:
    """One line per split, then every unreadable file (the local and the Ray summaries alike)."""
    total_errors = 0
    for summary in summaries:
        print(summary.line())
        for err in summary.errors:
            print(f"  unreadable: {err['video_id']}: {err['error']}")
        total_errors += len(summary.errors)
    if total_errors:
        print(f"{total_errors} unreadable file(s) skipped; see {out}/*_errors.jsonl")
