"""Shared pytest fixtures: the generated CLIP archives and the ../shared material."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT.parent / "shared").resolve()
for p in (ROOT / "python", ROOT / "tests" / "fixtures"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import clip_factory  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """The fixture archives of tests/fixtures/clip_factory.py (shared with CTest's run
    through $LAKE_FIXTURES_DIR, regenerated only when the factory changed)."""
    env = os.environ.get("LAKE_FIXTURES_DIR")
    out = Path(env).resolve() if env else tmp_path_factory.mktemp("fixtures")
    clip_factory.main(["--out", str(out), "--if-stale", "--quiet"])
    return out


@pytest.fixture(scope="session")
def tiny_openclip():
    """The OpenCLIP model behind the tiny fixtures (same seed, same weights)."""
    return clip_factory.make_clip("tiny", seed=0)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared test material (data, CLIP vocabulary) is not available")
    return SHARED


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def archive(fixtures_dir) -> str:
    """The tiny LAKE export of the fixtures, as a path string (modules may define their own)."""
    return str(fixtures_dir / "tiny_export.pt")


@pytest.fixture(scope="module")
def clip(archive):
    """The tiny export loaded (modules may define their own `clip`)."""
    import pylake  # noqa: PLC0415

    return pylake.load_clip(archive)
