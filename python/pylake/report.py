"""report.html: the evaluation (or a `lake predict` run) as one self-contained folder.

``OUT/report.html`` links only to PNGs under ``OUT/report_files/`` by relative paths; CSS
and the few lines of JavaScript (sorting the tables) are inline, nothing is fetched from
the network, so the folder opens from disk and can be moved or archived whole. Per
(category, shot count), at the first seed:

* image ROC and PR, pixel ROC and PR, the PRO curve up to FPR 0.3 (area shaded), and the
  histogram of image scores of the normal and the anomalous test images with the calibrated
  image threshold. The curve points come from :mod:`pylake.metrics` (``roc_curve``,
  ``pr_curve``, ``pro_curve``: the curves of the reported metrics) and are also written to
  ``curves.json`` beside the plots;
* a gallery (image / overlay / ground truth) of the highest-scored anomalous images, the
  lowest-scored anomalous ones (misses) and the highest-scored normal ones (false alarms).
  All overlays of a category share one colour scale, 0 to the ``SCALE_QUANTILE`` quantile
  of the normal test images' map values (stated on the page), so a normal image looks
  calm and an anomaly stands out, unlike per-image min-max colours.

The maps behind the pixel curves, the gallery and the scale are each test map
area-downscaled to a longest side of ``MAP_SIDE`` pixels (masks nearest-resized to the same
size), which bounds memory; the tables' pixel metrics stay those of the full-resolution
maps, and each pixel plot states both. Plots are drawn with matplotlib (Agg, imported only
here, only when a report is written); PNGs go through :mod:`pylake._outputs` (atomic).
"""

from __future__ import annotations

import html
import importlib.util
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np
import torch

from . import _outputs

FILES = "report_files"  # the report's PNGs, beside report.html
MAP_SIDE = 256  # longest side of the maps kept for the report (pixel curves, gallery, scale)
GALLERY_SIDE = 128  # longest side of one gallery panel
GALLERY_N = 3  # images per gallery group
SCALE_QUANTILE = 0.999  # the colour scale's top: this quantile of the normal test maps' values
FIGSIZE, DPI = (4.0, 3.0), 80  # 320 x 240 px plots
CURVE_POINTS = 500  # pixel curves are thinned to about this many points for plotting
NEEDS_MATPLOTLIB = "report.html needs matplotlib: pip install 'pylake[report]'"


def available() -> bool:
    """Whether matplotlib (the report's only extra dependency) is importable."""
    return importlib.util.find_spec("matplotlib") is not None


def require() -> None:
    if not available():
        raise ImportError(NEEDS_MATPLOTLIB)


# ----------------------------------------------------------------------------- maps

def downscale_map(amap: torch.Tensor, side: int = MAP_SIDE) -> torch.Tensor:
    """An (H, W) map area-averaged to a longest side of at most ``side`` (float32)."""
    h, w = amap.shape
    f = min(1.0, side / max(h, w))
    size = (max(1, round(h * f)), max(1, round(w * f)))
    m = amap.detach().float().cpu()
    if size == (h, w):
        return m.clone()
    return torch.nn.functional.interpolate(m[None, None], size=size, mode="area")[0, 0]


