"""What each GPU generation's video decoder (NVDEC) decodes, for the codecs DALI reads.

The probe of a ``--decode dali`` repository refuses, with the code ``dali_unsupported``, a file
whose codec, bit depth or chroma subsampling the NVDEC of the repository's GPU
(``config.serving.target_gpu``, ``vidcls export --gpu``) cannot decode, before DALI sees it: DALI
decodes H.264/HEVC/AV1 on NVDEC only, and a format NVDEC lacks is an internal DALI error at
``video_decode`` otherwise. A ``--decode cpu`` repository (PyAV) takes every such file.

Source: NVIDIA Video Codec SDK 13.0, NVDEC Application Note, table "NVDEC Hardware Capabilities"
(https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvdec-application-note/index.html),
columns "Turing/GA100/Hopper GPUs", "GA10x and ADA GPUs", "Blackwell GPUs". Its rows name
profiles; this table spells each as the pictures it allows:

- H.264 Baseline/Main/High: 8-bit 4:2:0 (High also 4:0:0); High 10 and High 4:2:2 (10-bit 4:2:0,
  8/10-bit 4:2:2): Blackwell only; High 4:4:4: no column.
- HEVC Main/Main 10: 8/10-bit 4:2:0; "HEVC 444 decoding" (bit depth not given there: 8-bit is what
  we accept); Main 4:2:2 10/12: Blackwell only.
- VP8: 8-bit 4:2:0. VP9: Profile 0 only (8-bit 4:2:0; the table names no 10-bit profile).
- AV1 Main (8/10-bit 4:2:0 and 4:0:0): GA10x/Ada and Blackwell; not GA100 or Hopper.

Where the table is silent we refuse: a refused file still classifies on a ``--decode cpu``
repository, while one accepted wrongly fails inside DALI. Torch-free: the probe imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

# (codec as vidcls.video.codec_name gives it, chroma subsampling) -> the highest bit depth NVDEC decodes.
Formats = dict[tuple[str, str], int]

_TURING_GA100_HOPPER: Formats = {
    ("h264", "4:2:0"): 8, ("h264", "4:0:0"): 8,
    ("hevc", "4:2:0"): 10, ("hevc", "4:4:4"): 8,
    ("vp8", "4:2:0"): 8,
    ("vp9", "4:2:0"): 8,
}
_GA10X_ADA: Formats = {**_TURING_GA100_HOPPER, ("av1", "4:2:0"): 10, ("av1", "4:0:0"): 10}
_BLACKWELL: Formats = {**_GA10X_ADA, ("h264", "4:2:0"): 10, ("h264", "4:2:2"): 10, ("hevc", "4:2:2"): 12}


@dataclass(frozen=True)
class Architecture:
    name: str  # as NVIDIA's table names the column
    formats: Formats


ARCHITECTURES: dict[str, Architecture] = {
    "ga100": Architecture("Ampere GA100", _TURING_GA100_HOPPER),
    "hopper": Architecture("Hopper GH100", _TURING_GA100_HOPPER),
    "ada": Architecture("Ada", _GA10X_ADA),
    "blackwell": Architecture("Blackwell", _BLACKWELL),
}

# The GPUs a deployment names (``vidcls export --gpu``) and their architecture.
GPUS: dict[str, str] = {
    "a100": "ga100", "a30": "ga100",
    "h100": "hopper", "h200": "hopper",
    "l4": "ada", "l40": "ada", "l40s": "ada",
    "b200": "blackwell", "rtx-pro-6000": "blackwell",
}
DEFAULT_GPU = "a100"

_CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "vp8": "VP8", "vp9": "VP9", "av1": "AV1"}


def architecture(gpu: str) -> Architecture:
    try:
        return ARCHITECTURES[GPUS[gpu]]
    except KeyError:
        raise ValueError(f"unknown GPU {gpu!r}; choose from {', '.join(GPUS)}") from None


def refusal(gpu: str, codec: str, bit_depth: int | None, chroma: str | None, profile: str | None = None) -> str | None:
    """Why ``gpu``'s NVDEC cannot decode this stream (one sentence), or None when it can."""
    arch = architecture(gpu)
    what = _CODEC_NAMES.get(codec, codec) + (f" {profile}" if profile else "")
    if bit_depth is None or chroma is None:
        return f"the bit depth and chroma subsampling of this {what} stream cannot be read from its headers"
    here = {c: b for (k, c), b in arch.formats.items() if k == codec}
    shape = f"{bit_depth}-bit {chroma}"
    if not here:
        return f"{what} is not decoded by the NVDEC of {gpu.upper()} ({arch.name})"
    if chroma not in here or bit_depth > here[chroma]:
        can = ", ".join(f"{c} up to {b}-bit" for c, b in sorted(here.items()))
        return f"{what} ({shape}) is not decoded by the NVDEC of {gpu.upper()} ({arch.name}; {_CODEC_NAMES.get(codec, codec)}: {can})"
    return None


def table_rows() -> list[tuple[str, str, dict[str, str]]]:
    """(codec, chroma, {architecture key: highest bit depth or '-'}) for docs and tests."""
    keys = sorted({k for arch in ARCHITECTURES.values() for k in arch.formats},
                  key=lambda k: (list(_CODEC_NAMES).index(k[0]), k[1]))
    return [(codec, chroma, {a: (f"{arch.formats[(codec, chroma)]}-bit" if (codec, chroma) in arch.formats else "-")
                             for a, arch in ARCHITECTURES.items()}) for codec, chroma in keys]
