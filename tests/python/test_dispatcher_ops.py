"""The head's kernels as dispatcher ops (src/ops/registration.cpp, python/pylake/_ops.py):
torch.ops.lake.* equals pylake._C.ops.* bit for bit, torch.library.opcheck passes (schema,
autograd registration, fake tensor, AOT dispatch), the profiler names the ops when a
NormalityModel scores, and torch.compile traces them."""

from __future__ import annotations

import time

import pytest
import torch

import clip_factory
import pylake
from pylake import _C

OPS = ("channel_moments", "top_k", "gather_normalize", "nearest_neighbors", "upsample_blur")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_rows(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen(seed)), dim=-1).to(dtype)


def cases() -> list:
    """(op, positional arguments) on random CPU inputs, edge sizes and dtypes included."""
    x = torch.randn(300, 48, generator=gen(1))
    mask = torch.rand(300, generator=gen(2)) > 0.5
    idx = torch.randperm(48, generator=gen(3))[:12]
    ties = torch.randint(0, 5, (48,), generator=gen(4)).double()
    q, g = unit_rows(2, 40, 12, seed=5), unit_rows(2, 300, 12, seed=6)
    return [
        ("channel_moments", (x, None)),
        ("channel_moments", (x, mask)),
        ("channel_moments", (x.t().contiguous().t().half(), mask)),  # a transposed view, float16
        ("channel_moments", (torch.randn(0, 5), None)),
        ("top_k", (ties, 10)),
        ("top_k", (torch.randn(7, generator=gen(7)), 7)),
        ("gather_normalize", (x, idx, 1e-12)),
        ("gather_normalize", (x[:, ::2].bfloat16(), idx % 24, 1e-6)),
        ("gather_normalize", (torch.randn(0, 48), idx, 1e-12)),
        ("nearest_neighbors", (q, g, 64, 10, 20)),
        ("nearest_neighbors", (q[0], g[0], 512, 0, 0)),  # (Q, K) and (M, K): L = 1
        ("nearest_neighbors", (q.half(), g.half(), 7, 0, 300)),  # every row excluded
        ("upsample_blur", (torch.rand(2, 7, 9, generator=gen(8)), 30, 40, 1.5)),
        ("upsample_blur", (torch.rand(3, 14, 14, generator=gen(9)), 5, 6, 0.0)),
        ("upsample_blur", (torch.rand(0, 4, 4), 8, 8, 1.0)),
    ]


def ids() -> list:
    return [f"{op}-{i}" for i, (op, _) in enumerate(cases())]


def as_tuple(r) -> tuple:
    return tuple(r) if isinstance(r, (tuple, list)) else (r,)


