"""What each GPU's NVDEC decodes (vidcls.nvdec) and the probe of a --decode dali repository.

Real files encoded here with PyAV's libx264, libx265 and libsvtav1: the formats NVIDIA's Video
Codec SDK 13 matrix gives to some GPU generations only. The expectations below are written out
per GPU (not read from vidcls.nvdec), so a wrong table fails them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from vidcls import nvdec

ROOT = Path(__file__).resolve().parents[1]

# name: (encoder, pix_fmt, container, (codec, profile, bit depth, chroma) the probe must read)
FILES = {
    "h264_8bit": ("libx264", "yuv420p", "mp4", ("h264", "High", 8, "4:2:0")),
    "h264_10bit": ("libx264", "yuv420p10le", "mp4", ("h264", "High 10", 10, "4:2:0")),
    "h264_422": ("libx264", "yuv422p", "mkv", ("h264", "High 4:2:2", 8, "4:2:2")),
    "hevc_10bit": ("libx265", "yuv420p10le", "mp4", ("hevc", "Main 10", 10, "4:2:0")),
    "hevc_422": ("libx265", "yuv422p", "mp4", ("hevc", "Rext", 8, "4:2:2")),
    "av1": ("libsvtav1", "yuv420p", "mp4", ("av1", "Main", 8, "4:2:0")),
}
# GPU -> the files its NVDEC decodes (NVDEC Application Note, Video Codec SDK 13.0).
DECODES = {
    "a100": {"h264_8bit", "hevc_10bit"},
    "h100": {"h264_8bit", "hevc_10bit"},
    "l4": {"h264_8bit", "hevc_10bit", "av1"},
    "b200": set(FILES),
}


@pytest.fixture(scope="module")
def nvdec_files(tmp_path_factory):
    from tests.fixtures.videos import moving_frames
    from vidcls.video import encode_video

    root = tmp_path_factory.mktemp("nvdec")
    frames = moving_frames(12, 64, 48, 3)
    return {name: encode_video(root / f"{name}.{ext}", frames, codec=enc, pix_fmt=pix)
            for name, (enc, pix, ext, _) in FILES.items()}


def test_probe_reads_profile_bit_depth_and_chroma_from_the_headers(nvdec_files):
    from vidcls.video import probe

    for name, path in nvdec_files.items():
        info = probe(path)
        assert (info.codec, info.profile, info.bit_depth, info.chroma) == FILES[name][3], name


def _probe_model(config, decoder: str, gpu: str):
    from vidcls.triton_models.probe import ProbeModel

    model = ProbeModel()
    model.config = config.replace(serving=dataclasses.replace(config.serving, target_gpu=gpu))
    model.model_config = {"parameters": {"decoder": {"string_value": decoder}}}
    model.setup()
    return model


@pytest.mark.parametrize("gpu", sorted(DECODES))
def test_dali_probe_refuses_what_the_gpus_nvdec_cannot_decode(gpu, nvdec_files, serving_config):
    dali = _probe_model(serving_config, "dali", gpu)
    cpu = _probe_model(serving_config, "cpu", gpu)
    names = sorted(nvdec_files)
    batch = [{serving_config.serving.video: np.frombuffer(nvdec_files[n].read_bytes(), np.uint8)[None]} for n in names]
    for name, result, cpu_result in zip(names, dali.process(batch), cpu.process(batch)):
        assert isinstance(cpu_result, dict), f"the --decode cpu probe takes {name}: {cpu_result}"
        if name in DECODES[gpu]:
            assert isinstance(result, dict), f"{gpu} decodes {name}: {result}"
        else:
            assert getattr(result, "code", None) == "dali_unsupported", f"{gpu} must refuse {name}: {result}"
            assert "--decode cpu" in str(result) and gpu.upper() in str(result)


def test_a_cpu_decode_repository_decodes_every_one_of_them(nvdec_files, serving_config):
    from vidcls.video import load_frames

    for name, path in nvdec_files.items():
        frames, _ = load_frames(path, serving_config)
        assert frames.shape[0] == serving_config.num_frames and frames.std() > 1, name


def test_the_gpu_is_chosen_at_export_and_recorded(tmp_path, serving_config):
    from vidcls.config import VidclsConfig
    from vidcls.export.repository import ExportRefused, build_repository

    repo = build_repository(None, tmp_path / "r", target="gpu", configs_only=True, config=serving_config, gpu="l4")
    assert VidclsConfig.load(repo / "vidcls_config.json").serving.target_gpu == "l4"
    repo = build_repository(None, tmp_path / "d", target="gpu", configs_only=True, config=serving_config)
    assert VidclsConfig.load(repo / "vidcls_config.json").serving.target_gpu == nvdec.DEFAULT_GPU == "a100"
    with pytest.raises(ExportRefused, match="gpu target"):
        build_repository(None, tmp_path / "c", target="cpu", configs_only=True, config=serving_config, gpu="l4")
    with pytest.raises(ValueError, match="target_gpu"):
        serving_config.replace(serving=dataclasses.replace(serving_config.serving, target_gpu="a1000"))


def test_docs_table_is_the_code_table():
    """docs/deployment.md's NVDEC table has one row per (codec, chroma) with the code's bit depths."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert "video-codec-sdk/13.0/nvdec-application-note" in doc  # the source is cited
    for codec, chroma, depths in nvdec.table_rows():
        cells = [nvdec._CODEC_NAMES[codec], chroma] + [depths[a] for a in nvdec.ARCHITECTURES]
        row = r"\|\s*" + r"\s*\|\s*".join(re.escape(c) for c in cells) + r"\s*\|"
        assert re.search(row, doc), f"docs/deployment.md has no row {cells}"
    for gpu in nvdec.GPUS:
        assert f"`{gpu}`" in doc, gpu
