"""Index math shared by training, the Triton probe, the DALI pipeline and the reference decoder.

Everything here is numpy-only and works on index arrays, so the same gathers can be applied to
numpy arrays (python backend), torch tensors (training, reference pipeline) or handed to DALI.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np


def sample_indices(num_frames: int, count: int = 64) -> np.ndarray:
    """``count`` frame indices spread uniformly over a video of ``num_frames`` frames.

    ``floor(linspace(0, n-1, count))``: first and last frame are always included; a video shorter
    than ``count`` frames repeats frames (each index appears once or more, in order).
    """
    n = int(num_frames)
    if n < 1:
        raise ValueError(f"a video needs at least one frame, got {n}")
    if count < 1:
        raise ValueError("count must be >= 1")
    return np.linspace(0, n - 1, count).astype(np.int64)


def scale_indices(length: int, scale: float) -> np.ndarray:
    """Rows of a ``length``-row feature sequence that temporal scale ``scale`` keeps (docs/design.md)."""
    if scale == 1.0:
        return np.arange(length, dtype=np.int64)
    n = max(int(length * scale), 5)
    return np.linspace(0, length - 1, n).astype(np.int64)


def multiscale_length(length: int, scales: Sequence[float]) -> int:
    return max(len(scale_indices(length, s)) for s in scales)


def view_indices(length: int, view: str) -> np.ndarray:
    """Rows of an L-row sequence that TTA view ``view`` takes, in order (docs/design.md)."""
    idx = np.arange(length, dtype=np.int64)
    if view == "original":
        return idx
    if view == "reverse":
        return idx[::-1].copy()
    if view == "speed_up":
        if length > 10:
            return np.linspace(0, length - 1, length // 2).astype(np.int64)
        return idx
    if view == "speed_down":
        if length > 5:
            return np.minimum(np.linspace(0, length - 1, int(length * 1.5)).astype(np.int64), length - 1)
        return idx
    raise ValueError(f"unknown TTA view {view!r}")


def multiscale(features, scales: Sequence[float]):
    """[T, D] (or [B, T, D]) per-frame features → [L, D] multi-scale sequence.

    Works on numpy arrays and torch tensors alike (only indexing, zero-padding by assignment
    and elementwise adds are used), and both give bit-identical float32 results: the scales are
    summed in the listed order and divided once, as the reference's stack().mean(0) did.
    """
    t = features.shape[-2]
    length = multiscale_length(t, scales)
    total = None
    for s in scales:
        rows = scale_indices(t, s)
        part = features[..., _index(features, rows), :]
        padded = _zeros_like(features, length)
        padded[..., : len(rows), :] = part
        total = padded if total is None else total + padded
    return total / len(scales)


def tta_views(sequence, views: Sequence[str]) -> dict:
    """{view: rows of ``sequence`` (…, L, D)} for each TTA view, numpy or torch."""
    length = sequence.shape[-2]
    return {v: sequence[..., _index(sequence, view_indices(length, v)), :] for v in views}


def view_frame_shares(num_frames: int, scales: Sequence[float], view: str) -> np.ndarray:
    """[L_view, T]: the share of each sampled frame in each row of TTA view ``view``.

    A multi-scale row averages the frames its scales pick (1.1) and a view row is a multi-scale
    row (1.2), so every row of what a temporal model sees is a known mix of the T frames. A row's
    weight is split among the frames it averages, in proportion to how often each appears in it
    (zero padding carries none, so every row sums to 1 and a weight over rows maps to a weight
    over frames that sums to the same total).
    """
    length = multiscale_length(num_frames, scales)
    share = np.zeros((length, num_frames), dtype=np.float64)
    for s in scales:
        rows = scale_indices(num_frames, s)
        np.add.at(share, (np.arange(len(rows)), rows), 1.0)
    share /= share.sum(axis=1, keepdims=True)
    return share[view_indices(length, view)]


def frame_attention(view_weights, num_frames: int, scales: Sequence[float]) -> np.ndarray:
    """{view: attention weights over that view's rows, [..., M, L_view] for M models} → [..., T]
    weights over the sampled frames: each (model, view) mapped to frames, averaged over the views,
    then over the models (the order in which their probabilities are averaged). float32."""
    total = None
    for view, weights in view_weights.items():
        part = np.asarray(weights, dtype=np.float64) @ _shares(int(num_frames), tuple(scales), view)
        total = part if total is None else total + part
    return (total / len(view_weights)).mean(axis=-2).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _shares(num_frames: int, scales: tuple, view: str) -> np.ndarray:
    out = view_frame_shares(num_frames, scales, view)
    out.flags.writeable = False
    return out


def _index(array, rows: np.ndarray):
    if isinstance(array, np.ndarray):
        return rows
    import torch  # only reached with a torch tensor, so the serving path stays torch-free

    return torch.as_tensor(rows, device=array.device)


def _zeros_like(array, length: int):
    shape = (*array.shape[:-2], length, array.shape[-1])
    if isinstance(array, np.ndarray):
        return np.zeros(shape, dtype=array.dtype)
    import torch

    return torch.zeros(shape, dtype=array.dtype, device=array.device)
