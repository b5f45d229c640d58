"""Liveness by inference: classify a tiny known video through the ensemble over HTTP.

``/v2/health/live`` answers OK as long as the server process runs. A python-backend stub that
crashed is not restarted by the server releases the serving image is built on, so the probe,
views and averaging steps can be dead while ``live`` still says OK; only an inference through the
whole ensemble proves every step answers. Kubernetes runs this as the liveness probe and Docker as
the health check (the serving image has the vidcls core and PyAV, no tritonclient: plain urllib
and the KServe v2 JSON protocol).

    python3 -m vidcls.healthcheck [--url http://127.0.0.1:8000] [--timeout 20]

Exit 0 when the ensemble returns probabilities that sum to 1, else 1 with one line on stderr.
The video (16 frames of 64x64 H.264 in MP4, a few kB, decodable by both the PyAV and the DALI
decode step) is written once to ``--video`` and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig


def liveness_video(path: Path) -> bytes:
    if not path.exists():
        from vidcls.video import encode_video

        yy, xx = np.mgrid[0:64, 0:64]
        frames = [np.stack([(xx * 4 + 8 * i) % 256, (yy * 4) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
                  for i in range(16)]
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix names the container
        encode_video(tmp, frames, codec="libx264")
        tmp.replace(path)
    return path.read_bytes()


def check(url: str, video: bytes, timeout: float, config: VidclsConfig | None = None) -> None:
    """Raise RuntimeError unless the ensemble classifies ``video``."""
    s = (config or VidclsConfig()).serving
    body = {"inputs": [{"name": s.video, "shape": [1, len(video)], "datatype": "UINT8",
                        "data": list(video)}],
            "outputs": [{"name": s.probabilities}],
            # Past the answer cache: a stored answer for this file would hide a dead pipeline.
            "parameters": {s.cache_parameter: False}}
    request = urllib.request.Request(f"{url.rstrip('/')}/v2/models/{s.ensemble}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"inference failed: HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RuntimeError(f"no answer from {url}: {exc}") from None
    outputs = {o["name"]: o for o in answer.get("outputs", [])}
    probs = np.asarray(outputs.get(s.probabilities, {}).get("data", []), dtype=np.float64)
    if probs.size == 0 or not np.isfinite(probs).all() or abs(probs.sum() - 1.0) > 1e-3:
        raise RuntimeError(f"unexpected answer from {s.ensemble}: {str(answer)[:300]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vidcls.healthcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--video", default="/tmp/vidcls-liveness.mp4")
    args = ap.parse_args(argv)
    try:
        check(args.url, liveness_video(Path(args.video)), args.timeout)
    except RuntimeError as exc:
        print(f"vidcls liveness: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
