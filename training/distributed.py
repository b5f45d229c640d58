"""Distributed Stage 1 on Ray: ``vidcls extract DATA OUT --ray [--ray-address auto|local|ADDR] [--shards N]``.

The sorted work list of a split (:func:`vidcls.training.extract.list_videos`) is cut into N
contiguous shards; each shard is one Ray task that builds the backbone once and runs the
extract module's list-based :func:`~vidcls.training.extract.extract_videos` into its own HDF5
file (``OUT/shards/{split}/{split}-shard-00003-of-00008.h5``). When every task is back,
:func:`~vidcls.training.extract.merge_shards` writes ``OUT/{split}_features_multiscale.h5`` with
the rows in sorted video-id order: the same file a single-process ``vidcls extract`` writes.

Resources: ``--device cuda`` asks one GPU per task (Ray sets CUDA_VISIBLE_DEVICES, so the task
uses ``cuda``); ``--device cpu`` asks ``--cpus-per-worker`` cores per task and gives torch that
many threads. Shards outnumber workers (2x by default) so that a slow shard does not hold the
whole run.

Cluster assumptions: every node has this package installed (docker/Dockerfile.train) and sees
DATA and OUT at the same paths (a shared filesystem). A task that dies is retried by Ray; its
shard file resumes where it stopped (the feature writer skips ids already committed), and
re-running the command resumes every shard and merges again.

Ray is imported only when a distributed run starts (``pip install vidcls[ray]``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vidcls.config import VidclsConfig
from vidcls.training.extract import SPLITS, VideoItem, extract_videos, list_videos, merge_shards
from vidcls.training.features_h5 import split_path

log = logging.getLogger(__name__)


@dataclass
class SplitSummary:
    split: str
    path: Path
    shards: int
    added: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.path.name}: {self.added} added, {self.skipped} already there, "
                f"{len(self.errors)} unreadable, {self.shards} shards, {self.seconds:.1f} s")


# ---- sharding ---------------------------------------------------------------------------------
def shard_items(items: Sequence[VideoItem], shards: int) -> list[list[VideoItem]]:
    """Cut the (sorted) work list into ``shards`` contiguous pieces whose sizes differ by at most 1.

    Contiguous and deterministic: the same list and N give the same shards, so a re-run resumes
    each shard file instead of starting over.
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    shards = min(shards, max(1, len(items)))
    base, extra = divmod(len(items), shards)
    out, start = [], 0
    for i in range(shards):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def shard_file(out_dir: str | Path, split: str, index: int, count: int) -> Path:
    return Path(out_dir) / "shards" / split / f"{split}-shard-{index:05d}-of-{count:05d}.h5"


# ---- one shard (runs inside a Ray task, or directly) -----------------------------------------
def extract_shard(items: Sequence[VideoItem], out_path: str, config_json: str, weights: str,
                  device: str = "cpu", errors_path: str | None = None, threads: int | None = None) -> dict:
    """Build the backbone and extract ``items`` into ``out_path``; returns a plain summary dict."""
    import torch

    from vidcls.models.backbone import build_backbone

    if threads:
        torch.set_num_threads(threads)
    config = VidclsConfig.from_json(config_json)
    backbone = build_backbone(config, weights).to(device)
    summary = extract_videos(items, out_path, config, backbone, weights, device,
                             errors_path=errors_path, progress=False)
    return {"path": str(out_path), "added": summary.added, "skipped": summary.skipped,
            "errors": summary.errors, "frames": summary.frames, "seconds": summary.seconds,
            "node": os.uname().nodename}


# ---- driver -----------------------------------------------------------------------------------
def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to (``auto`` / ``ray://host:10001`` / ``host:6379``) or start (``local``) Ray.

    ``None``: RAY_ADDRESS if set, else a local instance. An already initialized Ray is reused.
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"include_dashboard": False, "log_to_driver": True}
        if address == "local" and num_cpus:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    return ray


def default_shards(ray, device: str, cpus_per_worker: int) -> int:
    """Two shards per worker slot the cluster has: GPUs for cuda, CPU cores / cpus_per_worker otherwise."""
    res = ray.cluster_resources()
    slots = int(res.get("GPU", 0)) if device.startswith("cuda") else int(res.get("CPU", 1)) // max(1, cpus_per_worker)
    if slots < 1:
        raise RuntimeError(f"the Ray cluster has no {'GPU' if device.startswith('cuda') else 'CPU'} "
                           f"to run extraction tasks on (resources: {res})")
    return 2 * slots


def extract_distributed(data_dir: str | Path, out_dir: str | Path, config: VidclsConfig, weights: str = "none",
                        device: str = "cpu", splits: Sequence[str] = SPLITS, shards: int | None = None,
                        cpus_per_worker: int = 1, address: str | None = None, keep_shards: bool = True,
                        progress: bool = True) -> dict[str, SplitSummary]:
    """Stage 1 of every split in ``splits`` on Ray; returns one summary per extracted split.

    The merged ``OUT/{split}_features_multiscale.h5`` equals a single-process run's file;
    ``OUT/{split}_errors.jsonl`` lists the unreadable videos of all shards (sorted by id).
    """
    ray = init_ray(address)
    gpu = device.startswith("cuda")
    # Inside a task Ray narrows CUDA_VISIBLE_DEVICES to the GPU it granted: that is device "cuda".
    task_device = "cuda" if gpu else "cpu"
    remote = ray.remote(extract_shard).options(
        num_gpus=1 if gpu else 0, num_cpus=cpus_per_worker, max_retries=2, retry_exceptions=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = shards or default_shards(ray, device, cpus_per_worker)
    config_json = config.to_json(indent=None)
    results: dict[str, SplitSummary] = {}
    for split in splits:
        items = list_videos(data_dir, split, config.classes, config.limits)
        if not items:
            log.info("%s: no videos under %s, skipped", split, Path(data_dir) / split)
            continue
        pieces = shard_items(items, n_shards)
        paths = [shard_file(out_dir, split, i, len(pieces)) for i in range(len(pieces))]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        pending = {remote.remote(piece, str(path), config_json, weights, task_device,
                                 str(path.with_suffix(".errors.jsonl")), None if gpu else cpus_per_worker): path
                   for piece, path in zip(pieces, paths)}
        summary = SplitSummary(split, split_path(out_dir, split), len(pieces))
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                r = ray.get(ref)  # a task that failed past its retries raises here: no partial merge
                done += 1
                summary.added += r["added"]
                summary.skipped += r["skipped"]
                summary.frames += r["frames"]
                summary.errors += r["errors"]
                if progress:
                    log.info("%s: shard %d/%d done on %s (%d added, %d unreadable)", split, done, len(pieces),
                             r["node"], r["added"], len(r["errors"]))
        merge_shards(paths, summary.path)
        summary.errors.sort(key=lambda e: e["video_id"])
        with open(out_dir / f"{split}_errors.jsonl", "w") as f:
            for err in summary.errors:
                f.write(json.dumps(err) + "\n")
        if not keep_shards:
            for p in paths:
                p.unlink(missing_ok=True)
                p.with_suffix(".errors.jsonl").unlink(missing_ok=True)
        summary.seconds = time.perf_counter() - start
        results[split] = summary
    return results
