"""The report pages draw their charts in headless Chromium with networking disabled (skipped without Chromium)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import screenshot_reports as shots  # noqa: E402

pytestmark = pytest.mark.skipif(shots.browser() is None, reason="no Chromium installed (apt-get install chromium)")


@pytest.mark.slow
def test_pages_draw_offline(tmp_path, tiny_model_dir):
    from conftest import axw, write_release

    rel = write_release(tmp_path / "release", n_concepts=2)
    cat = tmp_path / "wh" / "catalog.duckdb"
    cat.parent.mkdir()
    common = ["-c", "s2", "--model", tiny_model_dir, "--layer", "1"]
    for args in (["import-axbench", rel, "-c", "s2"], ["activations", *common],
                 ["train", *common, "--method", "diffmean", "--method", "pca"],
                 ["latent", *common, "--method", "diffmean", "--method", "pca"],
                 ["report", "--out", tmp_path / "rep", "--no-images"]):
        code, _, err = axw("--catalog", cat, *args)
        assert code == 0, err
    for page in ("leaderboard.html", "roc.html", "geometry.html", "concepts/s2/0.html"):
        check = shots.check_page(tmp_path / "rep" / page)
        assert check.charts >= 1 and check.ok, check
    png = shots.screenshot(tmp_path / "rep" / "leaderboard.html", tmp_path / "lb.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
