"""A benchmark video set closer to what the four classes look like than panning textures.

Two clips per class, generated and encoded on the fly (cached in the benchmark's work folder):

- Flat Content: a slide deck (each slide held for seconds, no pointer: exact repeats after decode)
  and a terminal (typing in bursts, output at Enter, a blinking cursor while nobody types);
- Animation: cartoon shapes (vidcls.training.synth.animation_frames) drawn "on twos" (each
  drawing held for two frames, as hand-drawn animation is);
- Gaming: a textured floor under fast camera motion and a HUD (synth.gaming_frames);
- Natural Content: a panning camera over a fractal landscape with sensor noise (synth.natural_frames).

H.264 and VP9 alternate. What repeats exactly after decode and resize is up to the encoder, as with
real files (x264 may refine a held picture once after a cut).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

SIZE = (320, 240)


def _rect(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, color) -> None:
    frame[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = color


def slide_deck(n: int, size=SIZE, seed: int = 0, slides: int = 5) -> Iterator[np.ndarray]:
    """``slides`` slides (title bar, heading, text lines, a bar chart on some), each held n/slides frames."""
    w, h = size
    rng = np.random.default_rng(seed)
    pages = []
    for k in range(slides):
        page = np.full((h, w, 3), 248, np.uint8)
        accent = rng.integers(40, 200, 3)
        _rect(page, 0, 0, w, h // 10, accent)
        _rect(page, w // 12, h // 6, w // 12 + int(w * rng.uniform(0.4, 0.7)), h // 6 + h // 18, accent // 2)
        y = h // 3
        while y < h - h // 8:
            _rect(page, w // 12, y, w // 12 + int(w * rng.uniform(0.3, 0.8)), y + h // 48, (90, 90, 90))
            y += h // 16
        if k % 2:
            for b in range(5):
                top = int(h * rng.uniform(0.45, 0.8))
                _rect(page, w * 6 // 10 + b * w // 14, top, w * 6 // 10 + b * w // 14 + w // 20, h * 85 // 100,
                      rng.integers(60, 220, 3))
        pages.append(page)
    hold = -(-n // slides)
    for i in range(n):
        yield pages[min(i // hold, slides - 1)]


def terminal(n: int, size=SIZE, seed: int = 0) -> Iterator[np.ndarray]:
    """A shell session: a command typed a character per frame, its output at once, then a pause in
    which only the cursor blinks (every 12 frames); the screen scrolls when full."""
    w, h = size
    rng = np.random.default_rng(seed)
    cw, ch = 6, 10
    cols, rows = w // cw, h // ch
    glyphs = (rng.random((64, ch - 2, cw - 1)) < 0.45)  # a made-up 64-glyph font
    screen = np.full((rows, cols), -1, np.int64)  # glyph per cell, -1 = blank
    row = col = 0
    plan: list[tuple[str, int]] = []  # ("type", count) | ("output", lines) | ("pause", frames)
    while sum(c for k, c in plan if k in ("type", "pause")) < n + 50:
        plan += [("type", int(rng.integers(6, 30))), ("output", int(rng.integers(1, 6))),
                 ("pause", int(rng.integers(20, 60)))]

    def newline():
        nonlocal row, col
        row, col = row + 1, 0
        if row >= rows:
            screen[:-1] = screen[1:]
            screen[-1] = -1
            row = rows - 1

    def render(i: int) -> np.ndarray:
        frame = np.full((h, w, 3), (24, 26, 30), np.uint8)
        for r, c in zip(*np.nonzero(screen >= 0)):
            cell = frame[r * ch + 1:r * ch + ch - 1, c * cw:c * cw + cw - 1]
            cell[glyphs[screen[r, c]]] = (200, 220, 200)
        if (i // 12) % 2 == 0:
            _rect(frame, col * cw, row * ch + 1, col * cw + cw - 1, row * ch + ch - 1, (200, 220, 200))
        return frame

    i = 0
    for kind, count in plan:
        if kind == "output":
            for _ in range(count):
                newline()
                length = int(rng.integers(10, cols))
                screen[row, :length] = rng.integers(0, 64, length)
            newline()
            continue
        for _ in range(count):
            if kind == "type":
                screen[row, col] = int(rng.integers(0, 64))
                col += 1
                if col >= cols:
                    newline()
            yield render(i)
            i += 1
            if i >= n:
                return


def on_twos(frames: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Each drawing held for two frames."""
    for k, frame in enumerate(frames):
        for j in range(2):
            if 2 * k + j < n:
                yield frame


def _synth(name: str) -> Callable:
    from vidcls.training import synth

    return getattr(synth, name)


def clips() -> list[tuple[str, int, Callable[[int, int], Iterator[np.ndarray]], str]]:
    """(name, frames, frames(n, seed) generator, codec) of each clip of the set."""
    w, h = SIZE

    def synth(name):
        return lambda n, seed: _synth(name)(np.random.default_rng(seed), w, h, n)

    return [
        ("slides", 250, lambda n, seed: slide_deck(n, SIZE, seed), "libx264"),
        ("terminal", 300, lambda n, seed: terminal(n, SIZE, seed), "libx264"),
        ("animation", 200, lambda n, seed: on_twos(_synth("animation_frames")(np.random.default_rng(seed), w, h,
                                                                              n // 2 + 1), n), "libx264"),
        ("animation", 150, lambda n, seed: on_twos(_synth("animation_frames")(np.random.default_rng(seed), w, h,
                                                                              n // 2 + 1), n), "libvpx-vp9"),
        ("game", 225, synth("gaming_frames"), "libx264"),
        ("game", 175, synth("gaming_frames"), "libvpx-vp9"),
        ("camera", 275, synth("natural_frames"), "libx264"),
        ("camera", 125, synth("natural_frames"), "libvpx-vp9"),
    ]


def make_mix_videos(out: Path, count: int | None = None) -> list[Path]:
    """The set's clips (the first ``count``), encoded once into ``out`` and reused."""
    from bench_serving import VP9_FAST, encode_once

    paths = []
    for i, (name, n, frames, codec) in enumerate(clips()[:count]):
        vp9 = codec == "libvpx-vp9"
        paths.append(encode_once(out / f"mix_{i}_{name}_{n}f{'.webm' if vp9 else '.mp4'}", frames(n, 100 + i),
                                 codec, VP9_FAST if vp9 else None, 25.0))
    return paths
