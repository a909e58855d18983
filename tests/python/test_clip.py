"""load_clip on every archive kind; the C++ forward against OpenCLIP's and against the
archive's own TorchScript graph, on the same weights (max abs error <= 1e-4 in fp32)."""

from __future__ import annotations

import threading

import pytest
import torch

import clip_factory
import pylake
from conftest import max_err

TOL = 1e-4


@pytest.mark.parametrize(
    "name,kind",
    [
        ("tiny_openai_jit_fp32.pt", "openai_jit"),
        ("tiny_state_dict.pt", "state_dict"),
        ("tiny_checkpoint.pt", "state_dict"),
        ("tiny_export.pt", "lake_export"),
    ],
)
def test_archive_kinds_match_openclip(fixtures_dir, tiny_openclip, name, kind):
    model = pylake.load_clip(fixtures_dir / name)
    c = model.config
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads, c.embed_dim) == (
        32, 8, 128, 3, 2, 64)
    assert (c.context_length, c.vocab_size, c.text_width, c.text_layers, c.text_heads) == (77, 49408, 128, 2, 2)
    assert c.archive_kind == kind and c.activation == "quick_gelu"
    images = clip_factory.example_images(4, 32, seed=11)
    tokens = clip_factory.example_tokens(3)
    with torch.no_grad():
        assert max_err(model.encode_image(images), tiny_openclip.encode_image(images)) <= TOL
        assert max_err(model.encode_text(tokens), tiny_openclip.encode_text(tokens)) <= TOL


def test_matches_the_archives_own_torchscript_graph(fixtures_dir):
    path = fixtures_dir / "tiny_openai_jit_fp32.pt"
    graph = torch.jit.load(str(path), map_location="cpu")
    model = pylake.load_clip(path)
    images = clip_factory.example_images(3, 32, seed=5)
    tokens = clip_factory.example_tokens(3)
    with torch.no_grad():
        assert max_err(model.encode_image(images), graph.encode_image(images)) <= TOL
        assert max_err(model.encode_text(tokens), graph.encode_text(tokens)) <= TOL


def test_fp16_openai_archive(fixtures_dir, tiny_openclip):
    """OpenAI's archives hold fp16 weights and CUDA device constants; loaded on the CPU
    in fp32 they equal the fp32 model with fp16-rounded weights."""
    model = pylake.load_clip(fixtures_dir / "tiny_openai_jit_fp16.pt")
    assert model.config.activation == "quick_gelu"
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")  # torch types, not strings
    ref = clip_factory.fp16_rounded(tiny_openclip)
    w = model.parameter("visual.conv1.weight")
    assert torch.equal(w, tiny_openclip.visual.conv1.weight.detach().half().float())
    images = clip_factory.example_images(2, 32, seed=6)
    tokens = clip_factory.example_tokens(3)
    with torch.no_grad():
        assert max_err(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_err(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL


def test_gelu_model_plus240(fixtures_dir):
    """An OpenCLIP ViT-B-16-plus-240 layout (GELU): detected from its shapes."""
    model = pylake.load_clip(fixtures_dir / "plus240_state_dict.pt")
    c = model.config
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_heads, c.embed_dim, c.activation) == (
        240, 16, 896, 14, 640, "gelu")
    ref = clip_factory.make_clip("plus240", seed=0)
    images = clip_factory.example_images(1, 240, seed=7)
    tokens = clip_factory.example_tokens(2)
    with torch.no_grad():
        assert max_err(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_err(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
    quick = pylake.load_clip(fixtures_dir / "plus240_state_dict.pt", activation="quick_gelu")
    assert quick.config.activation == "quick_gelu"
    assert max_err(quick.encode_image(images), model.encode_image(images)) > 1e-3  # the override is used


@pytest.mark.parametrize("size", [(48, 40), (64, 64), (16, 24)])
def test_any_input_size_interpolates_the_positional_embedding(fixtures_dir, tiny_openclip, size):
    model = pylake.load_clip(fixtures_dir / "tiny_state_dict.pt")
    h, w = size
    images = clip_factory.example_images(2, 32, seed=8)
    images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    ref = clip_factory.with_image_size(tiny_openclip, (h, w), antialias=h < 32 or w < 32)
    with torch.no_grad():
        assert max_err(model.encode_image(images), ref.encode_image(images)) <= TOL


def test_518_on_a_14_model_gives_a_37x37_grid(fixtures_dir, tmp_path):
    ref = clip_factory.make_clip("tiny14", seed=3)
    clip_factory.save_state_dict(ref, tmp_path / "tiny14.pt")
    model = pylake.load_clip(tmp_path / "tiny14.pt")
    images = clip_factory.example_images(1, 518, seed=9)
    taps = pylake.NeuronProbe(model, layers=[-1])(images)
    assert taps.grid == (37, 37) and taps.activations[4].shape == (1, 37 * 37, 128)
    big = clip_factory.with_image_size(ref, 518)
    with torch.no_grad():
        assert max_err(model.encode_image(images), big.encode_image(images)) <= TOL


def test_batch_size_invariant_and_thread_safe(fixtures_dir):
    model = pylake.load_clip(fixtures_dir / "tiny_state_dict.pt")
    images = clip_factory.example_images(6, 32, seed=10)
    full = model.encode_image(images)
    for bs in (1, 2, 5):
        parts = torch.cat([model.encode_image(images[i:i + bs]) for i in range(0, 6, bs)])
        assert max_err(parts, full) <= 1e-6
    results = [None, None]

    def run(i):
        results[i] = model.encode_image(images)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(results[0], full) and torch.equal(results[1], full)


def test_export_roundtrip_and_embedded_tokenizer(fixtures_dir, tiny_openclip):
    exported = pylake.load_clip(fixtures_dir / "tiny_export.pt")
    plain = pylake.load_clip(fixtures_dir / "tiny_state_dict.pt")
    assert exported.fingerprint() == plain.fingerprint()
    assert plain.tokenizer() is None
    tok = exported.tokenizer()
    ids = pylake.tokenize(["a photo of a damaged bottle"], vocab=tok)
    assert ids[0, 0].item() == tok.sot_token
    import open_clip

    assert torch.equal(ids, open_clip.tokenize(["a photo of a damaged bottle"]))


@pytest.mark.slow
def test_vit_b16_sized_model(tmp_path):
    """A ViT-B/16-sized random model (86 M image parameters): the C++ forward and the
    taps equal OpenCLIP's."""
    ref = clip_factory.make_clip("b16", seed=0)
    path = tmp_path / "b16.pt"
    clip_factory.save_state_dict(ref, path)
    model = pylake.load_clip(path)
    c = model.config
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads, c.embed_dim) == (
        224, 16, 768, 12, 12, 512)
    images = clip_factory.example_images(2, 224, seed=3)
    tokens = clip_factory.example_tokens(3)
    expect = clip_factory.reference_outputs(ref, images, tokens, [1, 6, 12])
    assert max_err(model.encode_image(images), expect["image_features"]) <= TOL
    assert max_err(model.encode_text(tokens), expect["text_features"]) <= TOL
    taps = pylake.NeuronProbe(model, layers=[1, 6, 12], project_layer=12)(images)
    for layer in (1, 6, 12):
        assert max_err(taps.activations[layer], expect[f"resid_{layer}"]) <= TOL
    assert max_err(taps.projected, expect["projected"]) <= TOL