def downscale_mask(mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    from . import _C  # noqa: PLC0415

    m = mask.bool().cpu()
    return m.clone() if tuple(m.shape) == tuple(size) else _C.resize_mask(m, int(size[0]), int(size[1]))


def colour_scale(maps: Sequence[torch.Tensor], quantile: float = SCALE_QUANTILE) -> Tuple[float, float]:
    """(0, the ``quantile`` quantile of every value of ``maps``): the colours of one category."""
    if not maps:
        return 0.0, 1.0
    v = np.concatenate([m.reshape(-1).numpy() for m in maps]).astype(np.float64)
    hi = float(np.quantile(v, quantile))
    if not hi > 0:
        hi = float(v.max()) if v.max() > 0 else 1.0
    return 0.0, hi


@dataclass
class RunData:
    """What the report needs of one (category, shots, seed) run: the per-image rows of
    images.csv, each test image's downscaled map (and mask, ``None`` without one), the
    calibrated thresholds and the run's metrics."""

    category: str
    shots: int
    seed: int
    rows: List[dict]
    maps: List[torch.Tensor]
    masks: List[Optional[torch.Tensor]]
    metrics: Dict[str, Optional[float]]
    image_threshold: Optional[float] = None
    pixel_threshold: Optional[float] = None
    scale: Tuple[float, float] = (0.0, 1.0)
    scale_note: str = ""

    @property
    def run_dir(self) -> str:
        return f"{self.category}/{self.shots}shot_seed{self.seed}"


def run_scale(data: RunData) -> RunData:
    """Sets ``data.scale`` from its normal test images (all images when it has none)."""
    normal = [m for m, r in zip(data.maps, data.rows) if r["label"] == 0]
    src = normal or data.maps
    data.scale = colour_scale(src)
    what = f"the {len(normal)} normal test images" if normal else f"all {len(src)} test images (no normal ones)"
    data.scale_note = (f"0 to {data.scale[1]:.6g}: the {100 * SCALE_QUANTILE:g}th percentile of the map values of "
                       f"{what}, the same for every overlay of this category")
    return data


# ----------------------------------------------------------------------------- plots

def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.15, top=0.91)  # fixed margins: no layout pass
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return _outputs.write_bytes(path, buf.getvalue())


def _curve_plot(path: Path, x, y, title: str, xlabel: str, ylabel: str, step: bool = False,
                shade_to: Optional[float] = None, diagonal: bool = False) -> Path:
    fig, ax = _figure()
    if step:
        ax.step(x, y, where="pre", lw=1.5, color="#1f5fa8")
    else:
        ax.plot(x, y, lw=1.5, color="#1f5fa8")
    if shade_to is not None:
        ax.fill_between(x, y, alpha=0.25, color="#1f5fa8")
        ax.set_xlim(0, shade_to)
    else:
        ax.set_xlim(0, 1)
    if diagonal:
        ax.plot([0, 1], [0, 1], lw=0.8, ls=":", color="grey")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _histogram(path: Path, rows: Sequence[dict], threshold: Optional[float], title: str) -> Path:
    fig, ax = _figure()
    normal = [r["score"] for r in rows if r.get("label") == 0]
    anomalous = [r["score"] for r in rows if r.get("label") == 1]
    every = normal + anomalous + ([threshold] if threshold is not None else [])
    lo, hi = min(every), max(every)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
    if normal:
        ax.hist(normal, bins=bins, alpha=0.6, color="#2b8a3e", label=f"normal ({len(normal)})")
    if anomalous:
        ax.hist(anomalous, bins=bins, alpha=0.6, color="#c92a2a", label=f"anomalous ({len(anomalous)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("image score", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _colourbar(path: Path, lo: float, hi: float) -> Path:
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    x = np.linspace(0, 1, 256)[:, None]
    jet = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0, 1)  # evaluate.write_heatmap's colours
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(4.0, 0.55), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.5, 0.92, 0.4))
    ax.imshow(x.T, aspect="auto", cmap=ListedColormap(jet), extent=(lo, hi, 0, 1))
    ax.set_yticks([])
    ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return _outputs.write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- one run

def _trapezoid(y, x) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _fmt(v: Optional[float], pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.4g}"


