"""``vidcls report RESULTS -o report.html``: one self-contained HTML page of a classify run.

Per video: a strip of thumbnails at the evidence moments (``vidcls classify --evidence``; the
middle frame when the run recorded none), decoded here from the local file by the reference
decoder (:func:`vidcls.video.decode_frames`: the pixels the model saw, shown at the file's aspect
ratio), the class with a probability bar per class, the confidence (the top probability) and the
moments' time stamps. Rows sort by clicking a column head and filter by class, confidence and
name; the URL's fragment holds the view (``report.html#class=Gaming&min=0.8&sort=-confidence``),
so a filtered view can be bookmarked or shared. Above the table: counts, a class-distribution
plot (inline SVG) and the failed files grouped by error code.

Everything is in the one file: styles, script, the plot, thumbnails as ``data:`` JPEG URIs; the
page loads nothing from anywhere. torch-free: numpy and PyAV (the core's dependencies).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidcls.client.evidence import parse_field
from vidcls.config import VidclsConfig

DEFAULT_THUMBNAILS = 3
DEFAULT_THUMB_SIZE = 160  # pixels: decoded square, shown at the file's aspect ratio
# One colour per class (in class order), readable on white; more classes cycle.
PALETTE = ("#7b5ea7", "#3b7dd8", "#d9534f", "#3c9a5f", "#e0a030", "#5bc0de")
# "in ensemble 'vidcls', [request id: ...] corrupt: only 3 of 40 frames ..." → "corrupt"
_PREFIXES = re.compile(r"^(?:\s*(?:in ensemble '[^']*',|\[request id: [^\]]*\]))+\s*")
_CODE = re.compile(r"^([a-z][a-z0-9_]*):")


@dataclass
class Row:
    path: str
    name: str
    label: str
    probabilities: dict[str, float]
    moments: list[dict[str, Any]]
    has_evidence: bool
    thumbs: list[str] = field(default_factory=list)  # data URIs
    aspect: float = 4 / 3
    note: str = ""

    @property
    def confidence(self) -> float:
        return max(self.probabilities.values(), default=0.0)


def error_code(message: str) -> str:
    """The code of a failed record's error text: the server's ``<code>: <message>`` (after the
    ensemble's prefix) or the client's own (``unreadable:``, ``timeout:``); else ``other``."""
    text = _PREFIXES.sub("", str(message or "")).strip()
    m = _CODE.match(text)
    if m:
        return m.group(1)
    return "unavailable" if text.startswith("unavailable after") else "other"


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def load_rows(results: str | Path, classes: Sequence[str]) -> tuple[list[Row], list[dict[str, Any]]]:
    """(classified rows, failed records) of a classify output (CSV or JSONL)."""
    from vidcls.client.results import iter_records

    rows, failed = [], []
    for rec in iter_records(results):
        if "path" not in rec:
            raise ValueError(f"{results} has records without a path: not a vidcls classify output")
        if rec.get("error"):
            failed.append(rec)
            continue
        probs = {c: _float(rec.get(c)) for c in classes}
        probs = {c: p for c, p in probs.items() if p is not None}
        moments = parse_field(rec.get("moments")) or []
        rows.append(Row(path=rec["path"], name=Path(rec["path"]).name, label=str(rec.get("class") or ""),
                        probabilities=probs, moments=list(moments), has_evidence=bool(moments)))
    return rows, failed


# ---- thumbnails ------------------------------------------------------------------------------
def jpeg_data_uri(rgb: np.ndarray) -> str:
    """An RGB uint8 [H, W, 3] picture as a ``data:image/jpeg`` URI (FFmpeg's MJPEG encoder)."""
    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.height, ctx.width = rgb.shape[:2]
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuvj420p")
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def add_thumbnails(row: Row, count: int, size: int, config: VidclsConfig) -> None:
    """Decode the row's moments (or its middle frame) from the local file into ``row.thumbs``."""
    from vidcls.video import decode_frames, probe

    try:
        info = probe(row.path, config.limits)
        if not row.moments:
            row.moments = [{"frame": info.num_frames // 2, "t": None, "weight": None}]
        shown = row.moments[:count]
        frames = np.clip([int(m["frame"]) for m in shown], 0, info.num_frames - 1)
        pictures = decode_frames(row.path, frames, size, num_frames=info.num_frames,
                                 max_missing_fraction=config.limits.max_missing_fraction, limits=config.limits)
    except (OSError, ValueError) as exc:  # VideoError is a ValueError: a file gone or changed since
        row.note = f"no thumbnails: {exc}"
        return
    row.thumbs = [jpeg_data_uri(p) for p in pictures]
    row.aspect = info.width / info.height if info.height else 1.0


# ---- the page --------------------------------------------------------------------------------
def _svg_distribution(counts: dict[str, int], colours: dict[str, str], display: dict[str, str], failed: int) -> str:
    """A horizontal bar chart of videos per class (+ failed), as inline SVG."""
    items = [(c, n, colours[c]) for c, n in counts.items()] + ([("failed", failed, "#999")] if failed else [])
    top = max([n for _, n, _ in items] + [1])
    bar_h, gap, label_w, width = 22, 8, 130, 520
    height = len(items) * (bar_h + gap) + gap
    parts = [f'<svg id="distribution" width="{width}" height="{height}" '
             f'role="img" aria-label="videos per class">']
    for i, (name, n, colour) in enumerate(items):
        y = gap + i * (bar_h + gap)
        w = (width - label_w - 60) * n / top
        label = display.get(name, name)
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{html.escape(label)}</text>'
                     f'<rect class="bar" data-class="{html.escape(name)}" data-count="{n}" x="{label_w}" y="{y}" '
                     f'width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt_time(t: Any) -> str:
    t = _float(t)
    if t is None:
        return "?"
    minutes, seconds = divmod(t, 60.0)
    return f"{int(minutes)}:{seconds:05.2f}"


def _row_html(row: Row, classes: Sequence[str], display: dict[str, str], colours: dict[str, str]) -> str:
    e = html.escape
    thumbs = []
    for uri, m in zip(row.thumbs, row.moments):
        if row.has_evidence:
            caption = f"{_fmt_time(m.get('t'))} · {100 * float(m.get('weight') or 0):.0f}%"
            title = f"frame {m.get('frame')} at {_fmt_time(m.get('t'))}, attention weight {m.get('weight')}"
        else:
            caption, title = "middle frame", "no evidence recorded (classify --evidence): the middle frame"
        thumbs.append(f'<figure><img class="thumb" src="{uri}" alt="{e(title)}" title="{e(title)}" '
                      f'style="aspect-ratio:{row.aspect:.4f}"><figcaption>{e(caption)}</figcaption></figure>')
    if row.note:
        thumbs.append(f'<span class="note">{e(row.note)}</span>')
    bars = []
    for c in classes:
        p = row.probabilities.get(c)
        if p is None:
            continue
        bars.append(f'<div class="prob" data-class="{e(c)}"><span class="pname">{e(display[c])}</span>'
                    f'<span class="track"><span class="fill" style="width:{100 * p:.1f}%;background:{colours[c]}">'
                    f'</span></span><span class="pval">{p:.3f}</span></div>')
    times = ", ".join(_fmt_time(m.get("t")) for m in row.moments) if row.has_evidence else "—"
    colour = colours.get(row.label, "#555")
    return (f'<tr class="video" data-class="{e(row.label)}" data-confidence="{row.confidence:.6f}" '
            f'data-name="{e(row.name.lower())}">'
            f'<td class="strip">{"".join(thumbs)}</td>'
            f'<td class="file" title="{e(row.path)}">{e(row.name)}</td>'
            f'<td><span class="label" style="background:{colour}">{e(display.get(row.label, row.label))}</span></td>'
            f'<td class="probs">{"".join(bars)}</td>'
            f'<td class="conf">{row.confidence:.3f}</td>'
            f'<td class="moments">{e(times)}</td></tr>')


def render(rows: list[Row], failed: list[dict[str, Any]], classes: Sequence[str], title: str,
           source: str) -> str:
    e = html.escape
    display = {c: c.replace("_", " ") for c in classes}
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    counts = {c: 0 for c in classes}
    for r in rows:
        counts[r.label] = counts.get(r.label, 0) + 1
        colours.setdefault(r.label, "#555")
    codes = Counter(error_code(r.get("error")) for r in failed)
    by_code: dict[str, list[str]] = {}
    for r in failed:
        by_code.setdefault(error_code(r.get("error")), []).append(r["path"])
    error_rows = "".join(
        f'<tr class="error-group" data-code="{e(code)}" data-count="{n}"><td><code>{e(code)}</code></td>'
        f'<td class="count">{n}</td><td class="files">'
        + ", ".join(f'<span title="{e(p)}">{e(Path(p).name)}</span>' for p in by_code[code][:20])
        + (f" … and {len(by_code[code]) - 20} more" if len(by_code[code]) > 20 else "") + "</td></tr>"
        for code, n in codes.most_common())
    errors = (f'<table id="errors"><thead><tr><th>error code</th><th>files</th><th>which</th></tr></thead>'
              f'<tbody>{error_rows}</tbody></table>') if failed else '<p id="errors" class="none">No file failed.</p>'
    options = "".join(f'<option value="{e(c)}">{e(display.get(c, c))} ({counts[c]})</option>' for c in counts)
    evidence_rows = sum(r.has_evidence for r in rows)
    body_rows = "".join(_row_html(r, classes, display, colours) for r in rows)
    return _PAGE.format(
        title=e(title), source=e(source), total=len(rows) + len(failed), classified=len(rows), failed=len(failed),
        evidence=evidence_rows, distribution=_svg_distribution(counts, colours, display, len(failed)), errors=errors,
        options=options, rows=body_rows, script=_SCRIPT, style=_STYLE,
        summary=json.dumps({"classified": len(rows), "failed": len(failed), "per_class": counts,
                            "errors": dict(codes)}, sort_keys=True).replace("</", "<\\/"))


_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#666;margin-bottom:16px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:22px}.overview{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
svg text{font-size:13px;fill:#333}
table{border-collapse:collapse;background:#fff;border:1px solid #ddd}
th,td{padding:6px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
#videos th.sortable{cursor:pointer;user-select:none}#videos th.sortable:after{content:" ⇅";color:#aaa}
#videos th[data-dir="1"]:after{content:" ▲";color:#333}#videos th[data-dir="-1"]:after{content:" ▼";color:#333}
.controls{display:flex;gap:16px;align-items:center;margin:8px 0 12px;flex-wrap:wrap}
.strip{display:flex;gap:6px}figure{margin:0;text-align:center}
.thumb{width:120px;height:auto;border-radius:4px;display:block;background:#eee}
figcaption{font-size:11px;color:#555}.note{color:#a33;font-size:12px}
.file{max-width:220px;word-break:break-all}.label{color:#fff;border-radius:4px;padding:2px 8px;white-space:nowrap}
.prob{display:flex;align-items:center;gap:6px;font-size:12px}.pname{width:110px;color:#444}
.track{width:120px;height:9px;background:#eee;border-radius:5px;overflow:hidden}
.fill{display:block;height:100%}.pval{width:40px;text-align:right;color:#444}
.conf{font-variant-numeric:tabular-nums}.none{color:#3c9a5f}tr.video[hidden]{display:none}
"""

_SCRIPT = r"""
(function(){
  const rows = Array.from(document.querySelectorAll('#videos tbody tr.video'));
  const body = document.querySelector('#videos tbody');
  const cls = document.getElementById('f-class'), min = document.getElementById('f-min'),
        minOut = document.getElementById('f-min-value'), q = document.getElementById('f-name'),
        shown = document.getElementById('shown');
  let sort = {key: '', dir: 1};
  const keyOf = {name: r => r.dataset.name, class: r => r.dataset.class, confidence: r => +r.dataset.confidence};
  function apply(){
    const c = cls.value, m = +min.value, text = q.value.trim().toLowerCase();
    minOut.textContent = m.toFixed(2);
    let n = 0;
    rows.forEach(r => {
      const ok = (!c || r.dataset.class === c) && +r.dataset.confidence >= m && (!text || r.dataset.name.includes(text));
      r.hidden = !ok; if (ok) n++;
    });
    shown.textContent = n; shown.dataset.count = n;
    if (sort.key){
      const f = keyOf[sort.key];
      rows.slice().sort((a, b) => { const x = f(a), y = f(b); return (x < y ? -1 : x > y ? 1 : 0) * sort.dir; })
          .forEach(r => body.appendChild(r));
    }
    document.querySelectorAll('#videos th.sortable').forEach(th =>
      th.dataset.dir = th.dataset.key === sort.key ? sort.dir : 0);
    const h = new URLSearchParams();
    if (c) h.set('class', c); if (m > 0) h.set('min', m); if (text) h.set('name', text);
    if (sort.key) h.set('sort', (sort.dir < 0 ? '-' : '') + sort.key);
    const s = h.toString();
    if (s !== location.hash.slice(1)) history.replaceState(null, '', s ? '#' + s : location.pathname);
  }
  function fromHash(){
    const h = new URLSearchParams(location.hash.slice(1));
    cls.value = h.get('class') || '';  // a class the page does not have selects nothing: all
    min.value = h.get('min') || 0; q.value = h.get('name') || '';
    const s = h.get('sort') || '';
    sort = s ? {key: s.replace(/^-/, ''), dir: s.startsWith('-') ? -1 : 1} : {key: '', dir: 1};
    if (!keyOf[sort.key]) sort = {key: '', dir: 1};
    apply();
  }
  document.querySelectorAll('#videos th.sortable').forEach(th => th.addEventListener('click', () => {
    sort = {key: th.dataset.key, dir: sort.key === th.dataset.key ? -sort.dir : (th.dataset.key === 'confidence' ? -1 : 1)};
    apply();
  }));
  [cls, min, q].forEach(el => el.addEventListener('input', apply));
  window.addEventListener('hashchange', fromHash);
  fromHash();
  window.addEventListener('load', () => {
    const imgs = Array.from(document.images);
    document.body.dataset.images = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length;
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{style}</style></head>
<body>
<h1>{title}</h1>
<div class="meta">from <code>{source}</code></div>
<div class="cards">
  <div class="card">videos<b id="n-total">{total}</b></div>
  <div class="card">classified<b id="n-classified">{classified}</b></div>
  <div class="card">failed<b id="n-failed">{failed}</b></div>
  <div class="card">with evidence<b id="n-evidence">{evidence}</b></div>
</div>
<div class="overview">
  <section><h2>Videos per class</h2>{distribution}</section>
  <section><h2>Failures by error code</h2>{errors}</section>
</div>
<h2>Videos</h2>
<div class="controls">
  <label>class <select id="f-class"><option value="">all</option>{options}</select></label>
  <label>confidence ≥ <input id="f-min" type="range" min="0" max="1" step="any" value="0"> <span id="f-min-value">0.00</span></label>
  <label>name <input id="f-name" type="search" placeholder="filter by file name"></label>
  <span>showing <b id="shown">{classified}</b> of {classified}</span>
</div>
<table id="videos"><thead><tr>
  <th>moments that drove the answer</th><th class="sortable" data-key="name">file</th>
  <th class="sortable" data-key="class">class</th><th>probabilities</th>
  <th class="sortable" data-key="confidence">confidence</th><th>time stamps</th>
</tr></thead><tbody>{rows}</tbody></table>
<script type="application/json" id="summary">{summary}</script>
<script>{script}</script>
</body></html>
"""


def build_report(results: str | Path, output: str | Path, thumbnails: int = DEFAULT_THUMBNAILS,
                 thumb_size: int = DEFAULT_THUMB_SIZE, title: str | None = None,
                 config: VidclsConfig | None = None, progress: bool = False, jobs: int = 0) -> dict[str, Any]:
    """Write the report of ``results`` to ``output``; returns the counts it shows. ``jobs`` videos
    are decoded at a time (0: one per core, at most 8; FFmpeg decodes outside the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    config = config or VidclsConfig()
    rows, failed = load_rows(results, config.classes)
    jobs = jobs or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = pool.map(lambda row: add_thumbnails(row, thumbnails, thumb_size, config), rows)
        for _ in tqdm(done, total=len(rows), unit="video", file=sys.stderr, disable=not progress, desc="thumbnails"):
            pass
    page = render(rows, failed, config.classes, title or f"vidcls report: {Path(results).name}", str(results))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return {"classified": len(rows), "failed": len(failed), "per_class": dict(Counter(r.label for r in rows)),
            "errors": dict(Counter(error_code(r.get("error")) for r in failed)),
            "without_thumbnails": sum(1 for r in rows if not r.thumbs)}


# ---- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="a `vidcls classify` output (CSV or JSONL)")
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    parser.add_argument("--thumbnails", type=int, default=DEFAULT_THUMBNAILS,
                        help="thumbnails per video (the top evidence moments)")
    parser.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB_SIZE, help="decoded thumbnail size in pixels")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("-j", "--jobs", type=int, default=0, help="videos decoded at a time (0 = one per core, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.thumbnails < 1 or args.thumb_size < 16:
        print("error: --thumbnails must be >= 1 and --thumb-size >= 16", file=sys.stderr)
        return 2
    if not Path(args.results).is_file():
        print(f"error: {args.results} is not a file", file=sys.stderr)
        return 2
    try:
        counts = build_report(args.results, args.output, args.thumbnails, args.thumb_size, args.title,
                              progress=not args.no_progress, jobs=args.jobs)
    except (ValueError, KeyError) as exc:
        print(f"error: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    extra = f", {counts['without_thumbnails']} without thumbnails (file missing or changed)" \
        if counts["without_thumbnails"] else ""
    print(f"wrote {args.output}: {counts['classified']} classified, {counts['failed']} failed{extra}", file=sys.stderr)
    return 0
