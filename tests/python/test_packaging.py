"""Packaging.

- The wheel (`pip wheel .`) installs with the dependencies it declares into a clean virtual
  environment, and works there without Pillow: the `lake` console script, `import pylake`,
  and a tiny fit/score that agrees bit for bit with the in-tree package (slow: compiles the
  library once more and installs torch).
- `make` installs the in-tree package into .venv: `.venv/bin/lake` and `.venv/bin/python`
  import it from python/ without PYTHONPATH (cheap).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEV_VENV = ROOT / ".venv"
SUBCOMMANDS = ("fit", "predict", "eval", "inspect")

# Run by the clean environment's interpreter (python -c) and, through exec, by this process's
# in-tree pylake: the same inputs through the same library must give the same bits.
FIT_SCORE = '''
import sys

import torch

import pylake


def fit_score(archive, inputs, vocabulary, threads):
    torch.set_num_threads(threads)
    x = torch.load(inputs)
    clip = pylake.load_clip(archive)
    model = pylake.NormalityModel(clip, image_size=32, k=16, vocabulary=vocabulary)
    model.fit(x["normal"])
    pred = model.score(x["test"])
    return {"pred_score": pred.pred_score, "anomaly_map": pred.anomaly_map, "file": pylake.__file__}


if __name__ == "__main__":
    torch.save(fit_score(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])), sys.argv[5])
'''

# In the clean environment: Pillow is absent, pylake imports without it, and pylake.synthetic
# says what to install only when asked to draw.
IMPORT_WITHOUT_PIL = '''
import importlib.util, sys, tempfile
assert importlib.util.find_spec("PIL") is None, "Pillow is installed in the clean environment"
import pylake
assert "PIL" not in sys.modules, "import pylake imported PIL"
try:
    pylake.synthetic.generate(tempfile.mkdtemp(), n_train=1, n_test_good=0, n_test_defect=0, size=32)
except ImportError as e:
    assert "pip install pillow" in str(e), str(e)
else:
    raise AssertionError("pylake.synthetic.generate worked without Pillow")
print(pylake.__file__)
'''


def _env() -> dict:
    """This environment without PYTHONPATH: a child must find pylake by its installation."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=kw.pop("env", _env()), capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def _assert_help(out: str) -> None:
    assert out.startswith("usage: lake"), out
    for sub in SUBCOMMANDS:
        assert sub in out, (sub, out)


def _install_with_dependencies(py: Path, wheel: Path) -> float:
    """`pip install` the wheel and what it declares into ``py``'s environment; returns seconds.

    The dependencies come from PyPI through a wheelhouse kept between runs
    ($LAKE_WHEELHOUSE, default build/wheelhouse): the registry here serves wheels without
    caching headers, so pip's own HTTP cache never keeps torch and each clean install would
    download it again (about 3 GB with its CUDA libraries). `pip download` resolves against
    the index and fetches only what the folder lacks; the install then takes exactly that set.
    """
    house = Path(os.environ.get("LAKE_WHEELHOUSE", ROOT / "build" / "wheelhouse"))
    house.mkdir(parents=True, exist_ok=True)
    for old in house.glob("pylake-*.whl"):  # never a stale build of this package
        old.unlink()
    t0 = time.perf_counter()
    _run([py, "-m", "pip", "download", "-q", "-d", house, wheel], cwd=house.parent, timeout=1800)
    for w in house.glob("pylake-*.whl"):
        w.unlink()
    _run([py, "-m", "pip", "install", "-q", "--no-index", "--find-links", house, wheel], cwd=house.parent,
         timeout=1800)
    return time.perf_counter() - t0


@pytest.mark.slow
def test_wheel_in_clean_venv(tmp_path, fixtures_dir):
    import pylake  # the in-tree package (conftest puts python/ first)

    vocabulary = pylake.default_vocabulary_path()
    if vocabulary is None:
        pytest.skip("no CLIP BPE vocabulary (open_clip_torch or $LAKE_BPE_VOCAB) for the text prompts")

    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", wheels, ROOT]
    _run(cmd, cwd=tmp_path, env={**_env(), "CMAKE_BUILD_PARALLEL_LEVEL": "2"})
    (wheel,) = wheels.glob("pylake-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(n.startswith("pylake/_C") and n.endswith(".so") for n in names) == 1, names
    assert {"pylake/__init__.py", "pylake/export.py", "pylake/cli.py"} <= set(names)

    venv = tmp_path / "venv"
    try:
        # A clean environment: no system site packages, nothing from .venv.
        _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
        py, bindir = venv / "bin" / "python", venv / "bin"
        assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
        seconds = _install_with_dependencies(py, wheel)
        print(f"\nclean venv: pip install of the wheel with its dependencies took {seconds:.0f} s")

        site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path).stdout.strip())
        _assert_help(_run([bindir / "lake", "--help"], cwd=tmp_path).stdout)
        where = Path(_run([py, "-c", IMPORT_WITHOUT_PIL], cwd=tmp_path).stdout.strip())
        assert where == site / "pylake" / "__init__.py", (where, site)

        gen = torch.Generator().manual_seed(0)
        inputs = {"normal": torch.randn(2, 3, 32, 32, generator=gen), "test": torch.randn(2, 3, 32, 32, generator=gen)}
        torch.save(inputs, tmp_path / "inputs.pt")
        archive, threads = fixtures_dir / "tiny_state_dict.pt", torch.get_num_threads()
        args = [archive, tmp_path / "inputs.pt", vocabulary, threads]
        _run([py, "-c", FIT_SCORE, *args, tmp_path / "installed.pt"], cwd=tmp_path)
        installed = torch.load(tmp_path / "installed.pt")
        assert Path(installed["file"]) == site / "pylake" / "__init__.py"

        ns = {"__name__": "fit_score"}
        exec(FIT_SCORE, ns)  # noqa: S102  (the same code in this process)
        in_tree = ns["fit_score"](*[str(a) for a in args[:3]], threads)
        assert Path(in_tree["file"]).resolve() == (ROOT / "python" / "pylake" / "__init__.py").resolve()
        for key in ("pred_score", "anomaly_map"):
            assert installed[key].shape == in_tree[key].shape, key
            assert torch.equal(installed[key], in_tree[key]), (key, (installed[key] - in_tree[key]).abs().max())
        assert in_tree["pred_score"].shape == (2,) and in_tree["anomaly_map"].shape == (2, 32, 32)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 5 GB with torch's CUDA libraries


def test_dev_install(tmp_path):
    """`make` installed the in-tree package into .venv: no PYTHONPATH, cwd outside the repo."""
    py, lake = DEV_VENV / "bin" / "python", DEV_VENV / "bin" / "lake"
    if not py.exists():
        pytest.skip(f"{DEV_VENV} is absent (tests run by another interpreter); `make` creates it")
    check = subprocess.run([py, ROOT / "tools" / "dev_install.py", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, f"run `make` (tools/dev_install.py):\n{check.stderr}"
    _assert_help(_run([lake, "--help"], cwd=tmp_path).stdout)
    where = _run([py, "-c", "import pylake; print(pylake.__file__)"], cwd=tmp_path).stdout.strip()
    assert Path(where).resolve() == (ROOT / "python" / "pylake" / "__init__.py").resolve(), where
