"""`pip install .` builds a wheel holding the pylake package and its extension, and the
installed package imports and loads a model (slow: compiles the library once more)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pip_install(tmp_path, fixtures_dir):
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(wheels), str(ROOT)]
    subprocess.run(cmd, check=True, env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"})
    (wheel,) = wheels.glob("pylake-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sum(n.startswith("pylake/_C") and n.endswith(".so") for n in names) == 1, names
    assert {"pylake/__init__.py", "pylake/export.py"} <= set(names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    code = ("import pylake, sys; m = pylake.load_clip(sys.argv[1]); "
            "print(pylake.__file__); print(m.config.vision_width)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code, str(fixtures_dir / "tiny_state_dict.pt")], check=True,
                         capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "128"
