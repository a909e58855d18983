"""pylake.doctor: is this LAKE build sound on this machine? (the C++ ``lake::doctor``).

>>> report = pylake.doctor()
>>> report.ok, len(report.checks), report.seconds
(True, 68, 0.3)
>>> print(report.to_text())          # what ``lake doctor`` prints
>>> report.failed                    # the FAIL rows, if any
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import _C


@dataclass(frozen=True)
class DoctorCheck:
    """One check on one device.

    Attributes:
        name: ``op[case]``, e.g. ``"top_k[ties, NaN, inf]"`` (see :func:`doctor_check_names`).
        device: ``"cpu"``, ``"cuda:0"``, or ``"cuda"`` for a skipped CUDA row.
        status: ``"PASS"``, ``"FAIL"`` or ``"SKIP"``.
        detail: PASS: the inputs; FAIL: what differed, or the error; SKIP: why.
        max_error: the largest ``|kernel - reference|`` (divided by the reference's largest
            magnitude when that exceeds 1); ``inf`` when an exact comparison (indices, counts,
            shapes, NaN positions) failed or the kernel raised; ``None`` when skipped.
        tolerance: PASS needs ``max_error <= tolerance``.
    """

    name: str
    device: str
    status: str
    detail: str
    max_error: Optional[float]
    tolerance: float


@dataclass(frozen=True)
class DoctorReport:
    """What :func:`doctor` found. ``to_text()`` and ``to_json()`` are the C++ report's forms
    (the same ``lake doctor`` and ``lake doctor --json`` print).

    Attributes:
        environment: ordered ``{key: value}``: versions, build options, threads, devices.
        checks: every check on every device, in order.
        seconds: wall time of the checks.
    """

    environment: Dict[str, str]
    checks: Tuple[DoctorCheck, ...]
    seconds: float
    _text: str = field(repr=False, compare=False, default="")
    _json: str = field(repr=False, compare=False, default="")

    @property
    def ok(self) -> bool:
        """No check FAILed (SKIPs are fine)."""
        return not self.failed

    @property
    def failed(self) -> Tuple[DoctorCheck, ...]:
        return tuple(c for c in self.checks if c.status == "FAIL")

    def to_text(self) -> str:
        return self._text

    def to_json(self) -> str:
        """Strict JSON: ``{"ok", "seconds", "summary", "environment", "checks": [...]}``,
        non-finite numbers as ``null``."""
        return self._json


def doctor_check_names(end_to_end: bool = True) -> Tuple[str, ...]:
    """The names of the checks :func:`doctor` runs on each device, in order."""
    return tuple(_C.doctor_check_names(end_to_end))


def _python_environment() -> Sequence[Tuple[str, str]]:
    return [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", f"{torch.__version__} (torch.cuda.is_available(): {torch.cuda.is_available()})"),
        ("pylake", os.path.dirname(os.path.abspath(__file__))),
    ]


def doctor(*, devices: Optional[Sequence[str]] = None, end_to_end: bool = True,
           fault: Optional[str] = None) -> DoctorReport:
    """Report the versions and build options, then run every ``lake::ops`` kernel on every
    available device against naive references on the CPU (empty, one element, ties, NaN,
    float16 / bfloat16, ...), and fit and score a tiny random-weight NormalityModel on each
    device. A fraction of a second to a few seconds; prints nothing. docs/kernels.md.

    Args:
        devices: ``"cpu"``, ``"cuda"`` (every CUDA device), ``"cuda:N"``; ``None``: the CPU and
            every CUDA device. CUDA rows that cannot run are SKIP, saying why.
        end_to_end: also the ``normality_model[fit]`` / ``[score]`` checks.
        fault: for testing the doctor itself: the name of one check whose kernel outputs are
            perturbed, so that exactly that check FAILs (an unknown name is a ValueError).
    """
    o = _C.DoctorOptions()
    o.devices = list(devices or [])
    o.end_to_end = bool(end_to_end)
    o.fault = fault or ""
    o.environment = list(_python_environment())
    r = _C.doctor(o)
    checks = tuple(
        DoctorCheck(c.name, c.device, c.status, c.detail,
                    None if c.max_error != c.max_error else float(c.max_error), float(c.tolerance))
        for c in r.checks)
    return DoctorReport(dict(r.environment), checks, float(r.seconds), r.to_text(), r.to_json())
