"""CLIP's BPE tokenizer in C++: every test vector of ../shared/clip, and OpenCLIP's
tokenizer as an independent reference on further text."""

from __future__ import annotations

import json

import pytest
import torch

import pylake


@pytest.fixture(scope="module")
def vocab(shared_dir):
    return shared_dir / "clip" / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def vectors(shared_dir):
    with open(shared_dir / "clip" / "tokenizer_vectors.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_shared_vector(vocab, vectors):
    tok = pylake.Tokenizer.from_file(str(vocab))
    assert len(vectors) >= 500
    bad = [v["text"] for v in vectors if tok.encode(v["text"]) != v["bpe_ids"]]
    assert not bad, f"{len(bad)} texts differ, e.g. {bad[:3]}"
    ids = pylake.tokenize([v["text"] for v in vectors], vocab=vocab)
    assert ids.dtype == torch.int64 and ids.shape == (len(vectors), 77)
    assert torch.equal(ids, torch.tensor([v["context77"] for v in vectors]))


def test_agrees_with_openclip_on_other_text(vocab):
    """OpenCLIP's SimpleTokenizer as an independent reference. Not compared: text that
    ftfy.fix_text would repair (ligatures, curly quotes; LAKE does not run ftfy) and the
    literal "<|startoftext|>" (special in OpenAI's tokenizer and LAKE's, not in OpenCLIP 3)."""
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer(str(vocab))
    tok = pylake.Tokenizer.from_file(str(vocab))
    texts = [
        "A close-up photo of a Scratched METAL_NUT!!", "&amp;amp; &#x80; &notit; &#0; &lt3",
        "日本語のテキスト と 한국어", "Ωmega fine straße İstanbul ÆØÅ", "x" * 300, "  \u00a0 spaced\u2003out \t",
        "don't we'll they're I'd you've", "12345 3.14159 1e-3",
    ]
    for t in texts:
        assert tok.encode(t) == ref.encode(t), t
        assert tok.decode(tok.encode(t)).strip() == ref.decode(ref.encode(t)).strip(), t


def test_truncation(vocab):
    long = "word " * 100
    ids = pylake.tokenize(long, vocab=vocab)
    assert ids.shape == (1, 77) and ids[0, -1].item() == 49407 and ids[0, 0].item() == 49406
    with pytest.raises(RuntimeError, match="too long|context"):
        pylake.tokenize(long, vocab=vocab, truncate=False)
    short = pylake.tokenize("a cat", context_length=8, vocab=vocab)
    assert short.tolist() == [[49406, 320, 2368, 49407, 0, 0, 0, 0]]


def test_vocabulary_errors(tmp_path):
    with pytest.raises(ValueError, match="nope.txt.gz' does not exist"):
        pylake.Tokenizer.from_file(str(tmp_path / "nope.txt.gz"))
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(RuntimeError, match="bad.txt.gz' is a truncated gzip file"):
        pylake.Tokenizer.from_file(str(bad))


def test_default_vocabulary_is_openclips():
    path = pylake.default_vocabulary_path()
    assert path is not None and path.endswith("bpe_simple_vocab_16e6.txt.gz")
    import open_clip

    assert torch.equal(pylake.tokenize(["a photo of a flawless hazelnut."]),
                       open_clip.tokenize(["a photo of a flawless hazelnut."]))