def write_run(out: Path, data: RunData) -> dict:
    """The plots, gallery PNGs and curves.json of one run under ``out/report_files/``;
    returns what the page shows of it (paths relative to ``out``)."""
    from . import metrics  # noqa: PLC0415

    require()
    t0 = time.perf_counter()
    out = Path(out)
    rel = f"{FILES}/{data.run_dir}"
    d = out / rel
    labels = np.array([r["label"] for r in data.rows])
    scores = np.array([r["score"] for r in data.rows], dtype=np.float64)
    plots: List[dict] = []
    curves: Dict[str, dict] = {}

    def plot(kind: str, title: str, caption: str, make) -> None:
        if make is None:
            plots.append({"kind": kind, "title": title, "src": None, "caption": caption})
            return
        make(d / f"{kind}.png")
        plots.append({"kind": kind, "title": title, "src": f"{rel}/{kind}.png", "caption": caption})

    both = bool((labels == 0).any() and (labels == 1).any())
    if both:
        fpr, tpr, _ = metrics.roc_curve(scores, labels)
        prec, rec, _ = metrics.pr_curve(scores, labels)
        auc, ap = _trapezoid(tpr, fpr), float(np.sum(np.diff(rec) * prec[1:]))
        curves["image_roc"] = {"x": fpr.tolist(), "y": tpr.tolist(), "area": auc}
        curves["image_pr"] = {"x": rec.tolist(), "y": prec.tolist(), "area": ap}
        plot("image_roc", f"image ROC, AUROC {100 * auc:.1f}", "image level, every test image",
             lambda p: _curve_plot(p, fpr, tpr, f"image ROC (AUROC {100 * auc:.1f})", "false-positive rate",
                                   "true-positive rate", diagonal=True))
        plot("image_pr", f"image PR, AP {100 * ap:.1f}", "image level, every test image",
             lambda p: _curve_plot(p, rec, prec, f"image PR (AP {100 * ap:.1f})", "recall", "precision", step=True))
    else:
        why = "undefined: the test split lacks " + ("normal" if not (labels == 0).any() else "anomalous") + " images"
        plot("image_roc", "image ROC", why, None)
        plot("image_pr", "image PR", why, None)

    with_mask = [i for i, m in enumerate(data.masks) if m is not None]
    px_maps = [data.maps[i] for i in with_mask]
    px_masks = [data.masks[i] for i in with_mask]
    regions = bool(px_masks) and any(bool(m.any()) for m in px_masks) and any(bool((~m).any()) for m in px_masks)
    if regions:
        flat_s = torch.cat([m.reshape(-1) for m in px_maps])
        flat_y = torch.cat([m.reshape(-1) for m in px_masks])
        full = data.metrics
        note = (f"pixel level on the maps downscaled to at most {MAP_SIDE} px ({len(px_maps)} images); the table's "
                "values are at full resolution: ")
        fpr, tpr, _ = metrics.roc_curve(flat_s, flat_y)
        prec, rec, _ = metrics.pr_curve(flat_s, flat_y)
        pauc, pap = _trapezoid(tpr, fpr), float(np.sum(np.diff(rec) * prec[1:]))
        fx, fy = metrics.thin_curve(fpr, tpr, CURVE_POINTS)
        rx, ry = metrics.thin_curve(rec, prec, CURVE_POINTS)
        curves["pixel_roc"] = {"x": fx.tolist(), "y": fy.tolist(), "area": pauc, "area_plotted": _trapezoid(fy, fx)}
        curves["pixel_pr"] = {"x": rx.tolist(), "y": ry.tolist(), "area": pap,
                              "area_plotted": float(np.sum(np.diff(rx) * ry[1:]))}
        plot("pixel_roc", f"pixel ROC, AUROC {100 * pauc:.1f}", note + f"AUROC {_fmt(full.get('pixel_auroc'))}",
             lambda p: _curve_plot(p, fx, fy, f"pixel ROC (AUROC {100 * pauc:.1f})", "false-positive rate",
                                   "true-positive rate", diagonal=True))
        plot("pixel_pr", f"pixel PR, AP {100 * pap:.1f}", note + f"AP {_fmt(full.get('pixel_ap'))}",
             lambda p: _curve_plot(p, rx, ry, f"pixel PR (AP {100 * pap:.1f})", "recall", "precision", step=True))
        fp_all, pro_all = metrics.pro_curve(px_maps, px_masks, 0.3)  # a list: the images' sizes may differ
        aupro = _trapezoid(pro_all, fp_all) / 0.3
        fp_x, pro_y = metrics.thin_curve(fp_all / 0.3, pro_all, CURVE_POINTS)
        fp_x = fp_x * 0.3
        curves["pixel_pro"] = {"x": fp_x.tolist(), "y": pro_y.tolist(), "area": aupro, "fpr_limit": 0.3,
                               "area_plotted": _trapezoid(pro_y, fp_x) / 0.3}
        plot("pixel_pro", f"PRO up to FPR 0.3, AUPRO {100 * aupro:.1f}",
             note + f"AUPRO {_fmt(full.get('pixel_aupro'))}; the shaded area / 0.3 is the AUPRO",
             lambda p: _curve_plot(p, fp_x, pro_y, f"PRO (AUPRO@0.3 {100 * aupro:.1f})", "false-positive rate",
                                   "per-region overlap", shade_to=0.3))
    else:
        why = "undefined: no ground-truth masks with both anomalous and normal pixels"
        for kind, title in (("pixel_roc", "pixel ROC"), ("pixel_pr", "pixel PR"), ("pixel_pro", "PRO up to FPR 0.3")):
            plot(kind, title, why, None)

    thr = data.image_threshold
    plot("score_histogram", "image scores", "normal vs anomalous test images; " + (
        f"dashed: the calibrated image threshold {thr:.6g}" if thr is not None else
        "no calibrated threshold (leave-one-out calibration needs at least 2 shots)"),
        lambda p: _histogram(p, data.rows, thr, "image scores"))
    _colourbar(d / "colour_scale.png", *data.scale)
    _outputs.write_text(d / "curves.json", _outputs.dumps(curves) + "\n")

    gallery = _gallery(out, rel, data)
    return {"category": data.category, "shots": data.shots, "seed": data.seed, "plots": plots, "gallery": gallery,
            "scale": list(data.scale), "scale_note": data.scale_note, "scale_src": f"{rel}/colour_scale.png",
            "curves": f"{rel}/curves.json", "image_threshold": thr, "n_test": len(data.rows),
            "seconds": time.perf_counter() - t0}


