"""report.html of `lake eval` and `lake predict --html`, checked as a person would look at it:
the page's HTML parsed (every category, plot, gallery image; numbers equal report.json's;
relative links only), the curves behind the plots equal to the reported metrics, the
per-category colour scale, and the page opened in headless Chromium (screenshot not blank,
every image loaded). Also the curve functions of pylake.metrics against scikit-learn, the
C++ metrics and a by-definition PRO reference."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import pylake
from pylake import datasets, metrics, report
from pylake.cli import main

pytest.importorskip("matplotlib", reason="report.html needs matplotlib (pip install 'pylake[report]')")

FAST = ["--image-size", "32", "--k", "16"]
OPTS = dict(image_size=32, k=16)
SHOTS = 2  # leave-one-out calibration needs 2: the histogram then has its threshold
PLOTS = ("image_roc", "image_pr", "pixel_roc", "pixel_pr", "pixel_pro", "score_histogram", "colour_scale")


class Page(HTMLParser):
    """What the checks need of a page: every tag with its attributes, in order, the text,
    and per table its rows (each a list of (attributes, text) cells)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags, self.text, self.tables = [], [], {}
        self._table, self._row, self._cell = None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append((a, self._row))
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [a, ""]
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[1] += data

    def all(self, tag, **where):
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in where.items())]


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return fixtures_dir / "tiny_export.pt"


@pytest.fixture(scope="module")
def mvtec(shared_dir):
    root = shared_dir / "data" / "mvtec_ad"
    if not (root / "grid").is_dir():
        pytest.skip(f"{root / 'grid'} is absent: the MVTec-style test category is not available")
    return root


