"""vidcls synth: deterministic, varied, real encoded clips whose classes look different."""

from __future__ import annotations

import numpy as np

from vidcls.cli import main
from vidcls.config import CLASSES
from vidcls.training.synth import CODECS, MAX_FRAMES, MIN_FRAMES, clip_frames, plan, synthesize
from vidcls.video import probe


def test_plan_is_deterministic_and_varied():
    specs = plan(per_class=12, val_per_class=3, test_per_class=3, seed=5)
    assert specs == plan(per_class=12, val_per_class=3, test_per_class=3, seed=5)
    assert specs != plan(per_class=12, val_per_class=3, test_per_class=3, seed=6)
    assert len(specs) == 4 * 18
    assert {s.label for s in specs} == set(CLASSES)
    assert {s.codec for s in specs} == set(CODECS)
    for label in CLASSES:  # every class gets every codec, so a codec is never a class cue
        assert {s.codec for s in specs if s.label == label and s.split == "train"} == set(CODECS)
    assert all(MIN_FRAMES <= s.frames <= MAX_FRAMES for s in specs)
    assert any(s.frames < 64 for s in specs) and any(s.frames > 64 for s in specs)
    assert all(s.width % 2 == 0 and s.height % 2 == 0 for s in specs)
    assert min(s.width for s in specs) == 160 and max(s.width for s in specs) <= 640
    assert len({s.fps for s in specs}) > 2 and all(15 <= s.fps <= 30 for s in specs)


def test_frames_are_deterministic():
    spec = plan(1, 0, 0, seed=3)[3]
    a, b = list(clip_frames(spec)), list(clip_frames(spec))
    assert len(a) == spec.frames
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (spec.height, spec.width, 3) and a[0].dtype == np.uint8


def _stats(label: str) -> tuple[float, float, float, float]:
    """(brightness, saturation, motion, flatness) averaged over a few clips of ``label``."""
    out = []
    for spec in [s for s in plan(2, 0, 0, seed=11, sizes=((192, 108),)) if s.label == label]:
        frames = np.stack(list(clip_frames(spec))[:12]).astype(np.float32)
        sat = (frames.max(-1) - frames.min(-1)).mean()
        motion = np.abs(np.diff(frames, axis=0)).mean()
        flat = (np.abs(np.diff(frames, axis=2)).max(-1) == 0).mean()  # share of flat-shaded pixels
        out.append((frames.mean(), sat, motion, flat))
    return tuple(np.mean(out, axis=0))


def test_classes_differ_the_way_real_ones_do():
    anim, flat, game, nat = (_stats(c) for c in CLASSES)
    assert flat[0] > max(anim[0], game[0], nat[0])  # slides: bright white/grey UI
    assert flat[1] < min(anim[1], nat[1])  # and little colour
    assert flat[2] < min(anim[2], game[2], nat[2])  # and little motion
    assert game[2] > anim[2]  # fast camera motion vs smooth cartoon motion
    assert anim[3] > 0.8 and nat[3] < 0.1  # flat shading vs sensor noise and texture


def test_synthesize_writes_real_videos_and_resumes(tmp_path):
    small = dict(sizes=((160, 120), (320, 180)), frame_range=(20, 50))
    paths = synthesize(tmp_path, per_class=1, val_per_class=0, test_per_class=0, seed=1, **small)
    assert len(paths) == 4
    specs = plan(1, 0, 0, seed=1, **small)
    for path, spec in zip(paths, specs):
        assert path == tmp_path / spec.split / spec.label / path.name
        info = probe(path)
        assert info.num_frames == spec.frames
        assert (info.width, info.height) == (spec.width, spec.height)
        assert info.codec == {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}[spec.codec]
    stamp = {p: p.stat().st_mtime_ns for p in paths}
    assert synthesize(tmp_path, per_class=1, val_per_class=0, test_per_class=0, seed=1, **small) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamp  # existing clips are kept
    assert not list(tmp_path.rglob("*.partial.*"))


def test_cli(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--per-class", "0", "--val-per-class", "1",
                 "--test-per-class", "0", "--workers", "2", "--seed", "4"]) == 0
    assert len(list((tmp_path / "val").rglob("*.*"))) == 4
    assert "4 clips" in capsys.readouterr().out
