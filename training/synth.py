"""``vidcls synth``: deterministic, procedurally generated labeled videos for the four classes.

Each class imitates what separates real videos of that kind:

- Animation: flat-shaded cartoon shapes with dark outlines gliding smoothly over a plain or
  gradient background.
- Flat_Content: slides / documents / screen recordings: mostly white and grey UI, text lines,
  slow scrolling or slide changes, a mouse cursor; very little motion.
- Gaming: a perspective-textured 3D-ish floor under a sky, fast camera motion, and a HUD
  (health/ammo bars, crosshair, minimap).
- Natural_Content: fractal (multi-octave noise) landscapes in greens, blues and browns, a
  panning camera, sensor noise and a little exposure flicker.

Every clip's content, size, frame rate, length and codec come from a generator seeded by
(seed, split, class, index), so the same arguments always give the same videos. Sizes vary from
160x120 to 640x360, frame rates from 15 to 30, lengths from 24 to 150 frames (many shorter than
the 64 sampled frames) and codecs rotate over H.264 (.mp4), VP9 (.webm) and MPEG-4 Part 2 (.avi).
Only numpy and PyAV are needed.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from vidcls.arguments import non_negative_int, positive_int
from vidcls.config import CLASSES
from vidcls.errors import UsageError
from vidcls.video import encode_video

SPLITS = ("train", "val", "test")

# (width, height), all even (yuv420p). Smaller sizes are listed more often to keep synthesis fast.
SIZES = ((160, 120), (176, 144), (192, 108), (240, 180), (256, 144), (320, 180), (320, 240),
         (160, 120), (240, 180), (256, 192), (384, 216), (480, 270), (640, 360))
FPS_CHOICES = (15, 20, 24, 25, 30)
MIN_FRAMES, MAX_FRAMES = 24, 150

# codec → (suffix, encoder options). Fast presets: these are test fixtures, not archives.
CODECS = {
    "libx264": (".mp4", {"preset": "veryfast", "crf": "23"}),
    "libvpx-vp9": (".webm", {"deadline": "realtime", "cpu-used": "8", "crf": "34", "b": "0"}),
    "mpeg4": (".avi", {"qscale": "4"}),
}


@dataclass(frozen=True)
class ClipSpec:
    split: str
    label: str
    index: int
    width: int
    height: int
    fps: int
    frames: int
    codec: str
    seed: tuple[int, ...]

    @property
    def path(self) -> Path:
        suffix = CODECS[self.codec][0]
        return Path(self.split) / self.label / f"{self.label.lower()}_{self.index:04d}{suffix}"


# ---- small drawing helpers ----------------------------------------------------------------
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float32)


def _upsample(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D array to (h, w) with numpy only."""
    ys = np.linspace(0, a.shape[0] - 1, h, dtype=np.float32)
    xs = np.linspace(0, a.shape[1] - 1, w, dtype=np.float32)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, a.shape[0] - 1), np.minimum(x0 + 1, a.shape[1] - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def _fractal(rng: np.random.Generator, h: int, w: int, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: the rough, self-similar texture of foliage, rock, water."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        coarse = rng.random((max(2, cells * h // max(h, w)) + 1, cells + 1)).astype(np.float32)
        out += amp * _upsample(coarse, h, w)
        total += amp
        amp *= 0.55
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _palette_map(values: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Map [0, 1] values through a colour ramp with ``len(stops)`` RGB stops → float RGB."""
    pos = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(values, pos, stops[:, c]) for c in range(3)], axis=-1)


def _fill_rect(frame: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    h, w = frame.shape[:2]
    xa, xb = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
    ya, yb = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
    if xb > xa and yb > ya:
        frame[ya:yb, xa:xb] = color


# ---- Animation ----------------------------------------------------------------------------
def animation_frames(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    yy, xx = _grid(h, w)
    top, bottom = rng.integers(150, 256, 3), rng.integers(120, 256, 3)
    if rng.random() < 0.4:
        bottom = top  # plain background
    t = (yy / max(h - 1, 1))[..., None]
    background = (top * (1 - t) + bottom * t).astype(np.uint8)
    outline = 2 + min(w, h) // 120
    shapes = []
    for _ in range(int(rng.integers(3, 7))):
        r = float(rng.uniform(0.08, 0.22) * min(w, h))
        shapes.append(dict(
            kind=int(rng.integers(0, 3)), r=r, aspect=float(rng.uniform(0.6, 1.6)),
            cx=float(rng.uniform(r, w - r)), cy=float(rng.uniform(r, h - r)),
            ax=float(rng.uniform(0.1, 0.35) * w), ay=float(rng.uniform(0.05, 0.25) * h),
            fx=float(rng.uniform(0.02, 0.08)), fy=float(rng.uniform(0.02, 0.08)),
            phase=float(rng.uniform(0, 2 * np.pi)),
            color=_saturated(rng)))
    for i in range(n):
        frame = background.copy()
        for s in shapes:  # smooth sinusoidal paths: cartoon motion is eased, not jittery
            cx = s["cx"] + s["ax"] * np.sin(s["fx"] * i * 2 * np.pi / 4 + s["phase"])
            cy = s["cy"] + s["ay"] * np.cos(s["fy"] * i * 2 * np.pi / 4 + s["phase"])
            _draw_shape(frame, xx, yy, s, cx, cy, outline)
        yield frame


def _draw_shape(frame, xx, yy, s, cx, cy, outline) -> None:
    """Outline then fill, computed only inside the shape's bounding box (speed)."""
    h, w = frame.shape[:2]
    reach = s["r"] * max(s["aspect"], 1.0) * 1.5 + outline
    ya, yb = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    xa, xb = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if ya >= yb or xa >= xb:
        return
    box, bx, by = frame[ya:yb, xa:xb], xx[ya:yb, xa:xb] - cx, yy[ya:yb, xa:xb] - cy
    d = _shape_distance(s["kind"], bx, by, s["r"], s["aspect"])
    box[d <= 0] = (20, 20, 20)  # the dark outline ring is what survives the fill below
    box[d <= -outline] = s["color"]
    if s["kind"] == 0:  # a cartoon eye: white disc with a black pupil
        e = np.hypot(bx - s["r"] * 0.3, by + s["r"] * 0.3)
        box[e < s["r"] * 0.22] = (255, 255, 255)
        box[e < s["r"] * 0.1] = (0, 0, 0)


def _shape_distance(kind: int, dx: np.ndarray, dy: np.ndarray, r: float, aspect: float) -> np.ndarray:
    """Approximate signed distance (pixels) to a circle/ellipse (0), box (1) or diamond (2)."""
    if kind == 0:
        return np.hypot(dx / aspect, dy) - r
    if kind == 1:
        return np.maximum(np.abs(dx) / aspect, np.abs(dy)) - r
    return (np.abs(dx) / aspect + np.abs(dy)) * 0.75 - r


def _saturated(rng: np.random.Generator) -> tuple[int, int, int]:
    """A bright, fully saturated cartoon colour (one channel high, one low)."""
    c = [int(rng.integers(0, 80)), int(rng.integers(0, 256)), int(rng.integers(200, 256))]
    rng.shuffle(c)
    return tuple(c)


# ---- Flat_Content -------------------------------------------------------------------------
def flat_frames(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    page_h = h * 3
    page = np.full((page_h, w, 3), int(rng.integers(235, 256)), np.uint8)
    accent = rng.integers(30, 200, 3)
    sidebar = int(w * rng.uniform(0.12, 0.25)) if rng.random() < 0.5 else 0
    if sidebar:
        page[:, :sidebar] = int(rng.integers(200, 232))
    y = int(h * 0.18)
    line_h = max(2, h // 40)
    while y < page_h - line_h * 2:
        x = sidebar + int(w * 0.06)
        if rng.random() < 0.12:  # a heading in the accent colour, taller
            _draw_words(rng, page, x, y, w * 0.6, line_h * 2, accent)
            y += line_h * 4
        elif rng.random() < 0.08:  # a chart / image placeholder box
            bh = int(h * rng.uniform(0.15, 0.3))
            _fill_rect(page, x, y, x + w * 0.4, y + bh, rng.integers(150, 230, 3))
            y += bh + line_h * 2
        else:
            _draw_words(rng, page, x, y, w * rng.uniform(0.4, 0.8), line_h, (70, 70, 70))
            y += line_h * 3
    bar = max(6, h // 12)
    mode = "scroll" if rng.random() < 0.6 else "slides"
    scroll_speed = float(rng.uniform(0.3, 1.5))
    hold = int(rng.integers(10, 40))
    cursor = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.3, 0.8) * h])
    target = cursor.copy()
    for i in range(n):
        if mode == "scroll":  # scroll in bursts: read, then scroll a bit
            offset = int(scroll_speed * max(0, (i % 30) - 20) + (i // 30) * 10 * scroll_speed)
        else:
            offset = (i // hold) * (h - bar)
        offset = min(offset, page_h - h)
        frame = page[offset:offset + h].copy()
        frame[:bar] = (accent * 0.6 + 60).astype(np.uint8)  # title / browser bar
        _fill_rect(frame, w - bar * 3, bar // 4, w - bar // 2, bar - bar // 4, (240, 240, 240))
        if rng.random() < 0.05:
            target = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.2, 0.9) * h])
        cursor += (target - cursor) * 0.2
        _draw_cursor(frame, int(cursor[0]), int(cursor[1]), max(4, h // 30))
        yield frame


def _draw_words(rng, page, x, y, width, height, color) -> None:
    end = x + width
    while x < end:
        word = float(rng.uniform(2, 9)) * height
        _fill_rect(page, x, y, min(x + word, end), y + height, color)
        x += word + height * 1.2


def _draw_cursor(frame: np.ndarray, x: int, y: int, size: int) -> None:
    for k in range(size):
        _fill_rect(frame, x, y + k, x + k // 2 + 1, y + k + 1, (0, 0, 0))


# ---- Gaming -------------------------------------------------------------------------------
def gaming_frames(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    # The 3-D scene renders at half resolution (upscaled 2x, as many games do); the HUD at full.
    for frame, (i, hud) in _gaming_scene(rng, w, h, n):
        frame = frame.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
        _draw_hud(frame, w, h, i, *hud)
        yield frame


def _gaming_scene(rng: np.random.Generator, full_w: int, full_h: int, n: int):
    w, h = (full_w + 1) // 2, (full_h + 1) // 2
    yy, xx = _grid(h, w)
    horizon = h * float(rng.uniform(0.3, 0.45))
    below = yy > horizon + 1
    depth = np.where(below, h * 0.5 / np.maximum(yy - horizon, 1.0), 0).astype(np.float32)
    lateral = (xx - w / 2) / w * 2 * depth
    tex = (_fractal(rng, 64, 64, octaves=3) * 2 - 1) * 30
    c1, c2 = rng.integers(40, 200, 3).astype(np.float32), rng.integers(40, 200, 3).astype(np.float32)
    sky_top, sky_bottom = rng.integers(0, 120, 3).astype(np.float32), rng.integers(100, 256, 3).astype(np.float32)
    t = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    sky = sky_top * (1 - t) + sky_bottom * t
    speed = float(rng.uniform(0.25, 0.6))  # fast forward motion
    turn = float(rng.uniform(0.05, 0.2))
    fog = np.clip(depth / 8.0, 0, 1)[..., None]
    health, ammo = float(rng.uniform(0.3, 1)), float(rng.uniform(0.2, 1))
    mm = max(24, min(full_w, full_h) // 4)
    enemies = rng.random((4, 2))
    for i in range(n):
        yaw = turn * np.sin(i * 0.15) * 3 + i * turn * 0.2
        cos, sin = np.cos(yaw), np.sin(yaw)
        u = lateral * cos - depth * sin + i * speed * np.sin(i * 0.05)
        v = lateral * sin + depth * cos + i * speed
        checker = ((np.floor(u).astype(np.int64) + np.floor(v).astype(np.int64)) & 1)[..., None]
        grain = tex[(v * 8).astype(np.int64) % 64, (u * 8).astype(np.int64) % 64][..., None]
        floor = np.where(checker == 1, c1, c2) + grain
        floor = floor * (1 - fog) + sky_bottom * fog
        frame = np.where(below[..., None], floor, sky).clip(0, 255).astype(np.uint8)
        yield frame, (i, (health, ammo, mm, enemies))


def _draw_hud(frame, w, h, i, health, ammo, mm, enemies) -> None:
    bh, bw = max(4, h // 30), w * 0.3
    hp = max(0.05, health - 0.002 * i)
    _fill_rect(frame, 8, h - 3 * bh, 8 + bw, h - 2 * bh, (40, 40, 40))
    _fill_rect(frame, 8, h - 3 * bh, 8 + bw * hp, h - 2 * bh, (220, 30, 30))
    _fill_rect(frame, 8, h - 1.7 * bh, 8 + bw * ammo, h - 0.7 * bh, (240, 200, 20))
    cx, cy, arm = w // 2, h // 2, max(4, min(w, h) // 25)
    _fill_rect(frame, cx - arm, cy - 1, cx - 2, cy + 1, (0, 255, 0))
    _fill_rect(frame, cx + 2, cy - 1, cx + arm, cy + 1, (0, 255, 0))
    _fill_rect(frame, cx - 1, cy - arm, cx + 1, cy - 2, (0, 255, 0))
    _fill_rect(frame, cx - 1, cy + 2, cx + 1, cy + arm, (0, 255, 0))
    x0, y0 = w - mm - 6, 6  # minimap: dark square, border, enemy dots, player arrow
    _fill_rect(frame, x0 - 2, y0 - 2, x0 + mm + 2, y0 + mm + 2, (200, 200, 200))
    _fill_rect(frame, x0, y0, x0 + mm, y0 + mm, (20, 40, 20))
    for k, (ex, ey) in enumerate(enemies):
        px = x0 + (ex * mm + i * (k + 1) * 0.7) % mm
        py = y0 + (ey * mm + i * 0.5) % mm
        _fill_rect(frame, px - 1, py - 1, px + 2, py + 2, (255, 40, 40))
    _fill_rect(frame, x0 + mm // 2 - 2, y0 + mm // 2 - 2, x0 + mm // 2 + 2, y0 + mm // 2 + 2, (255, 255, 255))


# ---- Natural_Content ----------------------------------------------------------------------
NATURE_PALETTES = (
    np.array([[20, 50, 20], [50, 110, 40], [110, 160, 70], [160, 190, 110]], np.float32),   # forest
    np.array([[10, 40, 90], [30, 90, 150], [90, 150, 190], [200, 220, 230]], np.float32),   # water
    np.array([[60, 40, 20], [120, 90, 50], [170, 140, 90], [210, 190, 150]], np.float32),   # earth
    np.array([[30, 60, 30], [90, 80, 40], [140, 150, 80], [90, 140, 200]], np.float32),     # field
)


def natural_frames(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    pan_x = float(rng.uniform(-2.5, 2.5))
    pan_y = float(rng.uniform(-0.8, 0.8))
    margin_x = int(abs(pan_x) * n) + 2
    margin_y = int(abs(pan_y) * n) + 2
    ch, cw = h + margin_y, w + margin_x
    palette = NATURE_PALETTES[int(rng.integers(len(NATURE_PALETTES)))]
    land = _palette_map(_fractal(rng, ch, cw, octaves=6), palette)
    if rng.random() < 0.6:  # a sky band above a noisy skyline
        sky = _palette_map(_fractal(rng, ch, cw, octaves=3) * 0.4, NATURE_PALETTES[1][1:])
        skyline = (ch * rng.uniform(0.2, 0.45) + _fractal(rng, 1, cw, octaves=4)[0] * ch * 0.15)
        land = np.where((np.arange(ch)[:, None] < skyline[None, :])[..., None], sky, land)
    land = land.astype(np.float32)
    noise_sigma = float(rng.uniform(3, 9))
    # Fresh gaussian noise per frame is the slowest part; a bank of frames at random offsets
    # looks the same (grain that changes every frame) at a fraction of the cost.
    bank = rng.standard_normal((3, h * 2, w * 2, 3), dtype=np.float32) * noise_sigma
    sx = 0 if pan_x >= 0 else margin_x - 1
    sy = 0 if pan_y >= 0 else margin_y - 1
    for i in range(n):
        x, y = int(sx + pan_x * i), int(sy + pan_y * i)
        view = land[y:y + h, x:x + w]
        gain = 1.0 + 0.03 * np.sin(i * 0.3)  # auto-exposure breathing
        k, oy, ox = int(rng.integers(3)), int(rng.integers(h)), int(rng.integers(w))
        noisy = view * gain + bank[k, oy:oy + h, ox:ox + w]
        yield noisy.clip(0, 255).astype(np.uint8)


GENERATORS: dict[str, Callable[..., Iterator[np.ndarray]]] = {
    "Animation": animation_frames,
    "Flat_Content": flat_frames,
    "Gaming": gaming_frames,
    "Natural_Content": natural_frames,
}


# ---- planning and writing -----------------------------------------------------------------
def plan(per_class: int, val_per_class: int, test_per_class: int, seed: int = 0,
         classes=CLASSES, sizes=SIZES, frame_range: tuple[int, int] = (MIN_FRAMES, MAX_FRAMES)) -> list[ClipSpec]:
    """Every clip to make, in a fixed order; each clip's properties come from its own seed.

    ``sizes`` and ``frame_range`` narrow the variety (tests use small, short clips)."""
    counts = {"train": per_class, "val": val_per_class, "test": test_per_class}
    codecs = list(CODECS)
    specs = []
    for s_i, split in enumerate(SPLITS):
        for c_i, label in enumerate(classes):
            for k in range(counts[split]):
                clip_seed = (seed, s_i, c_i, k)
                rng = np.random.default_rng(clip_seed)
                w, h = sizes[int(rng.integers(len(sizes)))]
                specs.append(ClipSpec(
                    split=split, label=label, index=k, width=w, height=h,
                    fps=int(FPS_CHOICES[int(rng.integers(len(FPS_CHOICES)))]),
                    frames=int(rng.integers(frame_range[0], frame_range[1] + 1)),
                    codec=codecs[(k + c_i) % len(codecs)],  # every class gets every codec
                    seed=clip_seed + (1,)))
    return specs


def clip_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    generator = GENERATORS.get(spec.label)
    if generator is None:
        raise ValueError(f"no synthetic generator for class {spec.label!r}")
    return generator(np.random.default_rng(spec.seed), spec.width, spec.height, spec.frames)


def write_clip(out_dir: Path, spec: ClipSpec) -> Path:
    path = Path(out_dir) / spec.path
    tmp = path.with_name(path.stem + ".partial" + path.suffix)  # never leave a half file as a clip
    encode_video(tmp, clip_frames(spec), fps=spec.fps, codec=spec.codec, options=CODECS[spec.codec][1])
    tmp.replace(path)
    return path


def synthesize(out_dir, per_class: int, val_per_class: int = 0, test_per_class: int = 0,
               seed: int = 0, workers: int = 1, progress: bool = False, **plan_options) -> list[Path]:
    """Write the clips into ``out_dir``/{split}/{class}/ and return their paths (plan order).

    Clips that already exist are kept (re-running finishes an interrupted synthesis).
    """
    out_dir = Path(out_dir)
    specs = plan(per_class, val_per_class, test_per_class, seed, **plan_options)
    todo = [s for s in specs if not (out_dir / s.path).exists()]
    bar = _progress(len(todo), progress)
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(write_clip, [out_dir] * len(todo), todo, chunksize=1):
                bar.update(1)
    else:
        for s in todo:
            write_clip(out_dir, s)
            bar.update(1)
    bar.close()
    return [out_dir / s.path for s in specs]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="synth", unit="video", disable=not enabled)


# ---- CLI ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder; clips go to OUT/{train,val,test}/<class>/")
    parser.add_argument("--per-class", type=non_negative_int, default=20, help="training clips per class")
    parser.add_argument("--val-per-class", type=non_negative_int, default=None, help="validation clips per class (default: per-class/4, at least 2)")
    parser.add_argument("--test-per-class", type=non_negative_int, default=None, help="test clips per class (default: per-class/4, at least 2)")
    parser.add_argument("--seed", type=int, default=0, help="same seed and counts → same clips")
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="encoding processes")


def run(args: argparse.Namespace) -> int:
    default_small = max(2, args.per_class // 4)
    val = default_small if args.val_per_class is None else args.val_per_class
    test = default_small if args.test_per_class is None else args.test_per_class
    if not args.per_class + val + test:
        raise UsageError("nothing to make: --per-class, --val-per-class and --test-per-class are all 0")
    start = time.perf_counter()
    paths = synthesize(args.out, args.per_class, val, test, args.seed, args.workers, progress=True)
    print(f"{len(paths)} clips ({args.per_class}/{val}/{test} per class for train/val/test) in "
          f"{args.out} [{time.perf_counter() - start:.1f} s]")
    return 0