@pytest.fixture(scope="module")
def evaluated(model, mvtec, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "rep"
    rc = main(["eval", "--model", str(model), "--dataset", "mvtec", "--root", str(mvtec), "--categories", "grid",
               "--shots", str(SHOTS), "--seeds", "0", "--out", str(out), "--random-weights", "--quiet", *FAST])
    assert rc == 0
    return out


def _png(path: Path) -> torch.Tensor:
    assert path.is_file(), path
    return pylake.read_image(str(path))  # raises on anything that is not a valid PNG / JPEG


def _local(out: Path, link: str) -> Path:
    assert "://" not in link and not link.startswith(("/", "\\", "data:", "file:")), f"not a relative link: {link}"
    from urllib.parse import unquote  # noqa: PLC0415

    return out / unquote(link)


# ----------------------------------------------------------------------------- eval: the page

def test_eval_report_has_every_part(evaluated):
    out = evaluated
    text = (out / "report.html").read_text()
    page = Page(text)
    summary = json.loads((out / "report.json").read_text())["summary"]
    # Categories, banner, settings, the paper comparison (grid is an MVTec AD category).
    assert [s["data-category"] for s in page.all("section")] == ["grid"]
    assert page.all("div", id="random-weights") and "Random-weight backbone" in text
    assert "ClipModel(" in text and "fingerprint" in text and "image_size=32" in text
    assert "paper" in page.tables and "94.7" in "".join(c[1] for _, r in page.tables["paper"] for c in r)
    # Every plot of the run, each a PNG of the stated size; the colour-scale bar beside them.
    run = page.all("div", **{"class": "run"})
    assert [(r["data-shots"], r["data-seed"]) for r in run] == [(str(SHOTS), "0")]
    imgs = {a["data-plot"]: a["src"] for a in page.all("img") if "data-plot" in a}
    assert set(imgs) == set(PLOTS)
    for kind, src in imgs.items():
        png = _png(_local(out, src))
        assert png.shape == ((3, 240, 320) if kind != "colour_scale" else png.shape) and png.float().std() > 5, kind
        assert (_local(out, src).stat().st_size < 40_000), (kind, _local(out, src).stat().st_size)
    # No network, no absolute paths: every src / href is relative and resolves; scripts are inline.
    assert "http://" not in text and "https://" not in text
    links = [a["src"] for a in page.all("img")] + [a["href"] for a in page.all("a")]
    assert links and all(_local(out, x).is_file() for x in links)
    assert all("src" not in a for a in page.all("script")) and not page.all("link")
    # The summary: the numbers of report.json, as data and as the shown percentages.
    rows = [(a, r) for a, r in page.tables["summary"] if "data-category" in a]
    assert [(a["data-category"], int(a["data-shots"])) for a, _ in rows] == [(s["category"], s["shots"])
                                                                               for s in summary]
    for (_, cells), s in zip(rows, summary):
        for attrs, shown in cells:
            key = attrs.get("data-key")
            if key is None:
                continue
            value = s[key]
            assert attrs["data-value"] == ("" if value is None else repr(float(value))), key
            assert shown == ("-" if value is None else f"{100 * value:.1f}"), key


def test_gallery_is_sorted_on_one_scale(evaluated, model, mvtec):
    out = evaluated
    page = Page((out / "report.html").read_text())
    images = {r["key"]: r for r in json.loads((out / "images.json").read_text())}
    galleries = {k: v for k, v in page.tables.items() if k and k.startswith("gallery-")}
    assert {k.rsplit("-", 1)[1] for k in galleries} == {"top_anomalous", "misses", "false_alarms"}
    for name, rows in galleries.items():
        body = [(a, cells) for a, cells in rows if "data-key" in a]
        assert body, name
        scores = [float(c[3][0]["data-value"]) for _, c in body]
        assert scores == sorted(scores, reverse=True), name  # sorted by score, highest first
        for a, cells in body:
            assert scores and images[a["data-key"]]["score"] == float(cells[3][0]["data-value"])
            want = 0 if name.endswith("alarms") else 1
            assert images[a["data-key"]]["label"] == want, (name, a["data-key"])
    n_anom = sum(r["label"] == 1 for r in images.values())
    misses = [a["data-key"] for a, _ in galleries[[k for k in galleries if k.endswith("misses")][0]] if "data-key" in a]
    lowest = sorted((r["score"], k) for k, r in images.items() if r["label"] == 1)[: report.GALLERY_N]
    assert sorted(misses) == sorted(k for _, k in lowest) and n_anom > report.GALLERY_N
    gallery_imgs = [a for a in page.all("img") if "/gallery/" in a["src"]]
    assert gallery_imgs
    for a in gallery_imgs:  # image / overlay / mask side by side, downscaled
        png = _png(_local(out, a["src"]))  # grid's images are square: three square panels
        assert png.shape == (3, report.GALLERY_SIDE, 3 * report.GALLERY_SIDE), (a["src"], png.shape)
        assert _local(out, a["src"]).stat().st_size < 120_000
    # The colour scale, stated on the page, recomputed through the API: 0 to the quantile of the
    # normal test maps (downscaled as the report keeps them).
    scale = page.all("div", **{"class": "scale"})
    assert len(scale) == 1 and float(scale[0]["data-lo"]) == 0.0
    hi = float(scale[0]["data-hi"])
    assert "percentile of the map values of the 3 normal test images" in "".join(page.text)
    cat = datasets.mvtec(mvtec, ["grid"])[0]
    clip = pylake.load_clip(model)
    train = datasets.few_shot(cat.train, SHOTS, 0)
    m = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)
    normal_maps = [report.downscale_map(m.score(s.path).anomaly_map[0]) for s in cat.test if s.label == 0]
    assert math.isclose(hi, report.colour_scale(normal_maps)[1], rel_tol=1e-12)
    assert math.isclose(hi, float(np.quantile(torch.cat([x.reshape(-1) for x in normal_maps]).double().numpy(),
                                              report.SCALE_QUANTILE)), rel_tol=1e-12)
    # Not saturated: most normal images stay below the top of the scale (per-image min-max colours
    # put every image's maximum at the top, relative max 1 for all).
    relative = [float(x.max()) / hi for x in normal_maps]
    assert sum(r < 1 for r in relative) > len(relative) / 2 and min(relative) < 0.95, relative


