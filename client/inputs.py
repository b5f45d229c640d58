"""Which files a ``vidcls classify`` run covers: files, folders (recursive) and list files.

A path given explicitly is always taken, even with an unusual extension (``vidcls classify``
refuses one that does not exist before it starts; an entry of a list file that has gone becomes a
per-file "unreadable" error in the output). Inside folders only video-looking
extensions are taken, so a folder of videos with a stray README does not produce errors.
Every path is keyed by its absolute form: that key is what ``--resume`` matches on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".flv", ".ogv", ".ogg", ".3gp", ".3g2", ".wmv", ".mj2", ".mjpeg", ".mxf", ".vob",
})


def path_key(path: str | os.PathLike) -> str:
    """The identity of an input file in the output (absolute, symlinks kept as given)."""
    return os.path.abspath(os.fspath(path))


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
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield os.path.join(root, name)


def collect_inputs(paths: Iterable[str], list_files: Iterable[str] = ()) -> list[str]:
    """Expand ``paths`` (``@file`` = a list file) and ``list_files`` into unique absolute paths."""
    pending: list[str] = []
    for p in paths:
        pending.extend(read_list_file(p[1:]) if p.startswith("@") and len(p) > 1 else [p])
    for lf in list_files:
        pending.extend(read_list_file(lf))
    seen: set[str] = set()
    out: list[str] = []
    for p in pending:
        found = _walk(p) if os.path.isdir(p) else [p]
        for f in found:
            key = path_key(f)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out
