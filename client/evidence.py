"""The evidence behind an answer, as ``vidcls classify --evidence`` records it.

The ensemble's evidence outputs (requested only with ``--evidence``; Triton returns just the
outputs a request names) are, per video: FRAME_NUMBERS and FRAME_TIMES of the T sampled frames,
FRAME_ATTENTION (each frame's attention-pooling weight, averaged over the temporal models and
TTA views) and VIEW_PROBABILITIES [models, views, classes]. A record keeps:

- ``moments``: the sampled frames with the largest weights, best first, as
  ``{"t": seconds, "frame": index, "weight": w}``. A video shorter than T frames samples some
  frames more than once; their weights are added, so each frame is one moment.
- ``view_probabilities``: ``{model: {view: [p per class]}}`` (class order = the config's classes);
  their mean over views, then models, is the record's probabilities.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from vidcls.config import VidclsConfig

FIELDS = ("moments", "view_probabilities")
DEFAULT_MOMENTS = 3


def output_names(config: VidclsConfig) -> tuple[str, ...]:
    s = config.serving
    return (s.frame_numbers, s.frame_times, s.frame_attention, s.view_probabilities)


def top_moments(indices, times, weights, count: int = DEFAULT_MOMENTS) -> list[dict[str, Any]]:
    """The ``count`` frames with the most attention (weights of repeated frames added)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    frames, first, inverse = np.unique(indices, return_index=True, return_inverse=True)
    total = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(frames))
    order = np.argsort(-total, kind="stable")[: max(0, int(count))]
    out = []
    for i in order:
        t = float(times[first[i]])
        out.append({"t": round(t, 4) if math.isfinite(t) else None, "frame": int(frames[i]),
                    "weight": round(float(total[i]), 6)})
    return out


def view_table(view_probabilities, config: VidclsConfig) -> dict[str, dict[str, list[float]]]:
    """[models, views, classes] → {model name: {view: [p per class]}}. The counts come from the
    array (the server's ensemble may have fewer models than the client's config says); the names
    from the config's temporal prefix and TTA views."""
    arr = np.asarray(view_probabilities, dtype=np.float64)
    arr = arr.reshape(arr.shape[-3:])  # drop the batch axis
    views = list(config.tta_views) if len(config.tta_views) == arr.shape[1] else [
        f"view_{j}" for j in range(arr.shape[1])]
    return {f"{config.serving.temporal_prefix}{i}": {view: [float(p) for p in arr[i, j]] for j, view in enumerate(views)}
            for i in range(arr.shape[0])}


def from_result(result, config: VidclsConfig, count: int = DEFAULT_MOMENTS) -> dict[str, Any]:
    """A tritonclient result holding the evidence outputs → the record's evidence fields."""
    s = config.serving
    return {"moments": top_moments(result.as_numpy(s.frame_numbers), result.as_numpy(s.frame_times),
                                   result.as_numpy(s.frame_attention), count),
            "view_probabilities": view_table(result.as_numpy(s.view_probabilities), config)}


def parse_field(value: Any) -> Any:
    """A record's evidence field as read back: JSONL gives the object, CSV its JSON text."""
    if value is None or value == "":
        return None
    return json.loads(value) if isinstance(value, str) else value


def mean_probabilities(table: dict[str, dict[str, Sequence[float]]]) -> list[float]:
    """The mean over views, then models, of a ``view_probabilities`` table (= the record's probabilities)."""
    per_model = [np.mean(np.asarray(list(views.values()), dtype=np.float64), axis=0) for views in table.values()]
    return [float(p) for p in np.mean(per_model, axis=0)]
