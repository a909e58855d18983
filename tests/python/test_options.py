"""Options defined once: the bound C++ option structs and enums (pylake.NormalityOptions, ...)
against every place that repeats them — Python's keyword defaults, the CLI's flags and
docs/method.md's options table — and the typed results (NeuronDeviation, LayerNeurons,
ClipModel.device / .dtype, the metric names)."""

from __future__ import annotations

import inspect
import math
import pickle
import re

import pytest
import torch

import clip_factory
import pylake
from conftest import ROOT
from pylake import _C, cli, evaluate, metrics
from pylake._normality import AUTO_OPTIONS, normality_options

# The C++ defaults as written in include/lake/normality_model.h (an independent copy: the
# binding must read exactly these from lake::NormalityOptions{}).
HEADER = ROOT / "include" / "lake" / "normality_model.h"


def header_defaults() -> dict:
    text = HEADER.read_text()
    body = text[text.index("struct NormalityOptions {"):]
    body = body[: body.index("};")]
    out = {}
    for m in re.finditer(r"^\s*[\w:<>, ]+?\s(\w+)(?:\s*=\s*([^;]+))?;", body, re.M):
        out[m.group(1)] = None if m.group(2) is None else m.group(2).strip()
    return out


# -- the bound structs ------------------------------------------------------------------

def test_bound_fields_are_the_header_fields_with_its_defaults():
    fields = header_defaults()
    assert list(fields) == list(pylake.NormalityOptions._fields)
    d = pylake.NormalityOptions()
    enums = {"score": pylake.SensitivityScore, "kind": pylake.ProbeKind, "pooling": pylake.Pooling}
    for name, literal in fields.items():
        value = getattr(d, name)
        if literal is None:  # no initialiser: an empty vector or string
            assert value in ([], ""), name
        elif name in enums:  # e.g. SensitivityScore::Variance
            assert value == enums[name].__members__[literal.split("::")[1]], name
        elif literal.startswith('"'):
            assert value == literal.strip('"'), name
        else:
            assert value == type(value)(float(literal)), name


def test_keyword_constructor_repr_eq_pickle():
    o = pylake.NormalityOptions(k=7, score="cv", layers=[1, 2], pooling=pylake.Pooling.Top1Pct)
    assert o.k == 7 and o.score == pylake.SensitivityScore.CoefficientOfVariation and o.layers == [1, 2]
    assert str(o.pooling) == "top1pct" and o.blur_sigma == pylake.NormalityOptions().blur_sigma
    assert "k=7" in repr(o) and "score='cv'" in repr(o)
    assert o == pickle.loads(pickle.dumps(o)) and o != pylake.NormalityOptions()
    o.score = "random"  # strings are accepted wherever the enum is
    assert o.score == pylake.SensitivityScore.Random
    with pytest.raises(TypeError, match="unexpected keyword argument 'kk'"):
        pylake.NormalityOptions(kk=1)
    with pytest.raises(TypeError, match=r"NormalityOptions\.k: expected int"):
        pylake.NormalityOptions(k="many")
    assert pylake.ProbeOptions(kind="mlp").kind == pylake.ProbeKind.Mlp
    lo = pylake.LoadOptions(device="cpu", dtype="half", activation="gelu")
    assert lo.device == torch.device("cpu") and lo.dtype == torch.float16 and lo.activation == pylake.Activation.GELU
    assert pylake.LoadOptions().activation is None and pylake.LoadOptions().dtype == torch.float32


@pytest.mark.parametrize("enum, parse_error", [
    (pylake.SensitivityScore, "unknown sensitivity score 'bogus'"),
    (pylake.ProbeKind, "unknown probe kind 'bogus'"),
    (pylake.Pooling, "unknown pooling 'bogus'"),
    (pylake.Activation, "unknown activation 'bogus'"),
])
def test_enums_take_their_cpp_spelling(enum, parse_error):
    for value in enum.__members__.values():
        assert enum(str(value)) == value and enum(str(value).upper()) == value  # the parser is case-insensitive
    with pytest.raises(ValueError, match=parse_error):
        enum("bogus")