def _gallery(out: Path, rel: str, data: RunData) -> List[dict]:
    """Three groups of up to GALLERY_N images, each an image / overlay / mask sheet."""
    from .evaluate import write_heatmap  # noqa: PLC0415

    order = sorted(range(len(data.rows)), key=lambda i: -data.rows[i]["score"])
    anomalous = [i for i in order if data.rows[i]["label"] == 1]
    normal = [i for i in order if data.rows[i]["label"] == 0]
    groups = [("top_anomalous", "highest-scored anomalous images", anomalous[:GALLERY_N]),
              ("misses", "lowest-scored anomalous images (misses)", anomalous[::-1][:GALLERY_N][::-1]),
              ("false_alarms", "highest-scored normal images (false alarms)", normal[:GALLERY_N])]
    written: Dict[int, str] = {}
    result = []
    for name, title, idx in groups:
        items = []
        for i in idx:
            r = data.rows[i]
            if i not in written:
                amap = downscale_map(data.maps[i], GALLERY_SIDE)
                mask = data.masks[i]
                mask = None if mask is None else downscale_mask(mask, tuple(amap.shape))
                src = f"{rel}/gallery/{r['key']}.png"
                write_heatmap(out / src, Path(r["path"]), amap, *data.scale, mask=mask)
                written[i] = src
            items.append({**{k: r.get(k) for k in ("key", "path", "defect", "label", "score", "pred_label")},
                          "src": written[i], "map_max": float(data.maps[i].max()),
                          "relative_max": float(data.maps[i].max()) / data.scale[1]})
        result.append({"group": name, "title": title, "items": items})
    return result


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:16px;color:#222;background:#fff}
h1{font-size:22px;margin:4px 0 8px}h2{font-size:18px;border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px}
.banner{background:#fff3bf;border:2px solid #f08c00;color:#7a4100;padding:8px 12px;font-weight:600;margin:8px 0}
.warning{background:#ffe3e3;border:1px solid #e03131;padding:6px 10px;margin:6px 0}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f1f3f5}td.name,th.name{text-align:left}tr.mean td{font-weight:600;background:#f8f9fa}
th[data-sort]{cursor:pointer}th[data-sort]:after{content:" \\21C5";color:#999}
.plots{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:320px}figure img{width:320px;height:240px;
border:1px solid #eee}figcaption{font-size:11px;color:#555}.missing{width:320px;height:240px;display:flex;
align-items:center;justify-content:center;border:1px dashed #bbb;color:#888;font-size:12px;text-align:center}
.scale{font-size:12px;color:#333}.scale img{vertical-align:middle;display:block}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:600}dd{margin:0}
td img{display:block;max-height:128px}code{font-size:12px}.wide{overflow-x:auto}
"""

_JS = """
document.querySelectorAll('table.sortable th[data-sort]').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,d=th.dataset.dir==='desc'?'asc':'desc';th.dataset.dir=d;
Array.from(b.rows).sort(function(x,y){var a=parseFloat(x.cells[i].dataset.value),c=parseFloat(y.cells[i].dataset.value);
return d==='asc'?a-c:c-a;}).forEach(function(r){b.appendChild(r);});});});
window.addEventListener('load',function(){var im=Array.from(document.images);document.body.dataset.imagesLoaded=
im.filter(function(i){return i.complete&&i.naturalWidth>0;}).length+'/'+im.length;});
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _src(rel: str) -> str:
    return quote(rel, safe="/")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n<script>{_JS}</script>\n</body></html>\n")


def _banner(meta: dict) -> str:
    if not meta.get("random_weights"):
        return ""
    return ("<div class=\"banner\" id=\"random-weights\">Random-weight backbone: these numbers only show that the "
            "pipeline runs; they say nothing about LAKE.</div>\n")


def _settings(meta: dict, extra: Sequence[Tuple[str, str]] = ()) -> str:
    items = [("model", meta.get("model")), ("backbone", meta.get("backbone"))]
    items += [(k, meta.get(k)) for k in ("dataset", "root", "shots", "seeds") if k in meta]
    opts = {k: v for k, v in (meta.get("options") or {}).items() if v is not None}
    if opts:
        items.append(("method options", ", ".join(f"{k}={v}" for k, v in opts.items())))
    items += list(extra)
    return "<dl id=\"settings\">" + "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in items
                                            if v is not None) + "</dl>\n"


