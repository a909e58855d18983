"""pylake.doctor and `lake doctor`: every check passes on the CPU (and on CUDA where it can run),
CUDA rows are skipped with the reason where it cannot, a perturbed kernel output (the hidden
fault option) fails exactly that check and makes `lake doctor` exit 1, and --json is strict
JSON holding every check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import pylake
from conftest import ROOT
from pylake import _C

CUDA_RUNS = _C.ops.cuda_kernels_available() and torch.cuda.is_available()


def lake_doctor(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pylake", "doctor", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    print(f"lake doctor {' '.join(args)}: {time.perf_counter() - t0:.2f} s (exit {r.returncode})")
    return r


def strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"non-JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_doctor_passes_and_says_why_cuda_is_skipped():
    t0 = time.perf_counter()
    report = pylake.doctor()
    print(f"pylake.doctor(): {time.perf_counter() - t0:.2f} s ({report.seconds:.2f} s in the checks)")
    assert isinstance(report, pylake.DoctorReport) and all(isinstance(c, pylake.DoctorCheck) for c in report.checks)
    assert report.ok, report.to_text()
    names = pylake.doctor_check_names()
    assert len(names) == len(set(names)) >= 30
    assert [c.name for c in report.checks if c.device == "cpu"] == list(names)
    for c in report.checks:
        if c.status == "SKIP":
            assert c.max_error is None and c.detail
        else:
            assert c.status == "PASS" and c.max_error <= c.tolerance, c
    cuda = [c for c in report.checks if c.device.startswith("cuda")]
    if CUDA_RUNS:
        assert cuda and all(c.status == "PASS" for c in cuda)
    else:
        reason = "no CUDA device" if _C.ops.cuda_kernels_available() else "no CUDA kernels"
        assert len(cuda) == len(names) and all(c.status == "SKIP" and reason in c.detail for c in cuda)
    env = report.environment
    for key in ("lake", "build", "libtorch", "threads", "cpu", "cuda kernels", "python", "torch"):
        assert env.get(key), key
    assert env["lake"] == pylake.__version__
    assert report.to_text().startswith("LAKE doctor\n") and " 0 failed, " in report.to_text()


@pytest.mark.parametrize("fault", ["channel_moments[empty]", "top_k[ties, NaN, inf]", "gather_normalize[float16]",
                                   "gather_normalize_unchecked[float32]", "nearest_neighbors[exclusion]",
                                   "upsample_blur[1 x 1 output]", "normality_model[fit]"])
def test_a_perturbed_kernel_output_fails_exactly_that_check(fault):
    report = pylake.doctor(devices=["cpu"], fault=fault)
    assert not report.ok
    assert [(c.name, c.device) for c in report.failed] == [(fault, "cpu")]
    bad = report.failed[0]
    assert "[fault injected]" in bad.detail and bad.max_error > bad.tolerance
    assert "FAILED" in report.to_text()


def test_unknown_device_or_fault_is_a_value_error():
    with pytest.raises(ValueError, match="unknown check 'top_k'"):
        pylake.doctor(fault="top_k")
    with pytest.raises(ValueError, match="unsupported device 'mps'"):
        pylake.doctor(devices=["mps"])


def test_cli_text_json_and_exit_status():
    r = lake_doctor()
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "LAKE doctor" and "0 failed" in lines[-1] and lines[-1].endswith(": OK")
    assert sum(" cpu " in line and " PASS " in line for line in lines) == len(pylake.doctor_check_names())
    if not CUDA_RUNS:
        assert any(line.strip().startswith("cuda: ") and " checks SKIP: " in line for line in lines)

    r = lake_doctor("--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    doc = strict_json(r.stdout)
    assert doc["ok"] is True and doc["summary"] == {"passed": len(doc["checks"]), "failed": 0, "skipped": 0}
    assert [c["name"] for c in doc["checks"]] == list(pylake.doctor_check_names())
    assert set(doc["checks"][0]) == {"name", "device", "status", "max_error", "tolerance", "detail"}
    assert "cuda kernels" in doc["environment"]

    r = lake_doctor("--json")  # every row, skipped ones included, with null errors
    doc = strict_json(r.stdout)
    assert len(doc["checks"]) >= 2 * len(pylake.doctor_check_names())  # the CPU's, then CUDA's (run or skipped)
    assert all((c["max_error"] is None) == (c["status"] == "SKIP") for c in doc["checks"])


def test_cli_fault_exits_1_and_names_the_check():
    r = lake_doctor("--device", "cpu", "--fault", "nearest_neighbors[ties]")
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [line for line in r.stdout.splitlines() if " FAIL " in line]
    assert len(failed) == 1 and failed[0].strip().startswith("nearest_neighbors[ties]")
    assert r.stdout.splitlines()[-1].endswith("FAILED")

    r = lake_doctor("--json", "--device", "cpu", "--no-model", "--fault", "upsample_blur[sigma 0]")
    assert r.returncode == 1
    doc = strict_json(r.stdout)
    assert doc["ok"] is False and doc["summary"]["failed"] == 1
    bad = [c for c in doc["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in bad] == ["upsample_blur[sigma 0]"] and bad[0]["max_error"] > bad[0]["tolerance"]
    assert not any(c["name"].startswith("normality_model") for c in doc["checks"])

    r = lake_doctor("--fault", "no such check")
    assert r.returncode == 2 and "unknown check 'no such check'" in r.stderr


def test_python_signature_matches_the_options_struct():
    import inspect

    o = _C.DoctorOptions()
    fields = {k for k in dir(o) if not k.startswith("_")} - {"environment"}  # environment: pylake's own entries
    params = inspect.signature(pylake.doctor).parameters
    assert set(params) == fields
    assert params["end_to_end"].default == o.end_to_end and not o.devices and not o.fault
