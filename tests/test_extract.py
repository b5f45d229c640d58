"""Stage 1: HDF5 feature files (both ways with the reference format), extraction, resume,
bad files, shard merge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from vidcls.cli import main
from vidcls.config import VidclsConfig
from vidcls.models.backbone import build_backbone, extract_features
from vidcls.sampling import multiscale
from vidcls.training.extract import extract_videos, list_videos, merge_shards
from vidcls.training.features_h5 import FeatureWriter, read_features, split_path
from vidcls.video import load_frames


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_file(a: Path, b: Path) -> None:
    """Same datasets (values, dtypes, shapes) and same attributes."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa) == set(fb)
        for name in fa:
            assert fa[name].dtype == fb[name].dtype and fa[name].shape == fb[name].shape, name
            assert np.array_equal(fa[name][:], fb[name][:]), name
        assert {k: str(v) for k, v in fa.attrs.items()} == {k: str(v) for k, v in fb.attrs.items()}


# ---- the file format ----------------------------------------------------------------------
def test_our_file_reads_like_a_reference_file(tmp_path, tiny_config):
    path = tmp_path / "train_features_multiscale.h5"
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 128)).astype(np.float32) for n in (tiny_config.seq_len, 9)]
    with FeatureWriter(path, tiny_config, "none") as w:
        w.append("a.mp4", seqs[0], 2)
        w.append("b.mp4", seqs[1], 1)
    # Read it the way the reference's dataset code does: plain h5py, the standard names only.
    with h5py.File(path, "r") as f:
        feats, labels, nf = f["features"][:], f["labels"][:], f["num_frames"][:]
        assert feats.dtype == np.float32 and feats.shape == (2, tiny_config.seq_len, 128)
        assert labels.dtype == np.int64 and nf.dtype == np.int32
        assert f["features"].compression == "gzip" and f["features"].compression_opts == 4
        assert f.attrs["num_videos"] == 2 and f.attrs["max_frames"] == tiny_config.seq_len
        assert f.attrs["feature_dim"] == 128 and bool(f.attrs["multi_scale"]) is True
        assert json.loads(f.attrs["category_mapping"]) == {c: i for i, c in enumerate(tiny_config.classes)}
        assert f["features"].chunks == (1, tiny_config.seq_len, 128)  # one video per chunk
        assert VidclsConfig.from_json(f.attrs["vidcls_config"]) == tiny_config
    np.testing.assert_array_equal(feats[0], seqs[0])
    np.testing.assert_array_equal(feats[1, :9], seqs[1])
    assert not feats[1, 9:].any() and list(nf) == [tiny_config.seq_len, 9] and list(labels) == [2, 1]
    fs = read_features(path)
    assert fs.video_ids == ["a.mp4", "b.mp4"] and fs.config == tiny_config and fs.backbone_weights == "none"


def test_reference_file_reads_with_ours(tmp_path):
    """A file as the reference wrote it: no video_ids, no config, its own class order and names."""
    path = tmp_path / "test_features_multiscale.h5"
    feats = np.random.default_rng(1).normal(size=(3, 73, 1280)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats, compression="gzip", compression_opts=4)
        f.create_dataset("labels", data=np.array([0, 1, 3], np.int64))
        f.create_dataset("num_frames", data=np.array([73, 73, 73], np.int32))
        f.attrs["num_videos"] = 3
        f.attrs["max_frames"] = 73
        f.attrs["feature_dim"] = 1280
        f.attrs["multi_scale"] = True
        f.attrs["category_mapping"] = json.dumps(
            {"Gaming": 0, "Animation": 1, "Natural Content": 2, "Flat Content": 3})
    fs = read_features(path)
    assert fs.config.backbone == "efficientnet_v2_s" and fs.config.feature_dim == 1280
    assert list(fs.labels) == [2, 0, 1]  # remapped by name into our class order
    np.testing.assert_array_equal(fs.features, feats)
    assert len(fs.video_ids) == 3 and fs.backbone_weights == "imagenet"


def test_crash_mid_append_is_cut_back(tmp_path, tiny_config):
    path = tmp_path / "f.h5"
    with FeatureWriter(path, tiny_config, "none") as w:
        w.append("a", np.ones((tiny_config.seq_len, 128), np.float32), 0)
    with h5py.File(path, "a") as f:  # what a crash between resize and commit leaves behind
        for name in ("features", "labels", "num_frames", "video_ids"):
            f[name].resize(2, axis=0)
    with FeatureWriter(path, tiny_config, "none") as w:
        assert len(w) == 1 and w.video_ids() == ["a"]
        w.append("b", np.zeros((tiny_config.seq_len, 128), np.float32), 1)
    assert read_features(path).video_ids == ["a", "b"]


def test_resume_refuses_other_settings(tmp_path, tiny_config):
    path = tmp_path / "f.h5"
    FeatureWriter(path, tiny_config, "none").close()
    with pytest.raises(ValueError, match="backbone_weights"):
        FeatureWriter(path, tiny_config, "weights.pt")


