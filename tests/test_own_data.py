"""A user's own data: class folders however they are written, a class set of one's own, and a
config to start from (``vidcls config``), through to served classification with those classes.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from vidcls.cli import main as cli_main
from vidcls.config import VidclsConfig, class_index


def test_class_folders_match_without_case_or_separators():
    classes = VidclsConfig().classes
    assert class_index("Flat_Content", classes) == 1
    for name in ("animation", "ANIMATION", "flat content", "Flat-Content", "natural_content", "Natural Content"):
        assert class_index(name, classes) is not None, name
    assert class_index("flatcontent", classes) == 1  # separators do not count
    assert class_index("cartoons", classes) is None and class_index("Animations", classes) is None


def test_extract_lists_lowercase_and_spaced_folders_and_warns_about_others(tmp_path, h264_video, capfd):
    from vidcls.training.extract import list_videos

    for folder in ("animation", "Flat Content", "gaming", "misc"):
        (tmp_path / "train" / folder).mkdir(parents=True)
        shutil.copyfile(h264_video, tmp_path / "train" / folder / "a.mp4")
    items = list_videos(tmp_path, "train", VidclsConfig().classes)
    assert [(it.video_id, it.label) for it in items] == [
        ("train/Flat Content/a.mp4", 1), ("train/animation/a.mp4", 0), ("train/gaming/a.mp4", 2)]
    assert "train/misc is not a class folder" in capfd.readouterr().err


def test_config_command_prints_a_config_extract_accepts(tmp_path, capfd):
    assert cli_main(["config"]) == 0
    assert VidclsConfig.from_json(capfd.readouterr().out) == VidclsConfig()
    out = tmp_path / "mine.json"
    assert cli_main(["config", "--preset", "tiny", "--classes", "Cat", "Dog", "Bird", "--backbone", "tiny",
                     "-o", str(out)]) == 0
    config = VidclsConfig.load(out)
    assert config.classes == ("Cat", "Dog", "Bird") and config.temporal.num_classes == 3
    assert config.num_frames == VidclsConfig.tiny().num_frames
    with pytest.raises(ValueError, match="differ only in case"):
        VidclsConfig().with_classes(["Cat", "cat"])


@pytest.mark.server
def test_a_class_set_of_ones_own_is_served_and_classified(tmp_path, tmp_path_factory, client_videos, capfd):
    """Three classes of one's own: the repository's labels and the ensemble's declared classes
    are the config's, and `vidcls classify` learns them from the server (its output columns)."""
    import torch

    from tests.fixtures.serving import running_server
    from vidcls.checkpoint import save_model
    from vidcls.export.repository import build_repository
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    config_file = tmp_path / "mine.json"
    assert cli_main(["config", "--preset", "tiny", "--classes", "Cat", "Dog", "Bird", "-o", str(config_file)]) == 0
    config = VidclsConfig.load(config_file).replace(num_models=1)
    torch.manual_seed(config.seed)
    save_model(tmp_path / "ckpts" / "model_0", SuperEnhancedTemporalModel(config.temporal).eval(), config,
               meta={"seed": config.seed, "backbone_weights": "none"})
    repo = build_repository(tmp_path / "ckpts", tmp_path / "repo", target="cpu")
    assert (repo / "vidcls" / "labels.txt").read_text() == "Cat\nDog\nBird\n"
    server_gen = running_server(repo, tmp_path_factory, name="own_classes")
    server = next(server_gen)
    try:
        out = tmp_path / "out.csv"
        videos = [str(p) for p in client_videos["good"]]
        assert cli_main(["classify", *videos, "--url", server.grpc_url, "-o", str(out), "--no-progress", "-q"]) == 0
    finally:
        next(server_gen, None)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(videos)
    assert {"Cat", "Dog", "Bird"} <= set(rows[0]) and "Animation" not in rows[0]
    for row in rows:
        assert row["class"] in ("Cat", "Dog", "Bird") and not row["error"]
        assert sum(float(row[c]) for c in ("Cat", "Dog", "Bird")) == pytest.approx(1.0, abs=1e-5)
    text = (repo / "vidcls" / "config.pbtxt").read_text()
    text = text[text.index(f'key: "{config.serving.classes_parameter}"'):]
    declared = json.loads(text.split('string_value: "')[1].split('"\n')[0].replace('\\"', '"'))
    assert declared == ["Cat", "Dog", "Bird"]