def test_string_spellings_users_pass():
    assert [str(v) for v in pylake.SensitivityScore.__members__.values()] == \
        ["variance", "normalized_variance", "cv", "random"]
    assert pylake.SensitivityScore("coefficient_of_variation") == pylake.SensitivityScore.CoefficientOfVariation
    assert [str(v) for v in pylake.ProbeKind.__members__.values()] == ["residual", "mlp"]
    assert [str(v) for v in pylake.Pooling.__members__.values()] == ["max", "top1pct"]
    assert pylake.Pooling("top1%") == pylake.Pooling.Top1Pct
    assert [str(v) for v in pylake.Activation.__members__.values()] == ["quick_gelu", "gelu"]


# -- Python's keyword defaults ---------------------------------------------------------

def _keyword_defaults(fn, skip=("self", "model", "_native")) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if n not in skip}


def test_normality_model_keywords_are_the_options_with_their_defaults():
    kw = _keyword_defaults(pylake.NormalityModel.__init__)
    assert list(kw) == list(pylake.NormalityOptions._fields)
    assert {n for n, v in kw.items() if v is None} == set(AUTO_OPTIONS)
    assert normality_options(**kw) == pylake.NormalityOptions()


def test_probe_and_load_keyword_defaults():
    kw = _keyword_defaults(pylake.NeuronProbe.__init__)
    assert list(kw) == list(pylake.ProbeOptions._fields)
    d = pylake.ProbeOptions()
    assert str(d.kind) == kw["kind"] and kw["project_layer"] is None and d.project_layer == 0
    kw = _keyword_defaults(pylake.load_clip, skip=("path", "download", "progress"))
    assert sorted(kw) == sorted(pylake.LoadOptions._fields)
    assert pylake.LoadOptions(**kw) == pylake.LoadOptions()
    sel = pylake.SensitivitySelector()  # its keyword defaults are SelectorOptions' (bound)
    assert sel.options == pylake.SelectorOptions()
    assert pylake.SelectorOptions().k == pylake.NormalityOptions().k  # the selector and the model agree


def test_a_model_gets_the_options_it_was_given(fixtures_dir):
    clip = pylake.load_clip(fixtures_dir / "tiny_export.pt")
    assert isinstance(clip.device, torch.device) and clip.device == torch.device("cpu")
    assert isinstance(clip.dtype, torch.dtype) and clip.dtype == torch.float32
    m = pylake.NormalityModel(clip, k=8, score="cv", pooling="top1pct", class_name="grid")
    assert m.options == pylake.NormalityOptions(k=8, score="cv", pooling="top1pct", class_name="grid")
    same = pylake.NormalityModel.from_options(clip, pylake.NormalityOptions(k=8, score="cv", pooling="top1pct",
                                                                          class_name="grid"))
    x = clip_factory.example_images(2, 32, seed=1)
    a = m.fit(x).score(x)
    b = same.fit(x).score(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.pred_score, b.pred_score)
    with pytest.raises(ValueError, match="unknown sensitivity score 'bogus'"):
        pylake.NormalityModel(clip, score="bogus")
    with pytest.raises(ValueError, match="unknown probe kind 'attention'"):
        pylake.NeuronProbe(clip, layers=[1], kind="attention")
    probe = pylake.NeuronProbe(clip, layers=[1], kind="mlp", project_layer=1)
    assert probe.kind == "mlp" and probe.options == pylake.ProbeOptions(layers=[1], kind="mlp", project_layer=1)


# -- the CLI ---------------------------------------------------------------------------

def _method_actions(sub):
    group = next(g for g in sub._action_groups if g.title.startswith("method options"))
    return group._group_actions


@pytest.mark.parametrize("command", ["fit", "eval", "sweep"])
def test_cli_method_flags_default_to_the_cpp_options(command):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    actions = _method_actions(sub)
    assert {a.dest for a in actions} == set(cli.METHOD_FLAGS)
    assert set(cli.METHOD_FLAGS.values()) <= set(pylake.NormalityOptions._fields)
    d = pylake.NormalityOptions()
    for a in actions:
        field = cli.METHOD_FLAGS[a.dest]
        if a.default is None:
            assert field in AUTO_OPTIONS, a.dest
        else:
            # the parsed value of the default, as NormalityModel would receive it
            assert normality_options(**{field: a.default}) == d, (a.dest, a.default)
            assert type(a.default) is (str if a.choices else type(getattr(d, field))), a.dest
        if a.choices:
            enum = type(getattr(d, field))
            assert list(a.choices) == [str(v) for v in enum.__members__.values()], a.dest
    args = parser.parse_args([command, "--model", "m", "--out", "o", *(
        ["--class-name", "c", "--normal", "n"] if command == "fit" else ["--dataset", "folder", "--root", "r"])])
    assert normality_options(**cli._options(args)) == d


