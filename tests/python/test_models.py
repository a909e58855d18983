"""Model names resolved to files where the real tools put them (lake/models.h, pylake._models).

The Hugging Face cache is laid out as huggingface_hub lays it out (blobs named by content
hash, snapshots/<commit>/<file> symlinks, refs/<branch>) and every lookup is checked
against huggingface_hub.try_to_load_from_cache on the same folder; cache locations are
checked against huggingface_hub.constants under the same environment. Downloads of
OpenAI archives go to a local HTTP server (LAKE_OPENAI_MIRROR)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import pylake
from pylake import _C, cli

huggingface_hub = pytest.importorskip("huggingface_hub")
transformers = pytest.importorskip("transformers")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    """Empty caches: HOME (OpenAI's ~/.cache/clip), HF_HUB_CACHE, LAKE_HOME under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    hub = tmp_path / "hub"
    lake = tmp_path / "lake"
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "LAKE_HOME",
                "HF_HUB_OFFLINE", "LAKE_OFFLINE", "LAKE_OPENAI_MIRROR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("LAKE_HOME", str(lake))
    return {"home": home, "hub": hub, "lake": lake, "clip": home / ".cache" / "clip"}


def hub_put(cache: Path, repo: str, files: dict, commit: str = COMMIT, ref: str = "main") -> Path:
    """Put ``files`` (name -> source path) into ``cache`` as huggingface_hub does: content in
    blobs/<sha256>, snapshots/<commit>/<name> a relative symlink to it, refs/<ref> = commit."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap


def hf_cached(cache: Path, repo: str, filename: str, revision=None):
    got = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=str(cache), revision=revision)
    return got if isinstance(got, str) else None


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A tiny transformers CLIPModel saved with save_pretrained (safetensors and .bin)."""
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, vocab_size=49408),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32)
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    root = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(root / "st", safe_serialization=True)
    model.save_pretrained(root / "sharded", safe_serialization=True, max_shard_size="200KB")
    (root / "bin").mkdir()
    shutil.copy(root / "st" / "config.json", root / "bin" / "config.json")
    torch.save(model.state_dict(), root / "bin" / "pytorch_model.bin")
    return root


IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def same_model(a, b) -> bool:
    return a.fingerprint() == b.fingerprint() and torch.equal(a.encode_image(IMAGES), b.encode_image(IMAGES))


# ---- cache locations ----------------------------------------------------------------

@pytest.mark.parametrize("env", [
    {"HF_HUB_CACHE": "/x/hub"},
    {"HUGGINGFACE_HUB_CACHE": "/x/legacy"},
    {"HF_HOME": "/x/home"},
    {"XDG_CACHE_HOME": "/x/xdg"},
    {"HF_HOME": "/x/home", "HF_HUB_CACHE": "/x/hub2"},
    {},
])
def test_hub_cache_dir_is_huggingface_hubs(env, monkeypatch, tmp_path):
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # huggingface_hub reads the environment at import: ask a fresh interpreter.
    theirs = subprocess.run([sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"],
                            capture_output=True, text=True, check=True, env=dict(os.environ)).stdout.strip()
    assert _C.hf_hub_cache_dir() == theirs


def test_lake_and_clip_cache_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LAKE_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert pylake.cache_dirs()["lake"] == str(tmp_path / ".cache" / "lake")
    assert pylake.cache_dirs()["clip"] == str(tmp_path / ".cache" / "clip")  # clip.load's download_root
    monkeypatch.setenv("LAKE_HOME", "/somewhere/lake")
    assert pylake.cache_dirs()["lake"] == "/somewhere/lake"


# ---- what is a name ------------------------------------------------------------------

def test_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ViT-L/14@336px", "ViT-B/16", "openai/clip-vit-large-patch14-336", "org/repo@v1.0",
                 "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "timm/vit_base_patch16_clip_224.openai"):
        assert _C.is_model_name(name), name
    for path in ("weights/model.pt", "a/b.safetensors", "model.lake", "/abs/path", "./x/y", "a/b/c", ""):
        assert not _C.is_model_name(path), path
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "repo").mkdir()
    assert not _C.is_model_name("org/repo")  # an existing folder is always a path


