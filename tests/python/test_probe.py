"""NeuronProbe taps against OpenCLIP's intermediate outputs captured with forward hooks."""

from __future__ import annotations

import pytest
import torch

import clip_factory
import pylake
from conftest import max_err

TOL = 1e-4


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return pylake.load_clip(fixtures_dir / "tiny_openai_jit_fp32.pt")


@pytest.fixture(scope="module")
def hooked(tiny_openclip):
    images = clip_factory.example_images(3, 32, seed=21)
    return images, clip_factory.reference_outputs(tiny_openclip, images, None, [1, 2, 3])


def test_residual_taps_cls_and_projection(model, hooked):
    images, ref = hooked
    probe = pylake.NeuronProbe(model, layers=[2, -1, 1], project_layer=-1)
    assert probe.layers == [2, 3, 1] and probe.channels == 128 and probe.kind == "residual"
    taps = probe(images)
    assert list(taps.activations) == [2, 3, 1]
    assert taps.grid == (4, 4)
    for layer in (1, 2, 3):
        assert taps.activations[layer].shape == (3, 16, 128)
        assert max_err(taps.activations[layer], ref[f"resid_{layer}"]) <= TOL
        assert max_err(taps.cls[layer], ref[f"cls_{layer}"]) <= TOL
    assert max_err(taps.projected, ref["projected"]) <= TOL


def test_mlp_taps(model, hooked):
    images, ref = hooked
    probe = pylake.NeuronProbe(model, layers=[1, 3], kind="mlp")
    assert probe.channels == 512
    taps = probe(images)
    assert taps.projected is None
    for layer in (1, 3):
        assert taps.activations[layer].shape == (3, 16, 512)
        assert max_err(taps.activations[layer], ref[f"mlp_{layer}"]) <= TOL


def test_projection_of_an_intermediate_layer(model, tiny_openclip, hooked):
    images, ref = hooked
    taps = pylake.NeuronProbe(model, layers=[1], project_layer=2)(images)
    v = tiny_openclip.visual
    with torch.no_grad():
        expect = v.ln_post(ref["resid_2"]) @ v.proj
    assert max_err(taps.projected, expect) <= TOL


def test_taps_are_batch_size_invariant(model):
    images = clip_factory.example_images(4, 32, seed=22)
    probe = pylake.NeuronProbe(model, layers=[3], kind="mlp")
    whole = probe(images).activations[3]
    parts = torch.cat([probe(images[i:i + 1]).activations[3] for i in range(4)])
    assert max_err(whole, parts) <= 1e-6


@pytest.mark.parametrize("layers,message", [
    ([0], "layer 0 is out of range for a model with 3 blocks"),
    ([4], "layer 4 is out of range"),
    ([-4], "layer -4 is out of range"),
    ([1, -3], "requested twice"),
    ([], "at least one layer"),
])
def test_bad_layers(model, layers, message):
    with pytest.raises(ValueError, match=message):
        pylake.NeuronProbe(model, layers=layers)


def test_bad_kind(model):
    with pytest.raises(ValueError, match="'residual' or 'mlp'"):
        pylake.NeuronProbe(model, layers=[1], kind="attention")