def test_curves_are_the_reported_metrics(evaluated, model, mvtec):
    out = evaluated
    run = json.loads((out / "report.json").read_text())["runs"][0]
    curves = json.loads((out / "report_files" / "grid" / f"{SHOTS}shot_seed0" / "curves.json").read_text())
    # Image level: the plotted points themselves integrate to the reported metrics.
    roc, pr = curves["image_roc"], curves["image_pr"]
    assert abs(np.trapezoid(roc["y"], roc["x"]) - run["image_auroc"]) < 1e-6
    assert abs(np.sum(np.diff(pr["x"]) * np.asarray(pr["y"])[1:]) - run["image_ap"]) < 1e-6
    assert roc["x"][0] == roc["y"][0] == 0 and roc["x"][-1] == roc["y"][-1] == 1
    # Pixel level: on the report's downscaled maps, the curves' areas are the project's metrics of the
    # same maps; the plotted (thinned) points stay within 1e-3; full resolution differs by little.
    cat = datasets.mvtec(mvtec, ["grid"])[0]
    clip = pylake.load_clip(model)
    train = datasets.few_shot(cat.train, SHOTS, 0)
    m = pylake.NormalityModel(clip, class_name="grid", **OPTS).fit(train).calibrate(train, leave_one_out=True)
    maps, masks = [], []
    for s in cat.test:
        small = report.downscale_map(m.score(s.path).anomaly_map[0])
        maps.append(small)
        masks.append(report.downscale_mask(datasets.read_mask(s), tuple(small.shape)))
    maps, masks = torch.stack(maps), torch.stack(masks)
    assert abs(curves["pixel_roc"]["area"] - metrics.image_auroc(maps.reshape(-1), masks.reshape(-1))) < 1e-9
    assert abs(curves["pixel_pr"]["area"] - metrics.image_ap(maps.reshape(-1), masks.reshape(-1))) < 1e-9
    assert abs(curves["pixel_pro"]["area"] - metrics.aupro(maps, masks, 0.3)) < 1e-9
    pro = curves["pixel_pro"]
    assert pro["x"][-1] == pytest.approx(0.3, abs=1e-12) and pro["fpr_limit"] == 0.3
    for key, metric in (("pixel_roc", "pixel_auroc"), ("pixel_pro", "pixel_aupro")):
        c = curves[key]
        plotted = np.trapezoid(c["y"], c["x"]) / (0.3 if key == "pixel_pro" else 1)
        assert abs(plotted - c["area"]) < 1e-3 and abs(plotted - c["area_plotted"]) < 1e-12
        assert abs(c["area"] - run[metric]) < 0.02, (key, c["area"], run[metric])


# ----------------------------------------------------------------------------- predict --html

def test_predict_html_lists_every_image_by_score(model, mvtec, tmp_path):
    grid = mvtec / "grid"
    fitted = tmp_path / "grid.lake"
    normal = sorted((grid / "train" / "good").glob("*.png"))[:3]
    assert main(["fit", "--model", str(model), "--class-name", "grid", "--normal", *map(str, normal),
                 "--out", str(fitted), "--quiet", *FAST]) == 0
    out = tmp_path / "pred"
    assert main(["predict", str(fitted), str(grid / "test" / "good"), str(grid / "test" / "bent"), "--model",
                 str(model), "--out", str(out), "--html", "--random-weights", "--quiet"]) == 0
    assert not (out / "INCOMPLETE").exists()
    predictions = {r["key"]: r for r in json.loads((out / "predictions.json").read_text())}
    text = (out / "report.html").read_text()
    page = Page(text)
    rows = [(a, c) for a, c in page.tables["predictions"] if "data-key" in a]
    assert sorted(a["data-key"] for a, _ in rows) == sorted(predictions) and len(rows) == 6
    scores = [float(c[1][0]["data-value"]) for _, c in rows]
    assert scores == sorted(scores, reverse=True)
    for a, cells in rows:
        p = predictions[a["data-key"]]
        assert float(cells[1][0]["data-value"]) == p["score"]
        assert cells[2][1] == {None: "-", 0: "normal", 1: "anomalous"}[p["pred_label"]]
    assert all(x["pred_label"] is not None for x in predictions.values())  # fitted on 3 images: calibrated
    assert page.all("div", id="random-weights") and "Colour scale" in text and "predicted normal" in text
    for a in page.all("img"):
        _png(_local(out, a["src"]))
    assert len(page.all("img")) == 6 + 1


