"""Identical decoded frames: compute the backbone once per distinct picture.

Real videos repeat pictures exactly: a slide deck or a terminal holds the same screen for seconds,
animation holds drawings, and a video shorter than T frames has its sampled indices repeated. After
decode and resize such frames are the same bytes, and the backbone maps the same bytes to the same
features. :func:`distinct_frames` keeps each distinct picture once (the first time it appears) and
a map from the T sampled positions to those rows; :func:`expand` gathers per-picture rows back to T.
The backbone's output for a picture does not depend on the other pictures of its batch (ONNX
Runtime runs every image of a batch with the same kernels and summation order; the tests and
benchmarks/bench_pipeline.py compare the features with and without this bit for bit), so the
gathered features are the features of the T frames. numpy only: the serving path imports this.
"""

from __future__ import annotations

import hashlib

import numpy as np


def identity_map(count: int) -> np.ndarray:
    """The map of frames that are all kept: row t is position t."""
    return np.arange(count, dtype=np.int32)


def distinct_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` [T, ...] → (distinct [K, ...] in order of first appearance, map INT32 [T]).

    ``distinct[map[t]]`` has the bytes of ``frames[t]`` for every t. Pictures are compared by a
    128-bit BLAKE2b digest and then byte for byte, so two different pictures are never merged.
    When every frame is distinct, ``frames`` itself is returned (no copy).
    """
    count = len(frames)
    mapping = np.empty(count, dtype=np.int32)
    keep: list[int] = []  # row in ``frames`` of each distinct picture
    by_digest: dict[bytes, list[int]] = {}  # digest → indices into ``keep``
    for t in range(count):
        frame = np.ascontiguousarray(frames[t])
        digest = hashlib.blake2b(frame, digest_size=16).digest()
        candidates = by_digest.setdefault(digest, [])
        for k in candidates:
            if np.array_equal(frames[keep[k]], frame):
                mapping[t] = k
                break
        else:
            candidates.append(len(keep))
            mapping[t] = len(keep)
            keep.append(t)
    if len(keep) == count:
        return frames, mapping
    return frames[keep], mapping


def stack_distinct(videos: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several videos' (distinct, map) as one batch: [b, K_max, ...] and [b, T].

    A tensor row cannot be ragged, so a video with fewer distinct pictures than the batch's most is
    padded with copies of its first picture; no map entry points at the padding (its features are
    computed and never used). One video per request, the usual case, needs no padding.
    """
    if len(videos) == 1:
        distinct, mapping = videos[0]
        return distinct[None], mapping[None]
    most = max(len(d) for d, _ in videos)
    rows = [d if len(d) == most else np.concatenate([d, np.repeat(d[:1], most - len(d), axis=0)])
            for d, _ in videos]
    return np.stack(rows), np.stack([m for _, m in videos])


def expand(rows: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Per-picture rows [b, K, ...] and maps [b, T] → per-frame rows [b, T, ...] (a gather: exact)."""
    mapping = np.asarray(mapping)
    if mapping.ndim != 2 or mapping.shape[0] != rows.shape[0]:
        raise ValueError(f"a map of shape {mapping.shape} does not fit rows of shape {rows.shape}")
    if mapping.size and (int(mapping.min()) < 0 or int(mapping.max()) >= rows.shape[1]):
        raise ValueError(f"map entries must lie in [0, {rows.shape[1]}), got {int(mapping.min())}..{int(mapping.max())}")
    return rows[np.arange(rows.shape[0])[:, None], mapping]
