"""The HTML leaderboard in a real headless Chromium: plots load, tables render, the page is not blank."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_probe import chromium, needs_chromium, probe_site

from leaderboards import Store, build_leaderboard, render_leaderboard

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, synthetic_store: tuple[Path, str]) -> Path:
    out = tmp_path_factory.mktemp("site")
    render_leaderboard(build_leaderboard(Store(synthetic_store[0], create=False)), out, ["html"])
    return out


def test_dom_has_loaded_plots_and_tables(site: Path, tmp_path: Path) -> None:
    # the page plus a probe script that reports image sizes and table rows once loaded
    found, dom = probe_site(site, tmp_path / "profile")
    images = {i["id"]: i for i in found["images"]}
    assert set(images) == {"plot-scatter", "plot-heatmap"}
    for image in images.values():  # the SVG files were fetched and decoded
        assert image["w"] > 300 and image["h"] > 150 and image["shown"] > 300, image
    tables = {t["id"]: t for t in found["tables"]}
    assert tables["table-summary"]["rows"] == 10  # 5 methods × 2 fine-tuned models
    assert "safety recovered %" in tables["table-summary"]["headers"]
    assert "utility retained %" in tables["table-summary"]["headers"]
    assert tables["table-harmfulness"]["rows"] == 5 * 2 * (3 + 1)  # catqa all/en/zh + harmfulqa all
    assert tables["table-categories"]["rows"] == 5 * 2 * 2 * 4
    assert tables["table-pairwise"]["rows"] == 2 and tables["table-provenance"]["rows"] >= 8
    assert tables["table-summary"]["width"] < 1400 - 64  # the summary fits the window without scrolling
    assert "resta[g=0.5]" in dom and "★" in dom and "offline-minilm@1" in dom


def test_screenshot_shows_plots_and_tables(site: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    shot = tmp_path / "leaderboard.png"
    result = chromium(
        [f"--screenshot={shot}", "--window-size=1400,1800", (site / "index.html").as_uri()], tmp_path / "profile"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 1800)
    gray = image.convert("L")
    assert ImageStat.Stat(gray).stddev[0] > 20  # not a blank page
    pixels = list(image.getdata())
    width = image.size[0]
    header = pixels[30 * width + 700]
    assert header == (0x17, 0x21, 0x3A)  # the dark header bar rendered with its CSS
    reds = sum(1 for r, g, b in pixels if r > 150 and g < 110 and b < 110)
    assert reds > 5000  # the heatmap's red cells (and red scatter points) are on screen
    assert len(set(pixels[::7])) > 200  # text, plots and tables, not a flat fill


def test_crowded_demo_like_page(tmp_path: Path) -> None:
    """The demo's shape (9 methods, every utility 0, per-language score twins) as a reader sees it."""
    from lb_synth import DEMO_METHODS, write_demo_like_run

    store = Store(tmp_path / "results.sqlite")
    site = tmp_path / "site"
    render_leaderboard(build_leaderboard(store, write_demo_like_run(store)), site, ["html"])
    found, dom = probe_site(site, tmp_path / "profile")
    tables = {t["id"]: t for t in found["tables"]}
    assert tables["table-summary"]["rows"] == len(DEMO_METHODS) * 2
    assert tables["table-utility"]["rows"] == len(DEMO_METHODS) * 2 * 2  # each value once, not twice
    assert "{&quot;language" not in dom and '{"language' not in dom
    images = {i["id"]: i for i in found["images"]}
    assert images["plot-scatter"]["w"] > 300 and images["plot-scatter"]["shown"] > 300
    svg = (site / "scatter.svg").read_text(encoding="utf-8")
    assert "every utility is 0" in svg and 'id="pareto-front-0"' in svg
