"""HDF5 feature files (docs/design.md), compatible both ways with the reference project's files.

``{split}_features_multiscale.h5`` holds what the reference wrote and read:

- ``features`` float32 [N, max_frames, D], zero-padded, gzip level 4
- ``labels`` int64 [N], ``num_frames`` int32 [N]
- attrs ``num_videos``, ``max_frames``, ``feature_dim``, ``category_mapping`` (JSON name→index),
  ``multi_scale`` (bool)

and what we add to make a file traceable and resumable: a ``video_ids`` string dataset and the
attrs ``backbone``, ``backbone_weights``, ``frames``, ``size``, ``scales``, ``vidcls_version`` and
``vidcls_config`` (the whole VidclsConfig as JSON). The datasets are resizable and chunked one
video per chunk; each video is appended to all of them, ``num_videos`` is updated last and the
file is flushed, so a crash loses at most the video in flight (a reopened file is cut back to
``num_videos`` rows). Files without our additions (the reference's) read fine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidcls.config import VidclsConfig

SPLIT_FILE = "{split}_features_multiscale.h5"
# Attributes whose values must agree before appending to an existing file.
IDENTITY_ATTRS = ("backbone", "backbone_weights", "frames", "size", "scales", "feature_dim", "max_frames")


def split_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / SPLIT_FILE.format(split=split)


@dataclass
class FeatureSet:
    """A whole feature file in memory."""

    features: np.ndarray  # float32 [N, max_frames, D]
    labels: np.ndarray  # int64 [N], indices into config.classes
    num_frames: np.ndarray  # int32 [N]
    video_ids: list[str]
    config: VidclsConfig
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def backbone_weights(self) -> str:
        return str(self.attrs.get("backbone_weights", "imagenet"))


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def category_mapping(config: VidclsConfig) -> dict[str, int]:
    return {name: i for i, name in enumerate(config.classes)}


def _label_remap(mapping: dict[str, int], classes: tuple[str, ...]) -> np.ndarray:
    """file label → our class index, matching names loosely ("Flat Content" == "Flat_Content")."""
    def norm(name: str) -> str:
        return name.replace(" ", "_").replace("-", "_").lower()

    ours = {norm(c): i for i, c in enumerate(classes)}
    remap = np.full(max(mapping.values()) + 1, -1, dtype=np.int64)
    for name, idx in mapping.items():
        if norm(name) not in ours:
            raise ValueError(f"class {name!r} of the feature file is not one of {list(classes)}")
        remap[int(idx)] = ours[norm(name)]
    return remap


def read_features(path: str | Path, config: VidclsConfig | None = None) -> FeatureSet:
    """Read ours or a reference file. Labels are remapped to ``config.classes`` order by name."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        attrs = {k: (_attr_text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}
        n = int(attrs.get("num_videos", f["labels"].shape[0]))
        features = f["features"][:n].astype(np.float32, copy=False)
        labels = f["labels"][:n].astype(np.int64)
        num_frames = (f["num_frames"][:n].astype(np.int32) if "num_frames" in f
                      else np.full(n, features.shape[1], np.int32))
        ids = ([_attr_text(v) for v in f["video_ids"][:n]] if "video_ids" in f
               else [f"{path.stem}/{i:06d}" for i in range(n)])
    if config is None:
        config = (VidclsConfig.from_json(attrs["vidcls_config"]) if "vidcls_config" in attrs
                  else VidclsConfig.for_features(features.shape[2]))  # a reference file: any width
    if features.shape[2] != config.feature_dim:
        raise ValueError(f"{path}: {features.shape[2]}-d features, but the config's backbone "
                         f"{config.backbone} gives {config.feature_dim}-d")
    if "category_mapping" in attrs:
        labels = _label_remap(json.loads(attrs["category_mapping"]), config.classes)[labels]
    return FeatureSet(features, labels, num_frames, ids, config, attrs, path)