def assert_bitwise(a, b) -> None:
    a, b = as_tuple(a), as_tuple(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape
            assert torch.equal(x, y) or (x.isnan() == y.isnan()).all() and torch.equal(x.nan_to_num(), y.nan_to_num())
        else:
            assert x == y


def test_every_head_op_is_registered():
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lake::{op}", "CPU"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lake::{op}", "CUDA"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lake::{op}", "Meta"), op  # the fake kernel
    assert str(torch.ops.lake.upsample_blur.default._schema) == (
        "lake::upsample_blur(Tensor maps, int height, int width, float sigma) -> Tensor")
    assert str(torch.ops.lake.nearest_neighbors.default._schema) == (
        "lake::nearest_neighbors(Tensor queries, Tensor gallery, int tile=512, int exclude_lo=0, "
        "int exclude_hi=0) -> (Tensor distance, Tensor index)")


@pytest.mark.parametrize("op,args", cases(), ids=ids())
def test_torch_ops_equal_pylake_ops_bitwise(op, args):
    got = getattr(torch.ops.lake, op)(*args)
    want = getattr(_C.ops, op)(*args)
    assert_bitwise(got, want)


@pytest.mark.parametrize("op,args", cases(), ids=ids())
def test_opcheck(op, args):
    # test_schema (no aliasing or mutation beyond the schema's), test_autograd_registration,
    # test_faketensor (the fake kernel's shapes, dtypes, strides and devices equal the real
    # outputs'), test_aot_dispatch_dynamic (traceable by AOTAutograd with dynamic shapes).
    # None of the ops is differentiable: the inputs do not require grad.
    result = torch.library.opcheck(getattr(torch.ops.lake, op), args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_errors_keep_their_types_through_the_dispatcher():
    with pytest.raises(ValueError, match="k = 9 neurons requested, but the layer has 8 channels"):
        torch.ops.lake.top_k(torch.randn(8), 9)
    with pytest.raises(IndexError, match=r"channel indices must lie in \[0, 4\)"):
        torch.ops.lake.gather_normalize(torch.randn(3, 4), torch.tensor([4]))
    with pytest.raises(ValueError, match="upsample_blur: expected float32 maps"):
        torch.ops.lake.upsample_blur(torch.rand(1, 2, 2).double(), 4, 4, 1.0)
    # Meta tensors (no data) get the fake kernel's outputs, also through pylake._C.ops.
    d, i = _C.ops.nearest_neighbors(torch.empty(2, 5, 3, device="meta"), torch.empty(2, 4, 3, device="meta"))
    assert d.device.type == "meta" and d.shape == (2, 5) and i.dtype == torch.int64


def test_the_fake_kernels_give_shapes_without_data():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        maps = mode.from_tensor(torch.rand(2, 7, 9))
        assert torch.ops.lake.upsample_blur(maps, 30, 40, 1.5).shape == (2, 30, 40)
        d, i = torch.ops.lake.nearest_neighbors(mode.from_tensor(torch.randn(5, 8)), mode.from_tensor(torch.randn(9, 8)))
        assert d.shape == (1, 5) and d.dtype == torch.float32 and i.dtype == torch.int64
        x = mode.from_tensor(torch.randn(10, 4))
        count, mean, m2 = torch.ops.lake.channel_moments(x, mode.from_tensor(torch.rand(10) > 0.5))
        assert isinstance(count, torch.SymInt) and mean.shape == (4,) and m2.dtype == torch.float64
        assert torch.ops.lake.channel_moments(x)[0] == 10


@pytest.fixture(scope="module")
def fitted(fixtures_dir):
    clip = pylake.load_clip(fixtures_dir / "tiny_export.pt")
    return pylake.NormalityModel(clip, k=8, class_name="grid").fit(clip_factory.example_images(2, 32, seed=1))


def test_the_profiler_names_the_ops_on_the_scoring_path(fitted):
    images = clip_factory.example_images(2, 32, seed=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], acc_events=True) as prof:
        fitted.score(images)
    names = {e.key for e in prof.key_averages()}
    for op in ("lake::nearest_neighbors", "lake::upsample_blur", "lake::gather_normalize"):
        assert op in names, sorted(n for n in names if n.startswith("lake"))


def test_the_profiler_names_the_ops_on_the_fit_path(fixtures_dir):
    clip = pylake.load_clip(fixtures_dir / "tiny_export.pt")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], acc_events=True) as prof:
        pylake.NormalityModel(clip, k=8, class_name="grid").fit(clip_factory.example_images(2, 32, seed=1))
    names = {e.key for e in prof.key_averages()}
    assert {"lake::channel_moments", "lake::top_k", "lake::gather_normalize"} <= names


def test_torch_compile_traces_upsample_blur():
    def head(patches: torch.Tensor) -> torch.Tensor:
        maps = torch.ops.lake.upsample_blur(patches * 2.0, 28, 30, 1.5)
        return maps.amax(dim=(1, 2)), maps

    try:
        import torch._dynamo  # noqa: F401
    except Exception as e:  # pragma: no cover - a torch without dynamo
        pytest.skip(f"torch.compile is unavailable here: {e}")
    x = torch.rand(3, 7, 7, generator=gen(10))
    start = time.perf_counter()
    compiled = torch.compile(head, fullgraph=True, backend="eager", dynamic=False)
    got = compiled(x)
    want = head(x)
    assert_bitwise(got, want)
    assert time.perf_counter() - start < 120, "compile took over 2 minutes"
