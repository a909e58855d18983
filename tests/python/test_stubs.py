"""python/pylake/_C.pyi against the built extension: every public name of pylake._C (and of
pylake._C.ops) is stubbed and every stubbed name exists, class members included, and the file
is what tools/gen_stubs.py writes from the module (so signatures cannot drift either); mypy
reads it (py.typed) and rejects a wrongly typed use."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT
from pylake import _C

STUB = ROOT / "python" / "pylake" / "_C.pyi"


def _tool():
    spec = importlib.util.spec_from_file_location("gen_stubs", ROOT / "tools" / "gen_stubs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stub_names(body) -> dict:
    """name -> the ast node, for the classes, functions and annotated names of a body."""
    out = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def _public(obj) -> set:
    return {n for n in vars(obj) if not n.startswith("_")}


@pytest.fixture(scope="module")
def stub():
    return _stub_names(ast.parse(STUB.read_text()).body)


def test_every_public_name_is_stubbed_and_vice_versa(stub):
    real = _public(_C) - {"ops"}
    stubbed = {n for n in stub if not n.startswith("_")} - {"ops"}
    assert real - stubbed == set(), "bound but missing from _C.pyi: run tools/gen_stubs.py"
    assert stubbed - real == set(), "in _C.pyi but not bound: run tools/gen_stubs.py"
    assert "ops" in stub and "__version__" in stub
    ops = _stub_names(stub["_ops"].body)
    assert set(ops) == _public(_C.ops)


def test_class_members_match(stub):
    for name in _public(_C):
        cls = getattr(_C, name)
        if not isinstance(cls, type):
            continue
        members = {n for n in _stub_names(stub[name].body) if not n.startswith("_")} - {"name", "value"}
        real = _public(cls) - {"name", "value"}
        assert members == real, name


def test_stub_is_up_to_date():
    assert STUB.read_text() == _tool().render(), "python/pylake/_C.pyi is out of date: run tools/gen_stubs.py"


def test_packaged_beside_the_module():
    assert (ROOT / "python" / "pylake" / "py.typed").is_file()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert 'PATTERN "*.pyi"' in cmake and 'PATTERN "py.typed"' in cmake  # installed into the wheel


SNIPPET = '''
from pylake import _C

o = _C.NormalityOptions(k=5)
k: int = o.k
s: _C.SensitivityScore = o.score
clip: _C.ClipModel = _C.load_clip("x.pt", _C.LoadOptions())
m: _C.NormalityModel = _C.NormalityModel(clip, o)
prompts: list[str] = m.normal_prompts
names: tuple[str, ...] = _C.PIXEL_METRICS
'''


def test_mypy_reads_the_stubs(tmp_path):
    pytest.importorskip("mypy", reason="mypy is a dev tool (requirements.txt)")
    (tmp_path / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n[mypy-torch.*]\nfollow_imports = skip\n"
                                       "[mypy-numpy.*]\nfollow_imports = skip\n")
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(SNIPPET)
    bad.write_text(SNIPPET + "wrong: str = o.k\nm.explain_file(3)\n")

    def mypy(path):
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
                               "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(path)],
                              capture_output=True, text=True, env={"MYPYPATH": str(ROOT / "python"), "PATH": ""})

    r = mypy(good)
    assert r.returncode == 0, r.stdout + r.stderr
    r = mypy(bad)
    assert r.returncode == 1 and 'variable has type "str"' in r.stdout and '"explain_file"' in r.stdout, r.stdout
