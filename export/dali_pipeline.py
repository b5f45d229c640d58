"""The DALI decode pipeline of the gpu target (Triton DALI backend).

The repository carries it as ``dali.py`` (:func:`autoserialize_source`), which the DALI backend
serializes at load time with the serving image's own DALI; :func:`serialize_pipeline` still
writes a ``model.dali`` for tools and tests that want the serialized graph.

Inputs, fed by Triton through ``fn.external_source`` whose names must equal the Triton input
names (the DALI backend matches them by name):

- ``config.serving.video``: the encoded file's bytes, UINT8 [-1];
- ``config.serving.frame_indices``: the T frame indices the probe computed with
  ``vidcls.sampling.sample_indices``, INT32 [T].

``fn.decoders.video`` decodes exactly those frames (per-sample ``frames=`` list; on the GPU with
``device='mixed'``, i.e. NVDEC), ``fn.resize`` scales each to ``frame_size`` x ``frame_size``
without crop (aspect not kept, as the PyAV reference does), and the one output is
``config.serving.frames`` uint8 [T, S, S, 3] RGB (layout FHWC), which goes to the backbone as is.

Resize filter: linear with antialiasing (DALI's default). Measured against the PyAV reference
(swscale bilinear, which widens its filter when downscaling, i.e. is antialiased too) on VP9
files, see tests/test_dali.py: turning antialiasing off makes a 320x240 → 64x64 downscale ~7x
further from the reference (mean abs diff 24 vs 3.5 grey levels on noise textures), and cubic is
further than linear in both directions. The rest of the difference is the decoders' YUV→RGB
conversion (chroma upsampling), present even without any resize and not configurable in DALI.

DALI's CPU video decoder reads VP8/VP9/MJPEG only (H.264 etc. need ``mixed``), so the CPU
variant of this same pipeline definition exists for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from vidcls.config import VidclsConfig

DEVICES = ("gpu", "cpu")


def _import_dali():
    try:
        from nvidia import dali
        from nvidia.dali import fn, types
    except ImportError as exc:
        raise RuntimeError("NVIDIA DALI is not installed: `pip install vidcls[dali]`") from exc
    return dali, fn, types


def _define(config: VidclsConfig, device: str):
    """The pipeline graph (called inside a pipeline context); returns the output DataNode."""
    _, fn, types = _import_dali()
    s = config.serving
    video = fn.external_source(name=s.video, device="cpu", dtype=types.UINT8, ndim=1)
    indices = fn.external_source(name=s.frame_indices, device="cpu", dtype=types.INT32, ndim=1)
    frames = fn.decoders.video(video, device="mixed" if device == "gpu" else "cpu", frames=indices,
                               # Indices come from the probe's frame count; if DALI's demuxer counts
                               # fewer frames (a damaged tail), repeat the last one as the PyAV
                               # reference decoder does instead of failing or padding black.
                               pad_mode="edge")
    size = config.frame_size
    return fn.resize(frames, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=True,
                     dtype=types.UINT8)


def build_pipeline(config: VidclsConfig, device: str = "gpu", batch_size: int | None = None,
                   num_threads: int = 2, device_id: int | None = 0, prefetch_queue_depth: int = 1):
    """A built DALI pipeline: (video bytes, frame indices) per sample → uint8 [T, S, S, 3].

    ``device='gpu'`` decodes on NVDEC and resizes on the GPU (``device_id`` must be a GPU);
    ``device='cpu'`` runs the same definition on the CPU (``device_id`` is ignored: None).
    ``batch_size`` defaults to ``config.serving.decode_batch`` (the Triton model's max batch).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    dali, _, _ = _import_dali()
    batch_size = int(batch_size or config.serving.decode_batch)
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads,
                         device_id=device_id if device == "gpu" else None,
                         prefetch_queue_depth=prefetch_queue_depth)
    with pipe:
        pipe.set_outputs(_define(config, device))
    pipe.build()
    return pipe


