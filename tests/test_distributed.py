"""Distributed Stage 1 on a local Ray instance (CPU): the merged file equals the single-process file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from vidcls.config import VidclsConfig  # noqa: E402
from vidcls.training.distributed import extract_distributed, shard_file, shard_items  # noqa: E402
from vidcls.training.extract import VideoItem, extract_videos, list_videos  # noqa: E402
from vidcls.training.features_h5 import split_path  # noqa: E402


def test_shard_items_contiguous_balanced_and_complete():
    items = [VideoItem(Path(f"{i}.mp4"), 0, f"train/A/{i:02d}.mp4") for i in range(10)]
    shards = shard_items(items, 3)
    assert [len(s) for s in shards] == [4, 3, 3]
    assert [it for s in shards for it in s] == items
    assert len(shard_items(items, 50)) == 10, "never more shards than videos"
    assert shard_items([], 4) == [[]]
    with pytest.raises(ValueError):
        shard_items(items, 0)
    assert shard_file("out", "train", 2, 3).name == "train-shard-00002-of-00003.h5"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, video_factory):
    """7 tiny videos over the 4 classes (two codecs) + one file that does not decode."""
    config = VidclsConfig.tiny()
    root = tmp_path_factory.mktemp("ray_data")
    specs = [("Animation", "libx264"), ("Animation", "libvpx-vp9"), ("Flat_Content", "libx264"),
             ("Gaming", "libx264"), ("Gaming", "libvpx-vp9"), ("Natural_Content", "libx264"),
             ("Natural_Content", "libx264")]
    for i, (cls, codec) in enumerate(specs):
        ext = "webm" if codec == "libvpx-vp9" else "mp4"
        src = video_factory(f"ray_{i}.{ext}", n=20, size=(64, 48), codec=codec, seed=10 + i)
        dst = root / "train" / cls / f"v{i}.{ext}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    (root / "train" / "Gaming" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    return root, config


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single_process_file(dataset, tmp_path_factory):
    import torch

    from vidcls.models.backbone import build_backbone

    root, config = dataset
    out = tmp_path_factory.mktemp("single") / "train_features_multiscale.h5"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks run one thread each: same float summation order
    try:
        summary = extract_videos(list_videos(root, "train", config.classes), out, config,
                                 build_backbone(config, "none"), "none", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary.added == 7 and len(summary.errors) == 1
    return out


def _assert_same_file(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa.keys()) == set(fb.keys())
        for name in fa:
            x, y = fa[name][()], fb[name][()]
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), f"dataset {name} differs"
        assert set(fa.attrs.keys()) == set(fb.attrs.keys())
        for key in fa.attrs:
            assert np.array_equal(fa.attrs[key], fb.attrs[key]), f"attr {key} differs"
        assert fa["features"].compression == fb["features"].compression == "gzip"


def test_ray_extraction_equals_single_process(ray_local, dataset, single_process_file, tmp_path):
    root, config = dataset
    results = extract_distributed(root, tmp_path, config, "none", "cpu", ["train"], shards=3,
                                  cpus_per_worker=1, progress=False)
    summary = results["train"]
    assert summary.shards == 3 and summary.added == 7
    assert [e["video_id"] for e in summary.errors] == ["train/Gaming/broken.mp4"]
    assert (tmp_path / "train_errors.jsonl").read_text().count("\n") == 1
    assert len(list((tmp_path / "shards" / "train").glob("*.h5"))) == 3
    merged = split_path(tmp_path, "train")
    _assert_same_file(merged, single_process_file)

    # A re-run resumes: every shard already holds its videos, nothing is extracted again.
    again = extract_distributed(root, tmp_path, config, "none", "cpu", ["train"], shards=3, progress=False)
    assert again["train"].added == 0 and again["train"].skipped == 7
    _assert_same_file(merged, single_process_file)


def test_cli_extract_ray_flag(ray_local, dataset, single_process_file, tmp_path):
    from vidcls.cli import main

    root, _ = dataset
    rc = main(["extract", str(root), str(tmp_path), "--preset", "tiny", "--splits", "train", "--ray",
               "--shards", "2", "--no-progress", "--drop-shards"])
    assert rc == 0
    _assert_same_file(split_path(tmp_path, "train"), single_process_file)
    assert not list((tmp_path / "shards" / "train").glob("*.h5")), "--drop-shards removes them"
