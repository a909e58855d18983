"""Bad archives and bad inputs: a clear Python exception naming the input, never a crash."""

from __future__ import annotations

import pytest
import torch

import clip_factory
import pylake


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return pylake.load_clip(fixtures_dir / "tiny_state_dict.pt")


def _save_modified(tiny_openclip, path, edit):
    sd = {k: v.clone() for k, v in tiny_openclip.state_dict().items()}
    edit(sd)
    torch.save(sd, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"'.*nope\.pt' does not exist"):
        pylake.load_clip(tmp_path / "nope.pt")


def test_not_an_archive(fixtures_dir):
    with pytest.raises(ValueError, match="is not a TorchScript archive, torch.save file or safetensors file"):
        pylake.load_clip(fixtures_dir / "not_an_archive.pt")


def test_truncated_archive(fixtures_dir, tmp_path):
    with pytest.raises(RuntimeError, match="truncated.pt"):
        pylake.load_clip(fixtures_dir / "truncated.pt")
    data = (fixtures_dir / "tiny_state_dict.pt").read_bytes()
    for frac in (0.3, 0.9):
        cut = tmp_path / f"cut{frac}.pt"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(RuntimeError, match=f"cut{frac}.pt' is not a readable zip archive"):
            pylake.load_clip(cut)


def test_legacy_pickle(tmp_path, tiny_openclip):
    path = tmp_path / "legacy.pt"
    torch.save(tiny_openclip.state_dict(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy"):
        pylake.load_clip(path)


def test_resnet_clip(fixtures_dir):
    with pytest.raises(ValueError, match="is a ResNet CLIP"):
        pylake.load_clip(fixtures_dir / "resnet_state_dict.pt")


def test_missing_parameter(tmp_path, tiny_openclip):
    path = _save_modified(tiny_openclip, tmp_path / "m.pt", lambda sd: sd.pop("visual.ln_post.bias"))
    with pytest.raises(ValueError, match="is missing parameter 'visual.ln_post.bias'"):
        pylake.load_clip(path)


def test_misshapen_parameter(tmp_path, tiny_openclip):
    def edit(sd):
        sd["visual.transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(100, 128)

    path = _save_modified(tiny_openclip, tmp_path / "m.pt", edit)
    with pytest.raises(ValueError, match=r"'visual.transformer.resblocks.1.mlp.c_fc.weight' has shape \[100, 128\], "
                                         r"expected \[512, 128\]"):
        pylake.load_clip(path)


def test_unsupported_block_variant(tmp_path, tiny_openclip):
    def edit(sd):
        sd["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(128)

    path = _save_modified(tiny_openclip, tmp_path / "m.pt", edit)
    with pytest.raises(ValueError, match="unsupported block parameter 'visual.transformer.resblocks.0.ls_1.gamma'"):
        pylake.load_clip(path)


def test_not_a_clip(tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(ValueError, match="is not a CLIP ViT: no 'visual.conv1.weight'"):
        pylake.load_clip(path)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        pylake.load_clip(tmp_path / "list.pt")


def test_bad_options(fixtures_dir):
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        pylake.load_clip(fixtures_dir / "tiny_state_dict.pt", activation="relu")
    with pytest.raises(ValueError, match="dtype"):
        pylake.load_clip(fixtures_dir / "tiny_state_dict.pt", dtype=torch.int32)


@pytest.mark.parametrize("images,message", [
    (torch.randn(3, 32, 32), r"expected \(B, 3, H, W\) images, got a tensor of shape \[3, 32, 32\]"),
    (torch.randn(0, 3, 32, 32), "non-empty batch"),
    (torch.randn(1, 4, 32, 32), r"3 \(RGB\) channels, got shape \[1, 4, 32, 32\]"),
    (torch.randn(1, 3, 33, 32), "multiples of the patch size 8, got 33 x 32"),
    (torch.randn(1, 3, 4, 4), "multiples of the patch size 8, got 4 x 4"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point"),
])
def test_bad_images(model, images, message):
    with pytest.raises(ValueError, match=message):
        model.encode_image(images)
    with pytest.raises(ValueError, match=message):
        pylake.NeuronProbe(model, layers=[1])(images)


def test_bad_tokens(model):
    with pytest.raises(ValueError, match=r"must lie in \[0, 49408\)"):
        model.encode_text(torch.full((1, 77), 60000, dtype=torch.long))
    with pytest.raises(ValueError, match="at most 77 tokens"):
        model.encode_text(torch.zeros(1, 80, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \(T, L\) token ids"):
        model.encode_text(torch.zeros(77, dtype=torch.long))


def test_text_tower_not_loaded(fixtures_dir):
    m = pylake.load_clip(fixtures_dir / "tiny_state_dict.pt", load_text=False)
    assert not m.config.has_text
    with pytest.raises(RuntimeError, match="has no text tower"):
        m.encode_text(clip_factory.example_tokens(1))