def test_bad_hub_name_is_a_value_error():
    with pytest.raises(ValueError, match="not a hub repository id"):
        pylake.locate_model("hf-hub:not a repo")


# ---- transformers layout in the hub cache --------------------------------------------

@pytest.mark.parametrize("form,files,weights", [
    ("st", ["config.json", "model.safetensors"], "model.safetensors"),
    ("bin", ["config.json", "pytorch_model.bin"], "pytorch_model.bin"),
])
def test_transformers_repo_in_hub_cache(caches, tiny_hf, form, files, weights):
    src = tiny_hf / form
    hub_put(caches["hub"], "org/tiny", {f: src / f for f in files})
    loc = pylake.locate_model("org/tiny")
    assert loc.is_name and loc.source == "transformers" and loc.revision == "main"
    assert loc.path == hf_cached(caches["hub"], "org/tiny", weights)
    assert hf_cached(caches["hub"], "org/tiny", "config.json") == str(Path(loc.path).parent / "config.json")
    by_name = pylake.load_clip("org/tiny", download=False)
    assert by_name.config.archive_kind == "transformers"
    assert same_model(by_name, pylake.load_clip(src))


def test_sharded_repo_needs_every_shard(caches, tiny_hf):
    src = tiny_hf / "sharded"
    shards = sorted(p.name for p in src.glob("model-*.safetensors"))
    assert len(shards) >= 2
    names = ["config.json", "model.safetensors.index.json"] + shards
    hub_put(caches["hub"], "org/sharded", {f: src / f for f in names[:-1]})  # one shard missing
    assert pylake.locate_model("org/sharded").path == ""
    hub_put(caches["hub"], "org/sharded", {names[-1]: src / names[-1]})
    loc = pylake.locate_model("org/sharded")
    assert loc.path == hf_cached(caches["hub"], "org/sharded", "model.safetensors.index.json")
    assert same_model(pylake.load_clip("org/sharded", download=False), pylake.load_clip(src))


def test_revisions(caches, tiny_hf):
    src = tiny_hf / "st"
    hub_put(caches["hub"], "org/rev", {"config.json": src / "config.json", "model.safetensors": src / "model.safetensors"},
            commit=OTHER_COMMIT, ref="v1")
    assert pylake.locate_model("org/rev").path == ""  # no refs/main
    assert hf_cached(caches["hub"], "org/rev", "model.safetensors") is None
    for rev in ("v1", OTHER_COMMIT):
        loc = pylake.locate_model(f"org/rev@{rev}")
        assert loc.path and loc.path == hf_cached(caches["hub"], "org/rev", "model.safetensors", revision=rev)


def test_incomplete_snapshot_is_not_found(caches, tiny_hf):
    hub_put(caches["hub"], "org/half", {"model.safetensors": tiny_hf / "st" / "model.safetensors"})  # no config.json
    loc = pylake.locate_model("org/half")
    assert loc.path == ""
    with pytest.raises(ValueError) as e:
        pylake.load_clip("org/half", download=False)
    msg = str(e.value)
    assert "org/half" in msg and "config.json" in msg and str(caches["hub"]) in msg


# ---- OpenAI names --------------------------------------------------------------------

def test_openai_name_from_clip_cache_then_lake_cache(caches, fixtures_dir):
    src = fixtures_dir / "tiny_openai_jit_fp32.pt"
    loc = pylake.locate_model("ViT-B/16")
    assert loc.path == "" and loc.source == "openai"
    assert loc.download_to == str(caches["lake"] / "clip" / "ViT-B-16.pt")
    assert loc.url.endswith("/" + loc.sha256 + "/ViT-B-16.pt")
    (caches["lake"] / "clip").mkdir(parents=True)
    shutil.copy(src, caches["lake"] / "clip" / "ViT-B-16.pt")
    assert pylake.locate_model("ViT-B/16").path == str(caches["lake"] / "clip" / "ViT-B-16.pt")
    caches["clip"].mkdir(parents=True)
    shutil.copy(src, caches["clip"] / "ViT-B-16.pt")  # the clip package's cache comes first
    assert pylake.locate_model("ViT-B/16").path == str(caches["clip"] / "ViT-B-16.pt")
    model = pylake.load_clip("ViT-B/16", download=False)
    assert model.config.archive_kind == "openai_jit"
    assert same_model(model, pylake.load_clip(src))