def serialize_pipeline(config: VidclsConfig, path: str | os.PathLike, batch_size: int | None = None,
                       num_threads: int = 4, device: str = "gpu") -> Path:
    """Write the pipeline (``device='gpu'``: NVDEC decode + GPU resize) as ``model.dali`` for
    Triton's DALI backend; ``batch_size`` is the Triton model's max_batch_size.

    Serialization needs no GPU: the graph is written without running it, and the DALI backend
    sets the device id of each Triton instance at load time. ``device='cpu'`` writes the CPU
    variant (VP8/VP9/MJPEG only), which is how tests load a serialized file back and run it here.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    dali, _, _ = _import_dali()
    batch_size = int(batch_size or config.serving.decode_batch)
    # prefetch 1: Triton hands over one batch at a time, there is nothing to read ahead.
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads,
                         device_id=_serialize_device_id() if device == "gpu" else None,
                         prefetch_queue_depth=1)
    with pipe:
        pipe.set_outputs(_define(config, device))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pipe.serialize(filename=str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# The file Triton's DALI backend autoserializes at model load time (in the model's version folder,
# in place of a serialized model.dali): serialized by the DALI of the serving image itself, so the
# format always matches its DALI backend (a model.dali written by a pip-installed DALI of another
# version than the image's, vidcls/serving_image.py, may not load in that backend).
AUTOSERIALIZE_FILE = "dali.py"

_AUTOSERIALIZE_TEMPLATE = '''\
# Generated by `{command}` from vidcls.config.VidclsConfig.
# Do not edit: change the config and regenerate. Triton's DALI backend serializes this pipeline
# when it loads the model (autoserialization), with the DALI installed in the serving image.
# Self-contained on purpose: the serving image has DALI but not the vidcls package.
# Same graph as vidcls.export.dali_pipeline._define (a test builds both on the CPU and compares).
import nvidia.dali as dali
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.plugin.triton import autoserialize

VIDEO = {video!r}
FRAME_INDICES = {indices!r}
FRAME_SIZE = {size}


@autoserialize
@dali.pipeline_def(batch_size={batch_size}, num_threads={num_threads}, device_id=0, prefetch_queue_depth=1)
def vidcls_decode(device="gpu"):
    """(video bytes, frame indices) per sample -> uint8 [T, S, S, 3] RGB; device "gpu" = NVDEC."""
    video = fn.external_source(name=VIDEO, device="cpu", dtype=types.UINT8, ndim=1)
    indices = fn.external_source(name=FRAME_INDICES, device="cpu", dtype=types.INT32, ndim=1)
    # pad_mode "edge": indices past the frames DALI's demuxer counts repeat the last frame, as the
    # PyAV reference decoder does for a damaged tail.
    frames = fn.decoders.video(video, device="mixed" if device == "gpu" else "cpu", frames=indices,
                               pad_mode="edge")
    return fn.resize(frames, size=[FRAME_SIZE, FRAME_SIZE], interp_type=types.INTERP_LINEAR,
                     antialias=True, dtype=types.UINT8)
'''


def autoserialize_source(config: VidclsConfig, batch_size: int | None = None, num_threads: int = 4,
                         command: str = "vidcls export") -> str:
    """The ``dali.py`` text for Triton's DALI backend autoserialization (see AUTOSERIALIZE_FILE).

    ``batch_size`` is the Triton model's max_batch_size (the backend runs batches up to it).
    """
    s = config.serving
    return _AUTOSERIALIZE_TEMPLATE.format(command=command, video=s.video, indices=s.frame_indices,
                                          size=int(config.frame_size),
                                          batch_size=int(batch_size or s.decode_batch),
                                          num_threads=int(num_threads))


def write_autoserialize(config: VidclsConfig, path: str | os.PathLike, batch_size: int | None = None,
                        command: str = "vidcls export") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(autoserialize_source(config, batch_size, command=command))
    return path


def _serialize_device_id() -> int | None:
    # The DALI backend replaces the device id with its instance's GPU when it loads model.dali, so
    # the id written here does not matter; None lets a machine without CUDA serialize the graph.
    from nvidia.dali.backend import GetCUDADeviceCount

    try:
        return 0 if GetCUDADeviceCount() > 0 else None
    except Exception:
        return None


def run_pipeline(pipe, config: VidclsConfig, videos, indices) -> list:
    """Feed one batch (``len(videos)`` must equal the pipeline's batch size) → list of uint8 arrays.

    For tests and benchmarks; Triton feeds the pipeline itself in serving.
    """
    import numpy as np

    s = config.serving
    pipe.feed_input(s.video, [np.frombuffer(bytes(v), dtype=np.uint8) if not isinstance(v, np.ndarray) else v
                              for v in videos])
    pipe.feed_input(s.frame_indices, [np.asarray(i, dtype=np.int32) for i in indices])
    (out,) = pipe.run()
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(out))]
