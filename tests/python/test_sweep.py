"""`lake sweep` (pylake.sweep): the paper's ablation points, each point's metrics equal to a
`lake eval` run of its options, the same tables from this process and from a Dask
LocalCluster, runs already in the folder not run again, a plot per ablation."""

from __future__ import annotations

import json

import pytest

from pylake import datasets, evaluate, synthetic, sweep

OPTS = dict(image_size=32)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    root = synthetic.generate(tmp_path_factory.mktemp("syn"), categories=["dots"], n_train=4, n_test_good=3,
                              n_test_defect=3, size=64)
    return datasets.mvtec(root)


def test_points():
    wide = sweep.Backbone(1024, (6, 12, 18, 24))
    ks = sweep.points("k", wide)
    assert [p.label for p in ks] == ["10", "50", "100", "200", "500", "all (1024)"]
    assert [p.paper for p in ks if p.paper] == [{"image_auroc": 94.7, "pixel_aupro": 88.9}]
    assert [p.label for p in sweep.points("k", sweep.Backbone(128, (1, 2, 3)))] == ["10", "50", "100", "all (128)"]
    sel = sweep.points("selection", wide)
    assert [dict(p.options).get("seed") for p in sel] == [None, 0, 1, 2]
    assert [p.paper["image_auroc"] for p in sel] == [94.7, 81.6, 81.6, 81.6]
    tw = sweep.points("text_weight", wide)
    assert [p.x for p in tw] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert [p.note for p in tw if p.note] == ["best (paper)"] + ["clearly worse (paper)"] * 3
    assert [p.label for p in sweep.points("layers", wide)] == ["6", "12", "18", "24", "6,12,18,24"]
    assert [p.shots for p in sweep.points("shots", wide)] == [1, 2, 4]
    with pytest.raises(ValueError, match="unknown ablation"):
        sweep.points("dropout", wide)


def rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sweep_here_and_on_a_cluster(clip, archive, cats, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    kw = dict(model=archive, dataset="mvtec", options=OPTS, seeds=[0], ablations=["selection", "kind"],
              progress=False)
    files = sweep.run(cats, tmp_path / "here", clip=clip, **kw)
    sel = rows(files["selection_csv"])
    assert [r["value"] for r in sel] == ["Top-100 (variance)", "random 100 (seed 0)", "random 100 (seed 1)",
                                         "random 100 (seed 2)"]
    # Each point is the eval of its options (an independent run of lake eval's library call).
    for r, extra in zip(sel[:2], ({}, {"score": "random", "seed": 0})):
        ref = evaluate.run(clip, cats, [1], [0], tmp_path / f"ref{len(extra)}", {**OPTS, "k": 100, **extra},
                           progress=False, html=False, n_heatmaps=0)
        mean = next(m for m in json.loads(ref["json"].read_text())["summary"] if m["category"] == "mean")
        assert float(r["image_auroc"]) == 100 * mean["image_auroc"]
        assert float(r["pixel_aupro"]) == 100 * mean["pixel_aupro"]
    assert r["paper_image_auroc"] == ""  # a synthetic set: the paper's MVTec AD points are not shown
    assert [r["value"] for r in rows(files["kind_csv"])] == ["residual", "mlp"]
    assert rows(files["kind_csv"])[0]["run"] == sel[0]["run"]  # one configuration, one run
    assert len(list((tmp_path / "here" / "runs").iterdir())) == 5
    for a in ("selection", "kind"):
        assert files[f"{a}_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same tables from a cluster of 2 worker processes.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        there = sweep.run(cats, tmp_path / "there", client=client, **kw)
    for a in ("selection", "kind"):
        assert there[f"{a}_csv"].read_bytes() == files[f"{a}_csv"].read_bytes()
        assert there[f"{a}_md"].read_bytes() == files[f"{a}_md"].read_bytes()
    # Runs already in the folder are not run again.
    said = []
    sweep.run(cats, tmp_path / "here", clip=clip, log=said.append, **kw)
    assert "5 distinct runs, 0 to run (5 already in" in said[0]