def test_openai_name_from_open_clips_hub_copy(caches, fixtures_dir, tmp_path, recwarn):
    # OpenCLIP's pretrained="openai" downloads timm/<...>.openai/open_clip_model.safetensors
    # only (no config): LAKE knows every OpenAI CLIP uses QuickGELU and does not warn.
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = torch.load(fixtures_dir / "tiny_state_dict.pt", weights_only=True)
    st = tmp_path / "open_clip_model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    hub_put(caches["hub"], "timm/vit_base_patch16_clip_224.openai", {"open_clip_model.safetensors": st})
    loc = pylake.locate_model("ViT-B/16")
    assert loc.path == hf_cached(caches["hub"], "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors")
    assert loc.form == "state_dict"
    model = pylake.load_clip("ViT-B/16", download=False)
    assert model.config.activation == "quick_gelu"
    assert not [w for w in recwarn if "assuming quick_gelu" in str(w.message)]
    assert same_model(model, pylake.load_clip(fixtures_dir / "tiny_state_dict.pt"))


def test_openai_name_from_transformers_hub_copy(caches, tiny_hf):
    src = tiny_hf / "st"
    hub_put(caches["hub"], "openai/clip-vit-large-patch14-336",
            {"config.json": src / "config.json", "model.safetensors": src / "model.safetensors"})
    loc = pylake.locate_model("ViT-L/14@336px")
    assert loc.form == "transformers"
    assert loc.path == hf_cached(caches["hub"], "openai/clip-vit-large-patch14-336", "model.safetensors")


def test_missing_openai_model_error_says_where(caches):
    with pytest.raises(ValueError) as e:
        pylake.load_clip("ViT-L/14@336px", download=False)
    msg = str(e.value)
    for part in (str(caches["clip"] / "ViT-L-14-336px.pt"), str(caches["lake"] / "clip" / "ViT-L-14-336px.pt"),
                 "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "lake models --download",
                 "openai/clip-vit-large-patch14-336"):
        assert part in msg


