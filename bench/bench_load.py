"""Benchmark: loading a ViT-L/14-sized CLIP from a .safetensors state dict (LAKE's mmap
reader) vs the same weights saved with torch.save (LAKE's pickle reader, and torch.load),
each in a fresh process: wall time and peak RSS.

    PYTHONPATH=python python bench/bench_load.py [--spec l14] [--workdir /tmp/lake_bench_load] [--repeat 2]

The weights are random (clip_factory.make_clip(spec), OpenAI ViT-L/14 shapes, fp32, about
1.7 GB per file; no download). Peak RSS is ru_maxrss of the child process, next to the same
process's RSS after `import torch, pylake` (the baseline every row pays). A file read through
the page cache counts in RSS where it is touched (mapped or copied): the first peak is after
loading, the second after touching every weight (LAKE: fingerprint(); the others: a sum of
every tensor, whose float64 temporaries add a little). Each row runs --repeat times (the
later runs read a warm page cache). Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _common  # noqa: F401  (sys.path for pylake / clip_factory)

CHILD = r"""
import json, sys, time
import torch, pylake

def hwm_mb():  # this process's peak RSS (VmHWM; ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

base = hwm_mb()
how, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if how == "lake":
    m = pylake.load_clip(path)
    n = len(m.parameter_names())
elif how == "torch.load":
    sd = torch.load(path, map_location="cpu", weights_only=True)
    n = len(sd)
elif how == "torch.load(mmap)":
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    n = len(sd)
elif how == "safetensors.load_file":
    from safetensors.torch import load_file
    sd = load_file(path)
    n = len(sd)
dt = time.perf_counter() - t0
peak = hwm_mb()
# Touch every weight (lazily mapped pages are read now): hash / sum them all.
t1 = time.perf_counter()
if how == "lake":
    m.fingerprint()
else:
    sum(float(t.double().sum()) for t in sd.values() if t.is_floating_point())
touch = time.perf_counter() - t1
print(json.dumps({"s": dt, "base_mb": base, "peak_mb": peak, "touch_s": touch, "touched_mb": hwm_mb(), "tensors": n}))
"""


def run(how: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, how, str(path)], check=True, capture_output=True,
                         text=True, env={**__import__("os").environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="l14")
    ap.add_argument("--workdir", default="/tmp/lake_bench_load")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    st, pt = work / f"{a.spec}.safetensors", work / f"{a.spec}.pt"
    if not (st.is_file() and pt.is_file()):
        import torch
        from safetensors.torch import save_file

        import clip_factory

        model = clip_factory.make_clip(a.spec, seed=0)
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(st))
        torch.save(sd, str(pt))
        del model, sd
    print(f"{a.spec}: {st.name} {st.stat().st_size / 2**20:.0f} MiB, {pt.name} {pt.stat().st_size / 2**20:.0f} MiB")
    rows = [("lake", st), ("lake", pt), ("torch.load", pt), ("torch.load(mmap)", pt), ("safetensors.load_file", st)]
    print(f"{'loader':24s} {'file':18s} {'load s':>7s} {'baseline MB':>12s} {'peak MB':>8s} {'+ touch s':>10s} "
          f"{'peak MB':>8s}")
    for how, path in rows:
        for r in range(a.repeat):
            res = run(how, path)
            print(f"{how:24s} {path.name:18s} {res['s']:7.2f} {res['base_mb']:12.0f} {res['peak_mb']:8.0f} "
                  f"{res['touch_s']:10.2f} {res['touched_mb']:8.0f}   (run {r + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