class FeatureWriter:
    """Append videos to a feature file one at a time; reopening an existing file resumes it."""

    def __init__(self, path: str | Path, config: VidclsConfig, backbone_weights: str = "none"):
        import h5py

        from vidcls import __version__

        self.path = Path(path)
        self.config = config
        self.max_frames = config.seq_len
        self.dim = config.feature_dim
        self.path.parent.mkdir(parents=True, exist_ok=True)
        identity = {
            "backbone": config.backbone, "backbone_weights": str(backbone_weights),
            "frames": config.num_frames, "size": config.frame_size, "scales": json.dumps(list(config.scales)),
            "feature_dim": self.dim, "max_frames": self.max_frames,
        }
        existed = self.path.exists()
        self.file = h5py.File(self.path, "a")
        if existed and "features" in self.file:
            self._check_identity(identity)
            self._truncate_to_committed()
        else:
            self._create(identity, __version__)

    # ---- creation / resume -----------------------------------------------------------------
    def _create(self, identity: dict, version: str) -> None:
        import h5py

        f, t, d = self.file, self.max_frames, self.dim
        # One chunk = one video: an append touches only its own chunk, a crash only the last one.
        f.create_dataset("features", shape=(0, t, d), maxshape=(None, t, d), dtype="float32",
                         chunks=(1, t, d), compression="gzip", compression_opts=4)
        f.create_dataset("labels", shape=(0,), maxshape=(None,), dtype="int64", chunks=(256,))
        f.create_dataset("num_frames", shape=(0,), maxshape=(None,), dtype="int32", chunks=(256,))
        f.create_dataset("video_ids", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(256,))
        f.attrs["num_videos"] = 0
        f.attrs["category_mapping"] = json.dumps(category_mapping(self.config))
        f.attrs["multi_scale"] = len(self.config.scales) > 1
        for key, value in identity.items():
            f.attrs[key] = value
        f.attrs["vidcls_version"] = version
        f.attrs["vidcls_config"] = self.config.to_json(indent=None)
        f.flush()

    def _check_identity(self, identity: dict) -> None:
        for key in IDENTITY_ATTRS:
            have = self.file.attrs.get(key)
            have = _attr_text(have) if isinstance(have, (bytes, str)) else have
            if have is None or str(have) != str(identity[key]):
                self.file.close()
                raise ValueError(f"{self.path} was made with {key}={have!r}, this run uses "
                                 f"{identity[key]!r}: write to another folder or delete the file")

    def _truncate_to_committed(self) -> None:
        """Cut every dataset back to ``num_videos`` rows: a crash mid-append leaves extra rows."""
        n = int(self.file.attrs["num_videos"])
        for name in ("features", "labels", "num_frames", "video_ids"):
            if self.file[name].shape[0] != n:
                self.file[name].resize(n, axis=0)
        self.file.flush()

    # ---- appending -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.file.attrs["num_videos"])

    def video_ids(self) -> list[str]:
        return [_attr_text(v) for v in self.file["video_ids"][: len(self)]]

    def append(self, video_id: str, sequence: np.ndarray, label: int, num_frames: int | None = None) -> None:
        """Add one video's [L, D] sequence (L <= max_frames; zero-padded here)."""
        sequence = np.asarray(sequence, dtype=np.float32)
        length = sequence.shape[0] if num_frames is None else int(num_frames)
        if sequence.shape[1] != self.dim or length > self.max_frames:
            raise ValueError(f"sequence {sequence.shape} does not fit [{self.max_frames}, {self.dim}]")
        padded = np.zeros((self.max_frames, self.dim), np.float32)
        padded[:length] = sequence[:length]
        n = len(self)
        f = self.file
        for name in ("features", "labels", "num_frames", "video_ids"):
            f[name].resize(n + 1, axis=0)
        f["features"][n] = padded
        f["labels"][n] = int(label)
        f["num_frames"][n] = length
        f["video_ids"][n] = video_id
        f.attrs["num_videos"] = n + 1  # the commit point: rows past num_videos are ignored
        f.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