def test_offline_names_the_missing_files(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline") as e:
        pylake.load_clip("openai/clip-vit-base-patch16")
    assert "config.json" in str(e.value) and str(caches["hub"]) in str(e.value)
    with pytest.raises(RuntimeError, match="ViT-B-16.pt"):
        pylake.load_clip("ViT-B/16")


# ---- OpenAI downloads from a mirror on 127.0.0.1 --------------------------------------

class _Mirror(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    requests: list = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.path)
        data = type(self).files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Mirror.files, _Mirror.requests = {}, []
    base = f"http://127.0.0.1:{server.server_address[1]}/clip/models/"
    monkeypatch.setenv("LAKE_OPENAI_MIRROR", base)
    yield _Mirror
    server.shutdown()
    server.server_close()


def test_openai_download_with_wrong_checksum_leaves_nothing(caches, mirror, fixtures_dir):
    sha = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    mirror.files[f"/clip/models/{sha}/ViT-B-16.pt"] = (fixtures_dir / "tiny_openai_jit_fp32.pt").read_bytes()
    with pytest.raises(ValueError, match=sha):
        pylake.load_clip("ViT-B/16", progress=False)
    assert mirror.requests == [f"/clip/models/{sha}/ViT-B-16.pt"]
    leftovers = [p for p in caches["lake"].rglob("*") if p.is_file()] if caches["lake"].exists() else []
    assert [p for p in leftovers if not p.name.endswith(".lock")] == []
    assert pylake.locate_model("ViT-B/16").path == ""


def test_openai_download_missing_on_server(caches, mirror):
    with pytest.raises(RuntimeError, match="404|Not Found"):
        pylake.download_model("ViT-L/14", progress=False)
    assert pylake.locate_model("ViT-L/14").path == ""


# ---- lake models ---------------------------------------------------------------------

def test_lake_models_lists_what_is_present(caches, fixtures_dir, tiny_hf, capsys):
    caches["clip"].mkdir(parents=True)
    shutil.copy(fixtures_dir / "tiny_openai_jit_fp32.pt", caches["clip"] / "ViT-B-32.pt")
    src = tiny_hf / "st"
    hub_put(caches["hub"], "openai/clip-vit-base-patch16",
            {"config.json": src / "config.json", "model.safetensors": src / "model.safetensors"})
    assert cli.main(["models", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["caches"]["hf_hub"] == str(caches["hub"])
    paths = {m["name"]: m["path"] for m in report["models"]}
    assert [m["name"] for m in report["models"]] == [k.name for k in pylake.known_models()]
    assert paths["ViT-B/32"] == str(caches["clip"] / "ViT-B-32.pt")
    assert paths["openai/clip-vit-base-patch16"] == hf_cached(caches["hub"], "openai/clip-vit-base-patch16",
                                                              "model.safetensors")
    assert paths["ViT-B/16"] == paths["openai/clip-vit-base-patch16"]  # the same weights, in transformers' layout
    assert paths["ViT-L/14@336px"] is None
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "ViT-L/14@336px" in text and "not on this machine" in text and str(caches["clip"] / "ViT-B-32.pt") in text


def test_cli_model_name_offline_fails_naming_the_file(caches, monkeypatch, tmp_path, capsys, shared_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    normal = sorted((shared_dir / "data" / "mvtec_ad" / "grid" / "train" / "good").glob("*.png"))[:1]
    if not normal:
        pytest.skip("../shared/data/mvtec_ad/grid is absent")
    code = cli.main(["fit", "--model", "ViT-B/16", "--class-name", "grid", "--normal", str(normal[0]),
                     "--out", str(tmp_path / "m.lake"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ViT-B-16.pt" in err and "offline" in err
    assert not (tmp_path / "m.lake").exists()


# ---- hub downloads through huggingface_hub, from a fake hub on 127.0.0.1 ------------------

@pytest.fixture()
def fake_hub(monkeypatch):
    from huggingface_hub import constants
    from test_download import FakeHub  # the minimal hub protocol of tests/python/test_download.py

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub = FakeHub()
    hub.repos.clear()
    yield hub
    hub.close()


@pytest.mark.parametrize("form,files", [
    ("st", ["config.json", "model.safetensors"]),
    ("bin", ["config.json", "pytorch_model.bin"]),
    ("sharded", None),
])
def test_download_hub_repo_then_load_by_name(caches, tiny_hf, fake_hub, form, files):
    src = tiny_hf / form
    files = files or [p.name for p in src.iterdir()]
    fake_hub.repos["org/tiny"] = {f: (src / f).read_bytes() for f in files}
    path = pylake.download_model("org/tiny", endpoint=fake_hub.endpoint, progress=False)
    loc = pylake.locate_model("org/tiny")
    assert path == loc.path
    weights = {"st": "model.safetensors", "bin": "pytorch_model.bin", "sharded": "model.safetensors.index.json"}[form]
    assert path == hf_cached(caches["hub"], "org/tiny", weights)  # the real tool's layout
    assert same_model(pylake.load_clip("org/tiny", download=False), pylake.load_clip(src))
    # Present now: nothing more is fetched.
    before = len(fake_hub.requests)
    assert pylake.download_model("org/tiny", endpoint=fake_hub.endpoint, progress=False) == path
    assert len(fake_hub.requests) == before


def test_download_hub_repo_that_is_not_clip(caches, fake_hub):
    fake_hub.repos["org/text-only"] = {"config.json": b'{"model_type": "bert"}', "vocab.txt": b"x"}
    with pytest.raises(ValueError, match="model.safetensors"):
        pylake.download_model("org/text-only", endpoint=fake_hub.endpoint, progress=False)
    assert pylake.locate_model("org/text-only").path == ""
