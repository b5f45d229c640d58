"""``vidcls extract DATA OUT``: Stage 1, labeled videos → ``{split}_features_multiscale.h5``.

Per video: the reference decoder (:func:`vidcls.video.load_frames`: probe, T uniform indices,
decode, resize) → the backbone ONCE on the T frames (chunks of ``config.backbone_batch``) →
multi-scale gather + average (:func:`vidcls.sampling.multiscale`) → one row of the feature file.

The building blocks are separate so that a distributed driver can reuse them:

- :func:`list_videos` gives the canonical work list of a split (sorted by video id);
- :func:`extract_videos` processes an explicit list of videos into one file (a shard);
- :func:`merge_shards` combines shard files into the file a single process would have written
  (rows in the canonical sorted order).

Re-running skips the video ids already in the file, so an interrupted run resumes. Files that do
not decode are reported (``{split}_errors.jsonl`` beside the feature file, and the summary) and
skipped; the run goes on.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vidcls.config import BACKBONE_DIMS, PRESETS, InputLimits, VidclsConfig, class_index
from vidcls.training.features_h5 import FeatureWriter

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int
    video_id: str  # "split/Class/file.mp4": stable across machines, the resume and merge key


@dataclass
class ExtractSummary:
    path: Path
    added: int = 0
    skipped: int = 0  # already in the file (resume)
    errors: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.path.name}: {self.added} added, {self.skipped} already there, "
                f"{len(self.errors)} unreadable, {self.seconds:.1f} s ({rate:.1f} frames/s)")


# ---- configuration ------------------------------------------------------------------------
def resolve_config(preset: str = "default", config_file: str | Path | None = None,
                   backbone: str | None = None) -> VidclsConfig:
    """--config file wins over --preset; --backbone swaps the backbone (and feature_dim)."""
    config = VidclsConfig.load(config_file) if config_file else PRESETS[preset]()
    if backbone and backbone != config.backbone:
        data = config.to_dict()
        data["backbone"] = backbone
        data["temporal"]["feature_dim"] = BACKBONE_DIMS[backbone]
        config = VidclsConfig.from_dict(data)
    return config


# ---- work lists ---------------------------------------------------------------------------
def list_videos(data_dir: str | Path, split: str, classes: Sequence[str],
                limits: InputLimits | None = None) -> list[VideoItem]:
    """Every video file under DATA/split/<class>/ (sorted by video id): the same rule as
    ``vidcls classify`` folders (:func:`vidcls.inputs.not_a_video`: extensions of the containers
    ``limits`` allow; hidden files are not videos). A folder names its class as the config spells
    it or differing only in case and ``_``/``-``/space (``flat content`` is Flat_Content:
    :func:`vidcls.config.class_index`). Other files are named in a warning, unknown folders too;
    half-written synth outputs (``*.partial.*``) are skipped."""
    from vidcls.inputs import not_a_video

    root = Path(data_dir)
    split_dir = root / split
    if not split_dir.is_dir():
        return []
    items, others = [], []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = class_index(folder.name, classes)
        if label is None:
            log.warning("%s is not a class folder (%s); ignored", folder, ", ".join(classes))
            continue
        for f in folder.iterdir():
            if not f.is_file() or ".partial." in f.name:
                continue
            if not_a_video(f, limits):
                others.append(f.relative_to(root).as_posix())
            else:
                items.append(VideoItem(f, label, f.relative_to(root).as_posix()))
    if others:
        others.sort()
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log.warning("%d file(s) under %s are not videos and are skipped: %s", len(others), split_dir, shown)
    return sorted(items, key=lambda it: it.video_id)


def as_items(videos: Iterable, root: str | Path | None = None) -> list[VideoItem]:
    """Accept VideoItems or (path, label) pairs; ids are paths relative to ``root`` (or names)."""
    out = []
    for v in videos:
        if isinstance(v, VideoItem):
            out.append(v)
            continue
        path, label = Path(v[0]), int(v[1])
        vid = path.relative_to(root).as_posix() if root else path.name
        out.append(VideoItem(path, label, vid))
    return out


# ---- one video, one file ------------------------------------------------------------------
def video_sequence(path: Path, config: VidclsConfig, backbone, device: str = "cpu") -> np.ndarray:
    """Decode → backbone once on T frames → multi-scale [L, D] float32."""
    from vidcls.models.backbone import extract_features
    from vidcls.sampling import multiscale
    from vidcls.video import load_frames

    frames, _ = load_frames(path, config)
    features = extract_features(backbone, frames, config.backbone_batch, device)
    return multiscale(features.numpy(), config.scales).astype(np.float32)


def extract_videos(videos: Iterable, out_path: str | Path, config: VidclsConfig, backbone,
                   backbone_weights: str = "none", device: str = "cpu", errors_path: str | Path | None = None,
                   root: str | Path | None = None, progress: bool = True,
                   stop_after: int | None = None) -> ExtractSummary:
    """Process an explicit list of videos into ``out_path`` (created or resumed).

    Videos whose id is already in the file are skipped. ``stop_after`` ends the run after that
    many new videos (tests use it to simulate an interruption). Each committed video is logged
    at DEBUG (``done <video id>``).
    """
    from tqdm import tqdm

    items = as_items(videos, root)
    summary = ExtractSummary(Path(out_path))
    start = time.perf_counter()
    errors_file = _open_errors(errors_path)
    with FeatureWriter(out_path, config, backbone_weights) as writer:
        done = set(writer.video_ids())
        todo = [it for it in items if it.video_id not in done]
        summary.skipped = len(items) - len(todo)
        bar = tqdm(todo, desc=Path(out_path).stem, unit="video", disable=not progress, file=sys.stderr)
        for item in bar:
            if stop_after is not None and summary.added >= stop_after:
                summary.stopped_early = True
                break
            try:
                seq = video_sequence(item.path, config, backbone, device)
            except Exception as exc:  # one bad file must not stop the run
                _record_error(summary, errors_file, item, exc)
                bar.set_postfix(errors=len(summary.errors))
                continue
            writer.append(item.video_id, seq, item.label)
            summary.added += 1
            summary.frames += config.num_frames
            log.debug("done %s", item.video_id)
        bar.close()
    if errors_file:
        errors_file.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _open_errors(errors_path):
    if errors_path is None:
        return None
    errors_path = Path(errors_path)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    return open(errors_path, "w")  # this run's verdicts: failed videos are retried on each run


def _record_error(summary: ExtractSummary, errors_file, item: VideoItem, exc: Exception) -> None:
    from vidcls.video import VideoError

    record = {"video_id": item.video_id, "path": str(item.path),
              "code": exc.code if isinstance(exc, VideoError) else type(exc).__name__,
              "error": str(exc)}
    summary.errors.append(record)
    if errors_file:
        errors_file.write(json.dumps(record) + "\n")
        errors_file.flush()


# ---- shards -------------------------------------------------------------------------------
def merge_shards(shard_paths: Sequence[str | Path], out_path: str | Path) -> Path:
    """Combine shard files into one file equal to a single-process run: same attrs, rows in
    sorted video-id order. Shards must share backbone, weights, frames, size and scales."""
    import h5py

    rows: dict[str, tuple[int, int]] = {}
    configs, weights = set(), set()
    handles = [h5py.File(p, "r") for p in shard_paths]
    try:
        for s, f in enumerate(handles):
            configs.add(_text(f.attrs["vidcls_config"]))
            weights.add(_text(f.attrs["backbone_weights"]))
            for r, vid in enumerate(f["video_ids"][: int(f.attrs["num_videos"])]):
                vid = _text(vid)
                if vid in rows:
                    raise ValueError(f"video {vid} is in two shards")
                rows[vid] = (s, r)
        if len(configs) != 1 or len(weights) != 1:
            raise ValueError("the shards were made with different configs or backbone weights")
        config = VidclsConfig.from_json(configs.pop())
        out_path = Path(out_path)
        if out_path.exists():
            out_path.unlink()
        with FeatureWriter(out_path, config, weights.pop()) as writer:
            for vid in sorted(rows):
                s, r = rows[vid]
                f = handles[s]
                writer.append(vid, f["features"][r], int(f["labels"][r]), int(f["num_frames"][r]))
    finally:
        for f in handles:
            f.close()
    return out_path


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
