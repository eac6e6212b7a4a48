"""The discovery report opens in a real browser (headless Chromium), every
image it shows loads, and a screenshot of it is not blank."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import DataConfig
from anogan_tf.markers import DiscoveryConfig, KnownTypes, run_discovery
from test_markers import TYPES, _scene, _write_maps_dir


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(binary, *args, timeout=120):
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run",
         "--allow-file-access-from-files", "--virtual-time-budget=10000",
         *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    images, signed, types = _scene()
    calibration = np.random.default_rng(1).normal(
        0, 0.01, (10, 48, 48)).astype(np.float32)
    maps_dir = str(root / "maps_run")
    _write_maps_dir(maps_dir, images, signed, calibration)
    out = str(root / "out")
    run_discovery(DiscoveryConfig(output_dir=out, region_map="scoring",
                                  target_pixel_fpr=0.001, min_region_area=5,
                                  max_markers=5, prototypes=4),
                  images, maps_dir=maps_dir,
                  known=KnownTypes(types, TYPES, "hand-made"),
                  data_config=DataConfig(), progress=False)
    return os.path.join(out, "report", "index.html")


def test_report_references_only_files_inside_the_output_dir(report):
    html = open(report, encoding="utf-8").read()
    sources = re.findall(r"<img[^>]*\ssrc=['\"]([^'\"]+)['\"]", html)
    # 3 contact sheets, the embedding plot, one overlay per image (20).
    assert len(sources) == 24
    for src in sources:
        assert not src.startswith(("http:", "https:", "/")), src
        path = os.path.normpath(os.path.join(os.path.dirname(report), src))
        assert os.path.isfile(path), src
        assert path.startswith(os.path.dirname(os.path.dirname(report)))
    assert "<script src" not in html and "<link" not in html


def test_report_opens_in_headless_chromium_with_every_image_loaded(
        report, tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("No Chromium on PATH (install it with `apt-get install "
                    "chromium`); the browser check cannot run here.")
    url = "file://" + os.path.abspath(report)
    dom = _browser(binary, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    assert loaded and total, dom.stdout[:2000]
    assert int(total.group(1)) == 24
    assert int(loaded.group(1)) == 24, "some images did not load"
    shot = os.environ.get("MARKERS_REPORT_SCREENSHOT") or str(
        tmp_path / "report.png")

    res = _browser(binary, f"--screenshot={shot}", "--window-size=1280,1600",
                   url)
    assert res.returncode == 0 and os.path.isfile(shot), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 10  # a page with content, not a blank frame
