"""The user-facing walkthroughs run end to end on real images with a random-weight CLIP:
examples/notebooks/quickstart.ipynb, executed headless by nbclient, and
examples/python/01_fit_and_score.py, run as a script. About 30 s each on 2 cores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "notebooks" / "quickstart.ipynb"
EXAMPLE = ROOT / "examples" / "python" / "01_fit_and_score.py"
GRID = (ROOT.parent / "shared" / "data" / "mvtec_ad" / "grid").resolve()


@pytest.fixture(scope="module")
def grid() -> Path:
    if not (GRID / "train" / "good").is_dir() or not (GRID / "test").is_dir():
        pytest.skip(f"{GRID} is absent: the notebook and the example need the MVTec AD 'grid' images in ../shared/data")
    return GRID


@pytest.fixture
def clean_env(monkeypatch):
    """The walkthroughs' default path: the generated random-weight model, matplotlib's
    notebook backend."""
    monkeypatch.delenv("LAKE_MODEL", raising=False)
    monkeypatch.delenv("LAKE_DATA", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)


def python3_kernel_is_this_python() -> None:
    """nbclient starts the kernel spec "python3": it must run this interpreter (the venv's),
    which has torch, pylake's dependencies and ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail(f"no 'python3' Jupyter kernel: run `{sys.executable} -m ipykernel install --sys-prefix`")
    exe = spec.argv[0]
    # jupyter_client replaces a bare "python" / "python3" / "python3.X" by sys.executable.
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if exe not in bare:
        assert Path(exe).resolve() == Path(sys.executable).resolve(), (
            f"the 'python3' kernel spec ({spec.resource_dir}) runs {exe}, not {sys.executable}: "
            f"run `{sys.executable} -m ipykernel install --sys-prefix`")


def cell(nb, tag: str):
    found = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r} in {NOTEBOOK.name}, found {len(found)}"
    return found[0]


def stdout(c) -> str:
    return "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def has_figure(c) -> bool:
    return any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in c.outputs)


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is missing: pip install -r requirements.txt")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"cell {c.id} of {NOTEBOOK.name} has outputs"


def test_quickstart_notebook_runs(grid, clean_env):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is missing: pip install -r requirements.txt")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is missing: pip install -r requirements.txt")
    pytest.importorskip("ipykernel", reason="ipykernel is missing: pip install -r requirements.txt")
    pytest.importorskip("matplotlib", reason="matplotlib is missing: pip install -r requirements.txt")
    python3_kernel_is_this_python()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    errors = [(c.id, o.get("ename"), o.get("evalue")) for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(stdout(c) for c in nb.cells if c.cell_type == "code")
    assert "RANDOM WEIGHTS" in text
    assert "7 shots" in text

    heat = cell(nb, "heatmap")
    assert re.search(r"^broken/000\.png: score \d+\.\d+ -> (anomalous|normal)$", stdout(heat), re.M), stdout(heat)
    assert has_figure(heat), "the heatmap cell produced no figure"

    lines = stdout(cell(nb, "explain")).splitlines()
    assert len(lines) == 5, lines
    for line in lines:
        assert re.fullmatch(r"block \d+ channel \d+: deviation \d+\.\d+", line), line

    assert has_figure(cell(nb, "neuron-map")), "the top neuron's map was not plotted"


def test_fit_and_score_example(grid, clean_env, tmp_path):
    from PIL import Image

    r = subprocess.run([sys.executable, str(EXAMPLE), "--data", str(grid.parent), "--category", grid.name,
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "WARNING: RANDOM WEIGHTS" in out
    assert re.search(r"^fit: 7 normal images, 224 px", out, re.M), out
    assert re.search(r"^calibrate: image threshold \d+\.\d+, pixel threshold \d+\.\d+$", out, re.M), out

    folders = sorted(d for d in (grid / "test").iterdir() if d.is_dir())
    expected = [f"{d.name}/{p.name}" for d in folders for p in sorted(d.glob("*.png"))]
    per_image = r"^\S+ \d+\.\d+(?:e-?\d+)? (?:anomalous|normal) map \d+x\d+ sum \S+$"
    rows = re.findall(per_image, out, re.M)
    assert [row.split()[0] for row in rows] == expected, out
    assert all(" map 1024x1024 " in row for row in rows)  # maps at the files' resolution

    # The C++ twin on the same generated model gives the same thresholds, scores, labels and
    # maps (their sequential sums), digit for digit: one file rule in both languages.
    cpp = ROOT / "build" / "examples" / "01_fit_and_score"
    if cpp.exists():
        model = re.search(r"^model: (\S+) ", out, re.M).group(1)
        c = subprocess.run([str(cpp), model, str(grid.parent), grid.name, "7", "224", str(tmp_path / "cpp.lake")],
                           capture_output=True, text=True, timeout=600, check=True).stdout
        assert re.findall(per_image, c, re.M) == rows, c
        calib = r"^calibrate: .*$"
        assert re.findall(calib, c, re.M) == re.findall(calib, out, re.M), c

    auroc = re.search(r"^image AUROC: (\d\.\d{4}) \((\d+) defective, (\d+) good", out, re.M)
    assert auroc, out
    assert 0.0 <= float(auroc.group(1)) <= 1.0
    n_good = sum(1 for e in expected if e.startswith("good/"))
    assert (int(auroc.group(2)), int(auroc.group(3))) == (len(expected) - n_good, n_good)

    for d in folders:  # one overlay per test folder at the file's size: image | map | ground truth (none for good)
        first = sorted(d.glob("*.png"))[0]
        png = tmp_path / f"heatmap_{d.name}_{first.stem}.png"
        assert f"wrote {png}" in out, out
        with Image.open(png) as im:
            assert im.size == ((2 if d.name == "good" else 3) * 1024, 1024), (png, im.size)
            assert np.array_equal(np.asarray(im.convert("RGB"))[:, :1024], np.asarray(Image.open(first).convert("RGB")))
