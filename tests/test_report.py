"""``vidcls report``: one self-contained HTML page, checked in a real headless Chromium.

The page of a real ``vidcls classify --evidence`` run (tests/fixtures/evidence.py: three videos the
server classified, three it refused) is loaded in Chromium from the OS packages (``make tools``
installs it); the test reads the DOM after the page's script ran: one row per classified video
with its thumbnails decoded, the errors grouped by code with their counts, the class distribution,
and the filter and sort driven through the URL fragment. It saves a screenshot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from vidcls.client.report import error_code

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("no Chromium: `make tools` installs the Debian package chromium (apt-get failed or is missing here)")


def browse(url: str, tmp_path: Path, *args: str) -> str:
    """Chromium's DOM of ``url`` after its scripts ran (or what ``args`` make it do), as text."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _rows(dom: str) -> list[dict]:
    """The video rows of the dumped DOM: class, confidence, name, hidden."""
    out = []
    for m in re.finditer(r'<tr class="video"([^>]*)>', dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
        out.append({"class": attrs["data-class"], "confidence": float(attrs["data-confidence"]),
                    "name": attrs["data-name"], "hidden": " hidden" in m.group(1) or 'hidden=""' in m.group(1)})
    return out


@pytest.fixture(scope="module")
def report(evidence_results, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = subprocess.run([sys.executable, "-m", "vidcls.cli", "report", str(evidence_results["jsonl"]),
                           "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in evidence_results["jsonl"].read_text().splitlines()]
    return {"html": out, "records": records, "stderr": proc.stderr}


def test_report_page_is_self_contained(report):
    text = report["html"].read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", text), "every resource is inlined"
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text  # and the page says so to the browser (CSP)
    ok = [r for r in report["records"] if not r["error"]]
    assert text.count('class="thumb"') == 3 * len(ok)  # three evidence moments per video


@pytest.mark.server
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    records = report["records"]
    ok = [r for r in records if not r["error"]]
    failed = [r for r in records if r["error"]]
    url = report["html"].as_uri()
    dom = browse(url, tmp_path, "--dump-dom")

    rows = _rows(dom)
    assert sorted(r["name"] for r in rows) == sorted(Path(r["path"]).name.lower() for r in ok)
    assert not any(r["hidden"] for r in rows)
    thumbs = 3 * len(ok)
    assert f'data-images="{thumbs}/{thumbs}"' in dom, "every thumbnail decoded in the browser"
    assert re.search(rf'id="n-failed">{len(failed)}<', dom) and re.search(rf'id="n-classified">{len(ok)}<', dom)
    # Errors grouped by code, with counts.
    groups = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-code="([^"]+)" data-count="(\d+)"', dom)}
    assert groups == dict(Counter(error_code(r["error"]) for r in failed))
    assert set(groups) == {"empty", "not_a_video", "corrupt"}
    # The class-distribution plot: one bar per class with its count.
    bars = {m.group(1): int(m.group(2)) for m in re.finditer(r'class="bar" data-class="([^"]+)" data-count="(\d+)"', dom)}
    per_class = Counter(r["class"] for r in ok)
    assert {c: n for c, n in bars.items() if c != "failed"} == {c: per_class.get(c, 0) for c in bars if c != "failed"}
    assert bars.get("failed") == len(failed)

    # Filter by class through the URL fragment: the script hides the other rows and counts.
    gaming = sum(1 for r in ok if r["class"] == "Gaming")
    dom = browse(url + "#class=Gaming", tmp_path, "--dump-dom")
    shown = [r for r in _rows(dom) if not r["hidden"]]
    assert len(shown) == gaming and {r["class"] for r in shown} == {"Gaming"}
    assert f'data-count="{gaming}"' in dom.split('id="shown"', 1)[1][:40]
    # Sort by confidence, highest first; and a confidence floor.
    dom = browse(url + "#sort=-confidence", tmp_path, "--dump-dom")
    conf = [r["confidence"] for r in _rows(dom)]
    assert conf == sorted(conf, reverse=True)
    floor = sorted(conf)[1]
    dom = browse(url + f"#min={floor}", tmp_path, "--dump-dom")
    assert all(r["confidence"] >= floor for r in _rows(dom) if not r["hidden"])
    assert sum(not r["hidden"] for r in _rows(dom)) == sum(c >= floor for c in conf)

    shot = tmp_path / "report.png"
    browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,1000")
    assert shot.stat().st_size > 20_000  # a rendered page with pictures, not a blank one
    from PIL import Image

    pixels = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert pixels is None or len(pixels) > 1000, "a screenshot with real content"


def test_error_codes_from_server_and_client_messages():
    assert error_code("in ensemble 'vidcls', corrupt: only 3 of 40 frames could be decoded") == "corrupt"
    assert error_code("in ensemble 'vidcls', [request id: <id_unknown>] not_a_video: FFmpeg cannot") == "not_a_video"
    assert error_code("max_bytes: 600000000 bytes is over the limit") == "max_bytes"
    assert error_code("unreadable: No such file or directory") == "unreadable"
    assert error_code("unavailable after 21 attempts (130 s outage): connection refused") == "unavailable"
    assert error_code("Something odd") == "other"


def test_report_cli_usage_errors(tmp_path):
    from vidcls.cli import main

    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "r.html")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_report_without_evidence_and_with_missing_files(tmp_path, h264_video):
    """A classify output without --evidence gets the middle frame; a file gone since gets a note."""
    from vidcls.client.report import build_report
    from vidcls.client.results import ResultWriter, fieldnames
    from vidcls.config import VidclsConfig

    classes = VidclsConfig().classes
    results = tmp_path / "plain.csv"
    with ResultWriter(str(results), "csv", fieldnames(classes)) as w:
        w.write({"path": str(h264_video), "class": "Gaming", "Animation": 0.1, "Flat_Content": 0.1, "Gaming": 0.7,
                 "Natural_Content": 0.1, "latency_ms": 5.0, "error": "", "attempts": 1, "endpoint": "x"})
        w.write({"path": str(tmp_path / "gone.mp4"), "class": "Animation", "Animation": 0.9, "Flat_Content": 0.0,
                 "Gaming": 0.1, "Natural_Content": 0.0, "latency_ms": 5.0, "error": "", "attempts": 1, "endpoint": "x"})
    counts = build_report(results, tmp_path / "r.html")
    assert counts["classified"] == 2 and counts["without_thumbnails"] == 1
    text = (tmp_path / "r.html").read_text()
    assert text.count('class="thumb"') == 1 and "middle frame" in text and "no thumbnails" in text


def test_report_module_imports_no_torch():
    """The report runs where the client does (PyAV only once it decodes thumbnails)."""
    code = ("import sys, vidcls.client.report, vidcls.client.evidence; "
            "bad = [m for m in ('torch', 'av', 'onnxruntime') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