def test_missing_matplotlib_is_one_line(model, mvtec, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "available", lambda: False)
    rc = main(["eval", "--model", str(model), "--dataset", "mvtec", "--root", str(mvtec), "--shots", "1", "--seeds",
               "0", "--out", str(tmp_path / "rep"), "--heatmaps", "0", *FAST])
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "rep" / "report.json").exists() and not (tmp_path / "rep" / "report.html").exists()
    assert [x for x in err.splitlines() if "pylake[report]" in x] == [
        f"note: {report.NEEDS_MATPLOTLIB} (the tables are written without it)"]
    assert not (tmp_path / "rep" / "report_files").exists() and not (tmp_path / "rep" / "INCOMPLETE").exists()
    rc = main(["predict", str(tmp_path / "none.lake"), str(mvtec / "grid" / "test" / "good"), "--model", str(model),
               "--out", str(tmp_path / "p"), "--html"])
    assert rc == 2 and "pylake[report]" in capsys.readouterr().err and not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- in a browser

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; `make` installs it): "
                "the report's in-browser checks are skipped")


def _browser(*args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", "--allow-file-access-from-files", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_opens_in_headless_chromium(evaluated, tmp_path):
    out = evaluated
    url = (out / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    r = _browser(f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert shot.is_file(), r.stderr[-2000:]
    img = _png(shot)
    assert img.shape == (3, 2000, 1200)
    flat = img.reshape(3, -1).T
    colours = torch.unique(flat[:: 7], dim=0).shape[0]
    assert img.float().std() > 20 and colours > 500, (img.float().std(), colours)  # plots, heatmaps, text
    # The DOM after the scripts ran: every category and plot, every image loaded by the browser.
    r = _browser("--dump-dom", "--virtual-time-budget=5000", url)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Page(r.stdout)
    assert [s["data-category"] for s in dom.all("section")] == ["grid"]
    plots = {a["data-plot"] for a in dom.all("img") if "data-plot" in a}
    assert plots == set(PLOTS)
    imgs = dom.all("img")
    assert len([a for a in imgs if "/gallery/" in a["src"]]) >= report.GALLERY_N
    assert all(_local(out, a["src"]).is_file() for a in imgs)
    body = dom.all("body")[0]
    assert body.get("data-images-loaded") == f"{len(imgs)}/{len(imgs)}", body  # decoded in the browser


# ----------------------------------------------------------------------------- curve functions

def _ties(n: int, seed: int):
    g = np.random.default_rng(seed)
    return np.round(g.random(n), 2), g.random(n) < 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_and_pr_curves_match_sklearn_and_the_metrics(seed):
    sk = pytest.importorskip("sklearn.metrics")
    s, y = _ties(400, seed)
    fpr, tpr, thr = metrics.roc_curve(s, y)
    f2, t2, th2 = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, f2)
    np.testing.assert_array_equal(tpr, t2)
    np.testing.assert_array_equal(thr[1:], th2[1:])
    assert abs(np.trapezoid(tpr, fpr) - metrics.image_auroc(s, y)) < 1e-12
    p, r, th = metrics.pr_curve(s, y)
    p2, r2, th3 = sk.precision_recall_curve(y, s)
    np.testing.assert_allclose(p[1:], p2[:-1][::-1], atol=1e-15)
    np.testing.assert_allclose(r[1:], r2[:-1][::-1], atol=1e-15)
    np.testing.assert_array_equal(th[1:], th3[::-1])
    assert abs(np.sum(np.diff(r) * p[1:]) - metrics.image_ap(s, y)) < 1e-12
    with pytest.raises(ValueError, match="0 anomalous"):
        metrics.roc_curve(s, np.zeros_like(y))


def _pro_reference(maps, masks, limit):
    """PRO and FPR at every distinct score by their definition (regions by scipy), cut at ``limit``."""
    ndimage = pytest.importorskip("scipy.ndimage")
    regions = []  # (image, region)
    for i, k in enumerate(masks):
        lab, n = ndimage.label(k, structure=np.ones((3, 3)))
        regions += [(i, lab == j) for j in range(1, n + 1)]
    flat = np.concatenate([m.reshape(-1) for m in maps])
    normal = np.concatenate([~k.reshape(-1) for k in masks])
    fpr, pro = [0.0], [0.0]
    for t in np.unique(flat)[::-1]:
        fpr.append(np.sum((flat >= t) & normal) / normal.sum())
        pro.append(np.mean([np.sum((maps[i] >= t) & r) / r.sum() for i, r in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    j = int(np.searchsorted(fpr, limit))
    if j < len(fpr) and fpr[j] > limit:
        y = pro[j - 1] + (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1]) * (pro[j] - pro[j - 1])
        return np.append(fpr[:j], limit), np.append(pro[:j], y)
    return fpr[: j + 1], pro[: j + 1]


def test_pro_curve_matches_its_definition_and_aupro():
    g = np.random.default_rng(5)
    shapes = [(12, 15), (9, 20), (12, 15)]
    maps, masks = [], []
    for i, (h, w) in enumerate(shapes):
        m = np.round(g.random((h, w)), 2)
        k = np.zeros((h, w), dtype=bool)
        k[2:5, 3:7] = True
        if i == 1:
            k[7:9, 15:19] = True
            k[0, 0] = True  # a one-pixel region
        m[k] += 0.3
        maps.append(m)
        masks.append(k)
    for limit in (0.3, 1.0, 0.05):
        fpr, pro = metrics.pro_curve([torch.from_numpy(m) for m in maps], [torch.from_numpy(k) for k in masks], limit)
        rf, rp = _pro_reference(maps, masks, limit)
        np.testing.assert_allclose(fpr, rf, atol=1e-12)
        np.testing.assert_allclose(pro, rp, atol=1e-12)
        assert fpr[-1] == pytest.approx(limit)
        same = [0, 2]  # one batch of equal sizes: the area is the C++ AUPRO
        f2, p2 = metrics.pro_curve(np.stack([maps[i] for i in same]), np.stack([masks[i] for i in same]), limit)
        want = metrics.aupro(np.stack([maps[i] for i in same]), np.stack([masks[i] for i in same]), limit)
        assert abs(np.trapezoid(p2, f2) / limit - want) < 1e-12
    with pytest.raises(ValueError, match="regions"):
        metrics.pro_curve(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


def test_thin_curve_keeps_the_ends_and_the_area():
    g = np.random.default_rng(0)
    s, y = g.random(200_000), g.random(200_000) < 0.1
    s[y] += 0.2
    fpr, tpr, _ = metrics.roc_curve(s, y)
    x2, y2 = metrics.thin_curve(fpr, tpr, 500)
    assert len(x2) <= 1000 and (x2[0], y2[0], x2[-1], y2[-1]) == (0, 0, 1, 1)
    assert abs(np.trapezoid(y2, x2) - np.trapezoid(tpr, fpr)) < 1 / 500
    # A staircase of collinear runs keeps only its corners, and its exact area.
    x = np.array([0, 0.1, 0.2, 0.2, 0.2, 0.5, 1.0])
    yv = np.array([0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    x3, y3 = metrics.thin_curve(x, yv, 500)
    assert list(zip(x3, y3)) == [(0, 0), (0.2, 0), (0.2, 1.0), (1.0, 1.0)]
    assert np.trapezoid(y3, x3) == np.trapezoid(yv, x)


# ----------------------------------------------------------------------------- progress

def test_progress_uses_tqdm_else_plain_lines(monkeypatch):
    import io  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from pylake.evaluate import Progress  # noqa: PLC0415

    pytest.importorskip("tqdm")
    buf = io.StringIO()
    bar = Progress(20, "grid", stream=buf)
    for _ in range(20):
        bar.step()
    assert bar._bar is not None and "grid" in buf.getvalue() and "20/20" in buf.getvalue()
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    buf = io.StringIO()
    bar = Progress(20, "grid", stream=buf)
    for _ in range(20):
        bar.step()
    lines = buf.getvalue().splitlines()
    assert bar._bar is None and len(lines) == 10 and lines[-1].startswith("grid: 20/20 (")
    buf = io.StringIO()
    silent = Progress(5, "grid", enabled=False, stream=buf)
    silent.step(5)
    assert buf.getvalue() == ""