# ---- extraction ---------------------------------------------------------------------------
def test_extracted_features_are_backbone_once_then_multiscale(tiny_feature_dir, synth_videos, tiny_config):
    fs = read_features(split_path(tiny_feature_dir, "train"))
    items = list_videos(synth_videos, "train", tiny_config.classes)
    assert fs.video_ids == [it.video_id for it in items] == sorted(fs.video_ids)
    assert list(fs.labels) == [it.label for it in items]
    assert (fs.num_frames == tiny_config.seq_len).all()
    frames, _ = load_frames(items[0].path, tiny_config)
    feats = extract_features(build_backbone(tiny_config, "none"), frames, tiny_config.backbone_batch)
    np.testing.assert_array_equal(fs.features[0], multiscale(feats.numpy(), tiny_config.scales))


def _subset(src: Path, dst: Path, split: str = "train", per_class: int = 2) -> Path:
    for folder in sorted((src / split).iterdir()):
        (dst / split / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[:per_class]:
            shutil.copy(f, dst / split / folder.name / f.name)
    return dst


def test_bad_files_are_reported_and_skipped(tmp_path, synth_videos, tiny_config):
    data = _subset(synth_videos, tmp_path / "data", per_class=1)
    good = next((data / "train" / "Gaming").iterdir()).read_bytes()
    (data / "train" / "Gaming" / "corrupt.mp4").write_bytes(good[:200] + bytes(range(256)) * 40)
    (data / "train" / "Animation" / "notes.mp4").write_text("this is a text file, not a video\n")
    out = tmp_path / "feat"
    assert main(["extract", str(data), str(out), "--preset", "tiny", "--splits", "train", "--no-progress"]) == 0
    fs = read_features(split_path(out, "train"))
    assert len(fs) == 4 and "train/Animation/notes.mp4" not in fs.video_ids
    errors = [json.loads(line) for line in (out / "train_errors.jsonl").read_text().splitlines()]
    assert sorted(e["video_id"] for e in errors) == ["train/Animation/notes.mp4", "train/Gaming/corrupt.mp4"]
    assert all(e["code"] and e["error"] for e in errors)


def test_resume_after_interruption_equals_uninterrupted(tmp_path, synth_videos, tiny_config):
    items = list_videos(synth_videos, "train", tiny_config.classes)
    backbone = build_backbone(tiny_config, "none")
    straight = tmp_path / "straight.h5"
    extract_videos(items, straight, tiny_config, backbone, "none", progress=False)
    resumed = tmp_path / "resumed.h5"
    first = extract_videos(items, resumed, tiny_config, backbone, "none", progress=False, stop_after=3)
    assert first.stopped_early and first.added == 3
    second = extract_videos(items, resumed, tiny_config, backbone, "none", progress=False)
    assert (second.skipped, second.added) == (3, len(items) - 3)
    assert_same_file(straight, resumed)


def test_killed_process_resumes(tmp_path, synth_videos, tiny_config):
    """SIGKILL a real `vidcls extract` midway, run it again: same file as an uninterrupted run."""
    data = _subset(synth_videos, tmp_path / "data")
    cmd = [sys.executable, "-m", "vidcls.cli", "extract", str(data), str(tmp_path / "out"),
           "--preset", "tiny", "--splits", "train", "--verbose", "--no-progress", "--threads", "1"]
    # --verbose: one "done <id>" line per committed video, on stderr with the other progress lines
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    done = 0
    for line in proc.stderr:
        done += line.startswith("done ")
        if done == 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert done == 3 and proc.returncode == -signal.SIGKILL
    with h5py.File(tmp_path / "out" / "train_features_multiscale.h5", "r") as f:
        assert 3 <= f.attrs["num_videos"] < 8
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    straight = tmp_path / "straight.h5"
    extract_videos(list_videos(data, "train", tiny_config.classes), straight, tiny_config,
                   build_backbone(tiny_config, "none"), "none", progress=False)
    assert_same_file(tmp_path / "out" / "train_features_multiscale.h5", straight)


def test_merged_shards_equal_single_file(tmp_path, synth_videos, tiny_config):
    items = list_videos(synth_videos, "train", tiny_config.classes)
    backbone = build_backbone(tiny_config, "none")
    single = tmp_path / "single.h5"
    extract_videos(items, single, tiny_config, backbone, "none", progress=False)
    # Shards as a distributed driver would cut them: interleaved, not in sorted order.
    shards = []
    for k in range(3):
        shard = tmp_path / f"shard_{k}.h5"
        extract_videos(items[k::3][::-1], shard, tiny_config, backbone, "none", progress=False)
        shards.append(shard)
    merged = merge_shards(shards, tmp_path / "merged.h5")
    assert_same_file(single, merged)
