"""The report in a real browser (Debian's `chromium`, headless): wide and narrow screenshots, no horizontal overflow.

Screenshots are kept in $MUSICPROD_SCREENSHOT_DIR (default reports/out/screenshots/) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports import build_report, choose_champion
from tests import report_fixtures as fx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get update && apt-get install -y chromium)"
)
# Headless Chromium does not lay out narrower than 500 CSS px, so the narrow view is an iframe of that width.
NARROW = 420
MIN_WINDOW = 500
PROBE = (
    '<script>window.addEventListener("load", () => {{ const d = {doc}.documentElement; '
    'document.body.setAttribute("data-probe", d.scrollWidth + "x" + d.clientWidth + "x" + d.scrollHeight); }});'
    "</script></body>"
)


def chromium(*args: str) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr[-2000:]}"
    return done.stdout


def measure(page: Path, window_width: int) -> tuple[int, int, int]:
    """(scrollWidth, clientWidth, scrollHeight) of the report as laid out in the page."""
    dom = chromium(f"--window-size={window_width},900", "--dump-dom", page.as_uri())
    found = re.search(r'data-probe="(\d+)x(\d+)x(\d+)"', dom)
    assert found, "the probe script did not run in chromium"
    return tuple(int(v) for v in found.groups())


def narrow_host(report: Path, height: int) -> Path:
    host = report.parent / "narrow.html"
    host.write_text(
        f"<!DOCTYPE html><html><head><style>body{{margin:0}}iframe{{border:0;display:block;"
        f'width:{NARROW}px;height:{height}px}}</style></head><body><iframe id="f" src="{report.name}"></iframe>'
        + PROBE.format(doc='document.getElementById("f").contentDocument')
        + "</html>"
    )
    return host


def assert_not_blank(png: Path, width: int) -> None:
    from PIL import Image, ImageStat

    with Image.open(png) as im:
        assert im.width == width
        stat = ImageStat.Stat(im.convert("L"))
        assert stat.stddev[0] > 20, f"{png} looks blank (grey-level spread {stat.stddev[0]:.1f})"


def test_report_screenshots_wide_and_narrow(tmp_path):
    exp = fx.full_experiment(tmp_path)
    choose_champion(exp)
    index = build_report(exp, tmp_path / "out")
    keep = Path(os.environ.get("MUSICPROD_SCREENSHOT_DIR", REPO / "reports" / "out" / "screenshots"))
    keep.mkdir(parents=True, exist_ok=True)

    probe = index.with_name("probe.html")
    probe.write_text(
        index.read_text(encoding="utf-8").replace("</body>", PROBE.format(doc="document")), encoding="utf-8"
    )
    scroll_w, client_w, height = measure(probe, 1280)
    assert scroll_w <= client_w, f"wide window scrolls sideways: content {scroll_w} px in {client_w} px"
    wide = keep / "report-wide.png"
    chromium("--window-size=1280,%d" % min(height, 16000), f"--screenshot={wide}", index.as_uri())
    assert_not_blank(wide, 1280)

    scroll_w, client_w, height = measure(narrow_host(index, 900), MIN_WINDOW)
    assert client_w <= NARROW
    assert scroll_w <= client_w, f"{NARROW} px window scrolls sideways: content {scroll_w} px in {client_w} px"
    assert height > 3000, "the narrow layout should stack content vertically"
    host = narrow_host(index, min(height, 30000))
    shot = tmp_path / "narrow-full.png"
    chromium(f"--window-size={MIN_WINDOW},{min(height, 30000)}", f"--screenshot={shot}", host.as_uri())
    from PIL import Image

    with Image.open(shot) as im:
        im.crop((0, 0, NARROW, im.height)).save(keep / "report-narrow.png")
    assert_not_blank(keep / "report-narrow.png", NARROW)
