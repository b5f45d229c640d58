"""Which files a run covers: files, folders (recursive) and list files, and the one rule for
"is this a video file".

The rule is the file name extension of a container the probe allows
(:meth:`vidcls.config.InputLimits.video_extensions`), so folder discovery (``vidcls classify``,
``vidcls export --int8-calibration``), feature extraction and the probe's allow-list agree: a
folder never yields a file of a refused container, and never drops a file of an allowed one.
Hidden files (``.DS_Store``, macOS ``._name.mp4`` resource forks) are not videos.

A path given explicitly is always taken, even with an unusual extension, since the user named it
(``vidcls classify`` refuses one that does not exist before it starts; an entry of a list file that
has gone is reported per file). Every path is keyed by its absolute form: that
key is what ``vidcls classify --resume`` matches on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from vidcls.config import InputLimits


def path_key(path: str | os.PathLike) -> str:
    """The identity of an input file in the output (absolute, symlinks kept as given)."""
    return os.path.abspath(os.fspath(path))


def not_a_video(path: str | os.PathLike, limits: InputLimits | None = None) -> str | None:
    """Why a file found in a folder is not taken as a video (None: it is one)."""
    name = os.path.basename(os.fspath(path))
    if name.startswith("."):
        return "hidden file"
    ext = os.path.splitext(name)[1].lower()
    if ext not in (limits or InputLimits()).video_extensions():
        return f"not a video file ({ext or 'no extension'}; the allowed containers' extensions are taken)"
    return None


def read_list_file(list_file: str | os.PathLike) -> list[str]:
    """One path per line; blank lines and ``#`` comments skipped. Relative paths are relative to
    the current directory, as if they had been typed on the command line."""
    entries = []
    for line in Path(list_file).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def _walk(folder: str) -> Iterator[str]:
    # Sorted walk: the same folder gives the same order (reproducible progress and output).
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield os.path.join(root, name)


def discover(paths: Iterable[str], list_files: Iterable[str] = (),
             limits: InputLimits | None = None) -> list[tuple[str, str | None]]:
    """Every file under ``paths`` (``@file`` = a list file) and ``list_files``, once each, as
    (absolute path, why it is not a video or None). Explicit paths always count as videos."""
    pending: list[str] = []
    for p in paths:
        pending.extend(read_list_file(p[1:]) if p.startswith("@") and len(p) > 1 else [p])
    for lf in list_files:
        pending.extend(read_list_file(lf))
    seen: set[str] = set()
    out: list[tuple[str, str | None]] = []
    for p in pending:
        found = ((f, not_a_video(f, limits)) for f in _walk(p)) if os.path.isdir(p) else [(p, None)]
        for f, why in found:
            key = path_key(f)
            if key not in seen:
                seen.add(key)
                out.append((key, why))
    return out


def collect_inputs(paths: Iterable[str], list_files: Iterable[str] = (),
                   limits: InputLimits | None = None) -> list[str]:
    """The video files among :func:`discover`'s (unique absolute paths, in order)."""
    return [p for p, why in discover(paths, list_files, limits) if why is None]