_LABELS = {"image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max",
           "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1_max": "pixel F1-max",
           "pixel_aupro": "pixel AUPRO (FPR 0.3)"}


def _summary_table(summary: Sequence[dict], dataset: str, categories: Sequence[str]) -> str:
    from .evaluate import METRIC_KEYS  # noqa: PLC0415
    from .paper import PAPER, paper_set  # noqa: PLC0415

    key = paper_set(dataset or "", categories)
    head = "".join(f"<th>{_e(_LABELS[k])}</th>" for k in METRIC_KEYS)
    paper_col = "<th>image AUROC (paper)</th>" if key else ""
    rows = []
    for r in summary:
        cells = "".join(f"<td data-key=\"{k}\" data-value=\"{'' if r[k] is None else repr(float(r[k]))}\">"
                        f"{_fmt(r[k])}</td>" for k in METRIC_KEYS)
        if key:
            paper = f"{PAPER[key]:.1f}" if r["category"] == "mean" and r["shots"] == 1 else "-"
            cells += f"<td class=\"paper\">{paper}</td>"
        cls = " class=\"mean\"" if r["category"] == "mean" else ""
        rows.append(f"<tr{cls} data-category=\"{_e(r['category'])}\" data-shots=\"{r['shots']}\"><td class=\"name\">"
                    f"{_e(r['category'])}</td><td>{r['shots']}</td><td>{r['seeds']}</td>{cells}</tr>")
    return (f"<div class=\"wide\"><table id=\"summary\"><thead><tr><th class=\"name\">category</th><th>shots</th>"
            f"<th>seeds</th>{head}{paper_col}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n")


def _paper_table(summary: Sequence[dict], dataset: str, categories: Sequence[str]) -> str:
    from .paper import CATEGORIES, NAMES, PAPER, PEERS, SHOT_COLUMNS, paper_set  # noqa: PLC0415

    key = paper_set(dataset or "", categories)
    if key is None:
        return ""
    means = {r["shots"]: r["image_auroc"] for r in summary if r["category"] == "mean"}
    shots = sorted(set(SHOT_COLUMNS) | set(means))
    n, total = len(set(categories)), len(CATEGORIES[key])
    part = "" if n == total else f" ({n} of its {total} categories: not comparable with the published means)"
    head = "".join(f"<th>{k}-shot</th>" for k in shots)
    lines = ["<tr><td class=\"name\">LAKE (ours, this run)</td>" + "".join(
        f"<td>{_fmt(means.get(k))}</td>" for k in shots) + "</tr>",
        "<tr><td class=\"name\">LAKE (paper, shots not stated)</td>" + "".join(
        f"<td>{PAPER[key]:.1f}</td>" if k == 1 else "<td>-</td>" for k in shots) + "</tr>"]
    for name, vals in PEERS.get(key, {}).items():
        by = dict(zip(SHOT_COLUMNS, vals))
        lines.append(f"<tr><td class=\"name\">{_e(name)} (published)</td>" + "".join(
            f"<td>{by[k]:.1f}</td>" if k in by else "<td>-</td>" for k in shots) + "</tr>")
    return (f"<h3>Image AUROC (%), {_e(NAMES[key])}, mean over categories{_e(part)}</h3>\n<table id=\"paper\"><thead>"
            f"<tr><th class=\"name\">method</th>{head}</tr></thead><tbody>" + "".join(lines) + "</tbody></table>\n")


