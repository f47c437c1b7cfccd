"""The report page in a real headless Chromium: every chart is decoded and drawn.

The page marks each chart `data-drawn="yes"` once the browser has decoded it (naturalWidth > 0)
and sums them up in `<body data-charts="drawn/total">`; `--dump-dom` prints the DOM after the
load event, so the test reads the browser's verdict. Chromium comes from Debian's `chromium`
package (`apt-get install -y chromium`); CI installs it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from lavie.curate.manifest import conform, write_manifest
from lavie.curate.report import CHARTS, build_report

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# Without the background-networking flags Chromium opens connections of its own; all name
# lookups fail, so a page that needed anything from outside would show it undrawn.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
]


def dump_dom(page: Path, profile: Path) -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def drawn(dom: str) -> tuple[str, list[str]]:
    summary = re.search(r'<body[^>]*data-charts="([^"]*)"', dom)
    marks = re.findall(r'<img class="chart"[^>]*data-drawn="(\w+)"', dom)
    return (summary.group(1) if summary else "missing"), marks


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    for name, n, width in (("before", 30, 640), ("after", 20, 1920)):
        rows = [{
            "clip_id": f"{name}{i}", "video_id": f"v{i // 3}", "kind": "video", "source_path": f"/r/{i // 3}.mp4",
            "status": "ok", "keep": i % 4 != 0, "reject_reason": None if i % 4 else "resolution: short side 360 < 720",
            "width": width, "height": width * 9 // 16, "num_frames": 24 + 10 * i, "fps": 24.0,
            "category": ["Travel", "Sports", "Music"][i % 3], "aesthetic": 3.0 + (i % 5),
            "caption": " ".join(["word"] * (1 + i % 12)),
        } for i in range(n)]
        write_manifest(conform(rows, "clips"), root / name / "clips.parquet", "clips")
    build_report([root / "before", root / "after"], None, root / "report")
    return root / "report" / "report.html"


def test_every_chart_drawn(report_page, tmp_path):
    summary, marks = drawn(dump_dom(report_page, tmp_path / "profile"))
    assert marks == ["yes"] * len(CHARTS)
    assert summary == f"{len(CHARTS)}/{len(CHARTS)}"


def test_broken_chart_is_caught(report_page, tmp_path):
    # The same page with one chart's bytes damaged: the browser must say so.
    page = report_page.read_text()
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + "AAAA" * 16 + page[start + 64:])
    summary, marks = drawn(dump_dom(broken, tmp_path / "profile"))
    assert marks == ["no"] + ["yes"] * (len(CHARTS) - 1)
    assert summary == f"{len(CHARTS) - 1}/{len(CHARTS)}"