# -- docs/method.md's table --------------------------------------------------------------

def _docs_table() -> dict:
    lines = (ROOT / "docs" / "method.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| C++ field / Python keyword | default"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def _docs_default(cell: str) -> str:
    """The default's first word: `variance`, 100, "object", empty, 0."""
    head = re.split(r" / |:", cell)[0].strip()
    return head.strip("`").strip('"')


def test_docs_table_lists_every_option_with_its_cpp_default():
    rows = _docs_table()
    assert list(rows) == list(pylake.NormalityOptions._fields)
    d = pylake.NormalityOptions()
    for name, cell in rows.items():
        value, doc = getattr(d, name), _docs_default(cell)
        if value in ([], ""):
            assert doc == "empty", (name, cell)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            assert float(doc) == value, (name, cell)
        else:
            assert doc == str(value), (name, cell)


# -- typed results ---------------------------------------------------------------------

def test_explain_and_neurons_are_typed(fixtures_dir):
    clip = pylake.load_clip(fixtures_dir / "tiny_export.pt")
    x = clip_factory.example_images(2, 32, seed=1)
    m = pylake.NormalityModel(clip, k=8).fit(x)
    neurons = m.neurons
    assert [type(n) for n in neurons] == [pylake.LayerNeurons] * len(m.layers)
    assert [n.layer for n in neurons] == m.layers
    native = m._m.neurons.layers
    for n, c in zip(neurons, native):
        assert torch.equal(n.indices, c.indices) and torch.equal(n.std, c.std) and n.indices.dtype == torch.int64
    e = m.explain(x[0], top=3)
    assert [type(d) for d in e] == [pylake.NeuronDeviation] * 3
    assert [d.deviation for d in e] == sorted((d.deviation for d in e), reverse=True)
    assert e[0].map.shape == (32, 32) and isinstance(e[0].channel, int)
    with pytest.raises(Exception):  # frozen
        e[0].layer = 0
    # the old dict access, for a deprecation period
    with pytest.warns(DeprecationWarning, match=r"\.channel"):
        assert e[0]["channel"] == e[0].channel
    with pytest.warns(DeprecationWarning):
        assert torch.equal(neurons[0]["indices"], neurons[0].indices)
    assert list(e[0].keys()) == ["layer", "channel", "deviation", "map"]
    with pytest.raises(KeyError):
        e[0]["nope"]


# -- metric names ----------------------------------------------------------------------

def test_one_metric_naming_scheme():
    assert _C.IMAGE_METRICS == ("auroc", "ap", "f1_max") and _C.PIXEL_METRICS == ("auroc", "ap", "f1_max", "aupro")
    assert metrics.ImageResult._fields == _C.IMAGE_METRICS and metrics.PixelResult._fields == _C.PIXEL_METRICS
    for cls, names in ((_C.ImageResult, _C.IMAGE_METRICS), (_C.PixelResult, _C.PIXEL_METRICS)):
        assert {n for n in dir(cls) if not n.startswith("_")} == set(names)
    for name in _C.PIXEL_METRICS:  # a function of that name in pylake.metrics and in _C
        assert callable(getattr(metrics, name)) and callable(getattr(_C, f"metrics_{name}"))
    # the report columns the users see are unchanged
    assert evaluate.METRIC_KEYS == ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                                    "pixel_f1_max", "pixel_aupro")
    assert metrics.image_auroc is metrics.auroc and metrics.image_ap is metrics.ap  # the old names
    s, y = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    cols = metrics.evaluate(s, y)
    assert list(cols) == list(evaluate.METRIC_KEYS[:3])
    assert cols["image_auroc"] == metrics.auroc(s, y) == 0.75 and math.isclose(cols["image_ap"], metrics.ap(s, y))