def _plots_html(section: dict) -> str:
    figs = []
    for p in section["plots"]:
        if p["src"] is None:
            inner = f"<div class=\"missing\" data-plot=\"{p['kind']}\">{_e(p['title'])}: {_e(p['caption'])}</div>"
        else:
            inner = (f"<img src=\"{_src(p['src'])}\" alt=\"{_e(p['title'])}\" data-plot=\"{p['kind']}\" "
                     f"width=\"320\" height=\"240\">")
        figs.append(f"<figure>{inner}<figcaption>{_e(p['title'])}. {_e(p['caption'])}</figcaption></figure>")
    return "<div class=\"plots\">" + "".join(figs) + "</div>\n"


def _word(label) -> str:
    return "-" if label is None else ("anomalous" if label else "normal")


def _image_table(items: Sequence[dict], table_id: str, with_truth: bool) -> str:
    head = ["<th class=\"name\">image</th>"]
    if with_truth:
        head.append("<th class=\"name\">defect</th><th>label</th>")
    head.append("<th data-sort=\"score\" data-dir=\"desc\">score</th><th>predicted</th>")
    if with_truth:
        head.append("<th title=\"the map's maximum over the top of the colour scale\">max / scale</th>")
    head.append("<th class=\"name\">" + ("image / overlay / ground truth" if with_truth else "image / overlay")
                + "</th>")
    rows = []
    for it in items:
        cells = [f"<td class=\"name\" title=\"{_e(it['path'])}\">{_e(it['key'])}</td>"]
        if with_truth:
            cells.append(f"<td class=\"name\">{_e(it.get('defect'))}</td><td>{_word(it.get('label'))}</td>")
        cells.append(f"<td data-value=\"{it['score']!r}\">{it['score']:.6g}</td><td>{_word(it.get('pred_label'))}</td>")
        if with_truth:
            cells.append(f"<td>{it['relative_max']:.2f}</td>")
        cells.append(f"<td class=\"name\"><img src=\"{_src(it['src'])}\" alt=\"{_e(it['key'])}\"></td>")
        rows.append(f"<tr data-key=\"{_e(it['key'])}\">" + "".join(cells) + "</tr>")
    return (f"<div class=\"wide\"><table class=\"gallery sortable\" id=\"{_e(table_id)}\"><thead><tr>{''.join(head)}"
            "</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n")


def _section_html(s: dict) -> str:
    run = f"{s['category']}-{s['shots']}shot-seed{s['seed']}"
    parts = [f"<div class=\"run\" id=\"run-{_e(run)}\" data-shots=\"{s['shots']}\" data-seed=\"{s['seed']}\">",
             f"<h3>{s['shots']}-shot, seed {s['seed']} ({s['n_test']} test images; curve points: "
             f"<a href=\"{_src(s['curves'])}\">curves.json</a>)</h3>", _plots_html(s),
             f"<div class=\"scale\" data-lo=\"{s['scale'][0]!r}\" data-hi=\"{s['scale'][1]!r}\"><b>Colour scale</b> of "
             f"the overlays: {_e(s['scale_note'])}.<img src=\"{_src(s['scale_src'])}\" alt=\"colour scale\" "
             f"data-plot=\"colour_scale\"></div>"]
    for g in s["gallery"]:
        parts.append(f"<h4>{_e(g['title'])}</h4>")
        parts.append(_image_table(g["items"], f"gallery-{run}-{g['group']}", True) if g["items"] else
                     "<p>none</p>")
    parts.append("</div>")
    return "\n".join(parts) + "\n"


