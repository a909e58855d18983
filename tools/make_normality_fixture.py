"""Write the committed normality-model fixture of the current format version.

    PYTHONPATH=python python tools/make_normality_fixture.py

Writes tests/data/normality_v<N>.lake: a tiny model (the factory's "tiny" CLIP, seed 0,
exported with its vocabulary; K = 4; one shot) that tests/python/test_normality.py loads
with every later LAKE to prove that old files stay readable. Run it once per new format
version and commit the file beside the older ones; never regenerate an old version.

It is a data fixture fitted on random weights, a few KB. From version 2 on the file names
its backbone by ClipModel.weights_fingerprint, a hash of the image tower as stored in the
archive: the export written here stores the same fp32 tensors under the same names as the
factory's tiny_export.pt, so the tests load it onto that archive (in any dtype).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests" / "fixtures")]

import clip_factory  # noqa: E402
import pylake  # noqa: E402
from pylake import _C  # noqa: E402

FIXTURE_OPTIONS = dict(k=4, class_name="grid", blur_sigma=1.0)


def fixture_images():
    """(shots, calibration, test) images the fixture was made from."""
    return (clip_factory.example_images(1, 32, seed=101), clip_factory.example_images(2, 32, seed=102),
            clip_factory.example_images(2, 32, seed=103))


def main() -> int:
    version = _C.NORMALITY_FORMAT_VERSION
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "tiny_export.pt"
        pylake.export.export_clip(clip_factory.make_clip("tiny", seed=0), archive)
        model = pylake.load_clip(archive)
        shots, calib, _ = fixture_images()
        m = pylake.NormalityModel(model, **FIXTURE_OPTIONS).fit(shots).calibrate(calib, 0.9)
        out = ROOT / "tests" / "data" / f"normality_v{version}.lake"
        m.save(out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
