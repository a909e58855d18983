"""`lake predict` as a library call: score image files with a fitted model and write, per
image and atomically, its overlay and raw map, then the per-image table (and, on request,
report.html). The per-image steps (:func:`write_image_outputs`, :func:`prediction_row`)
are the ones every runner uses, so outputs do not depend on how the images were scheduled.

Outputs under ``out`` are named by :func:`pylake._outputs.output_keys` (each image's path
relative to the inputs' common folder): ``maps/<key>.npy`` (or ``.png``, 16 bit),
``overlays/<key>.png`` and ``predictions.csv`` / ``predictions.json``.

Overlays share one colour scale: 0 to the model's calibrated pixel threshold (the
``quantile`` of the normal maps' values, 0.99 by default), so a normal image stays cool and
red means above the threshold. A model without a pixel threshold colours each overlay
0 to its own maximum, and says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import _outputs, pipeline

PREDICT_FIELDS = ("path", "key", "category", "defect", "label", "score", "pred_label")
MAP_FORMATS = ("npy", "png16")
# An image that fails to decode: "fail" stops the run (a ValueError naming it); "record" writes
# an error row for it (predictions.csv's "error" column) and goes on.
ON_ERROR = ("fail", "record")


def overlay_scale(model) -> Tuple[Optional[Tuple[float, float]], str]:
    """The overlays' colour scale ``(lo, hi)`` for ``model`` and a sentence saying what it is;
    ``None`` (each overlay on its own range) when the model has no pixel threshold."""
    t = model.pixel_threshold
    if t is None or not t > 0:
        return None, ("each overlay is coloured 0 to its own maximum: the model has no pixel threshold "
                      "(fit with calibration for one shared scale)")
    return (0.0, float(t)), f"overlays coloured 0 to {float(t):.6g}, the model's calibrated pixel threshold"


def output_paths(out: Union[str, os.PathLike], key: str, map_format: str = "npy") -> Dict[str, Path]:
    """Where the outputs of the image with output key ``key`` go."""
    if map_format not in MAP_FORMATS:
        raise ValueError(f"map_format must be one of {MAP_FORMATS}, got {map_format!r}")
    out = Path(out)
    return {"overlay": out / "overlays" / f"{key}.png",
            "map": out / "maps" / f"{key}.{'npy' if map_format == 'npy' else 'png'}"}


def write_image_outputs(out: Union[str, os.PathLike], key: str, image: Union[str, os.PathLike],
                        amap: torch.Tensor, map_format: str = "npy",
                        scale: Optional[Tuple[float, float]] = None) -> Dict[str, Path]:
    """One image's overlay (``scale``: the colour range; ``None``: the map's own) and raw
    map, each written atomically; the map last, so an existing map means a complete image."""
    from .evaluate import write_heatmap  # noqa: PLC0415  (evaluate imports this module's siblings)

    paths = output_paths(out, key, map_format)
    lo, hi = scale if scale is not None else (None, None)
    write_heatmap(paths["overlay"], Path(image), amap, lo, hi)
    if map_format == "npy":
        _outputs.save_npy(paths["map"], amap)
    else:
        _outputs.write_png(paths["map"], (amap.clamp(0, 1) * 65535 + 0.5).floor().to(torch.int32).to(torch.uint16))
    return paths


def prediction_row(path: Union[str, os.PathLike], key: str, model, pred) -> dict:
    """The per-image table row of one scored image (a :class:`pylake.Prediction` with B = 1)."""
    return {"path": str(path), "key": key, "category": model.class_name, "defect": None, "label": None,
            "score": float(pred.pred_score[0]),
            "pred_label": None if pred.pred_label is None else int(pred.pred_label[0])}


def error_row(path: Union[str, os.PathLike], key: str, class_name: str, error: BaseException) -> dict:
    """The table row of an image that could not be scored (``on_error="record"``): no score,
    the error's message in the ``error`` column."""
    return {"path": str(path), "key": key, "category": class_name, "defect": None, "label": None, "score": None,
            "pred_label": None, "error": str(error)}


def write_predictions(out: Union[str, os.PathLike], rows: Sequence[dict]) -> Dict[str, Path]:
    """``predictions.csv`` / ``.json`` of ``rows`` (in input order), atomically; an ``error``
    column only when some image failed."""
    fields = PREDICT_FIELDS + (("error",) if any("error" in r for r in rows) else ())
    return _outputs.write_table(rows, Path(out) / "predictions", fields)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR} (CLI: --on-error), got {on_error!r}")
    return on_error


def run(model, images: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike], *,
        map_format: str = "npy", batch_size: Optional[int] = None, io_threads: Optional[int] = None,
        html: bool = False, meta: Optional[dict] = None, progress: bool = False, command: str = "predict",
        log: Callable[[str], None] = lambda s: None, on_error: str = "fail") -> List[dict]:
    """Score ``images`` (files) with ``model`` and write every output into ``out``; returns
    the per-image rows in input order. ``batch_size`` / ``io_threads``: as
    :func:`pylake.pipeline.scored` (the default keeps every score bit-identical to
    ``model.score(path)`` on the CPU). ``html``: also report.html (:mod:`pylake.report`).
    ``on_error``: :data:`ON_ERROR`. While running, ``out`` holds an ``INCOMPLETE`` marker.
    :func:`pylake.distributed.predict` runs the same steps on a Dask cluster."""
    from .evaluate import Progress  # noqa: PLC0415

    if html:
        from . import report  # noqa: PLC0415

        report.require()
    output_paths(out, "x", map_format)  # the format is checked before anything is written
    check_on_error(on_error)
    keys = _outputs.output_keys(images)  # a duplicate input is an error before anything is written
    out = Path(out)
    marker = _outputs.RunMarker(out, command)
    scale, note = overlay_scale(model)
    log("note: " + note)
    rows: List[Optional[dict]] = [None] * len(images)
    small_maps: List[Optional[torch.Tensor]] = [None] * len(images)
    bar = Progress(len(images), "predict", progress)
    with pipeline.Writer() as writer:
        for i, pred, _ in pipeline.scored(model, images, batch_size, io_threads,
                                          on_error="raise" if on_error == "fail" else "yield"):
            if isinstance(pred, BaseException):
                rows[i] = error_row(images[i], keys[i], model.class_name, pred)
                log(f"error: {pred}")
                bar.step()
                continue
            amap = pred.anomaly_map[0]
            writer.submit(write_image_outputs, out, keys[i], images[i], amap, map_format, scale)
            rows[i] = prediction_row(images[i], keys[i], model, pred)
            if html:
                small_maps[i] = report.downscale_map(amap)
            bar.step()
    bar.close()
    write_predictions(out, rows)
    if html:
        scored = [i for i, r in enumerate(rows) if "error" not in r]
        report.write_predict_report(out, [rows[i] for i in scored], [small_maps[i] for i in scored], dict(meta or {}),
                                    model.image_threshold)
    marker.done()
    return rows