def write_eval_report(out: Path, sections: Sequence[dict], summary: Sequence[dict], meta: dict,
                      warnings: Sequence[str] = (), categories: Sequence[str] = ()) -> Path:
    """OUT/report.html of `lake eval` (written atomically, after its PNGs)."""
    cats = list(categories) or list(dict.fromkeys(s["category"] for s in sections))
    body = [f"<h1>LAKE evaluation: {_e(meta.get('dataset', ''))}</h1>", _banner(meta)]
    body += [f"<div class=\"warning\">Warning: {_e(w)}</div>" for w in warnings]
    body += ["<h2 id=\"summary-title\">Summary</h2>", "<p>Metrics in %, mean over seeds per category and over "
             "categories in the <b>mean</b> rows; - = undefined. Same numbers as report.json / report.csv.</p>",
             _summary_table(summary, meta.get("dataset", ""), cats),
             _paper_table(summary, meta.get("dataset", ""), cats),
             "<h2>Settings</h2>", _settings(meta),
             "<p>Per category below: the first seed of each shot count. Pixel curves use the maps downscaled to at "
             f"most {MAP_SIDE} px (stated on each); galleries show at most {GALLERY_N} images per group, "
             "sortable by score (click the header).</p>"]
    for cat in cats:
        body.append(f"<section class=\"category\" id=\"category-{_e(cat)}\" data-category=\"{_e(cat)}\">"
                    f"<h2>{_e(cat)}</h2>")
        body += [_section_html(s) for s in sections if s["category"] == cat]
        body.append("</section>")
    return _outputs.write_text(Path(out) / "report.html", _page(f"LAKE evaluation: {meta.get('dataset', '')}",
                                                               "\n".join(body)))


def write_predict_report(out: Path, rows: Sequence[dict], maps: Sequence[torch.Tensor], meta: dict,
                         image_threshold: Optional[float] = None) -> Path:
    """OUT/report.html of `lake predict --html`: every image with its score, predicted label
    and overlay, sorted by score (highest first). One colour scale for all: 0 to the
    SCALE_QUANTILE quantile of the maps of the images predicted normal (of all images when
    the model has no threshold or none is predicted normal)."""
    from .evaluate import write_heatmap  # noqa: PLC0415

    require()
    out = Path(out)
    normal = [m for m, r in zip(maps, rows) if r.get("pred_label") == 0]
    scale = colour_scale(normal or list(maps))
    what = (f"the {len(normal)} images predicted normal" if normal else
            f"all {len(maps)} images (none is predicted normal, or the model has no threshold)")
    note = f"0 to {scale[1]:.6g}: the {100 * SCALE_QUANTILE:g}th percentile of the map values of {what}"
    items = []
    for r, m in sorted(zip(rows, maps), key=lambda rm: -rm[0]["score"]):
        src = f"{FILES}/predict/{r['key']}.png"
        write_heatmap(out / src, Path(r["path"]), downscale_map(m, GALLERY_SIDE), *scale)
        items.append({**r, "src": src})
    _colourbar(out / FILES / "predict_colour_scale.png", *scale)
    thr = "none (labels are -)" if image_threshold is None else f"{image_threshold:.6g}"
    body = [f"<h1>LAKE predictions: {_e(meta.get('class_name', ''))}</h1>", _banner(meta), "<h2>Settings</h2>",
            _settings(meta, [("images", str(len(rows))), ("image threshold", thr)]),
            f"<div class=\"scale\" data-lo=\"{scale[0]!r}\" data-hi=\"{scale[1]!r}\"><b>Colour scale</b> of the "
            f"overlays: {_e(note)}.<img src=\"{FILES}/predict_colour_scale.png\" alt=\"colour scale\" "
            "data-plot=\"colour_scale\"></div>", "<h2>Images, by score</h2>",
            _image_table(items, "predictions", False)]
    return _outputs.write_text(out / "report.html", _page("LAKE predictions", "\n".join(body)))

