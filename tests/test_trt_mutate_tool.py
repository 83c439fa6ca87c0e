"""tools/mutate.py on a tiny fixture (3 mutants): it mutates a private copy, never the tree,
and counts killed and surviving mutants. The real run over the lowering is slow and not in CI
(docs/testing-tensorrt.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("trtdsl_mutate_tool", ROOT / "tools" / "mutate.py")
mutate = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = mutate  # dataclasses look their module up
SPEC.loader.exec_module(mutate)

MODULE = """def f(a, b):
    return a + b


def g(flag):
    return flag is True
"""
TEST = """from mod import f


def test_f():
    assert f(2, 3) == 5
"""


def test_sites_and_mutants_of_a_small_file() -> None:
    kinds = [m.kind for m in mutate.sites(MODULE, "mod.py")]
    assert kinds == ["binop", "compare", "bool"]
    m = mutate.sites(MODULE, "mod.py")[0]
    assert "return a - b" in mutate.mutate(MODULE, m)
    assert [m.kind for m in mutate.sites(MODULE, "mod.py", "g")] == ["compare", "bool"]


def test_enum_table_values_swap_within_the_table() -> None:
    src = 'T = {"add": "SUM", "sub": "SUB", "mul": "PROD"}\n'
    (m0, *_) = [m for m in mutate.sites(src, "t.py") if m.kind == "enum"]
    assert "'add': 'SUB'" in mutate.mutate(src, m0)


def test_run_kills_one_of_three_mutants_in_a_copy(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(MODULE)
    (tmp_path / "test_mod.py").write_text(TEST)
    results = mutate.run_mutants(
        tmp_path, [("mod.py", None)], ["test_mod.py"], jobs=2, timeout=60, package=None, log=False
    )
    assert [(r.mutant.kind, r.killed) for r in results] == [
        ("binop", True),
        ("compare", False),
        ("bool", False),
    ]
    assert (tmp_path / "mod.py").read_text() == MODULE  # the original is never touched
    text = mutate.summary(results)
    assert "mutants: 3, killed: 1, survived: 2, kill rate: 33.3%" in text
    assert "mod.py:6 [compare]" in text


def test_labels_select_the_mutants_an_earlier_log_lists(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "[1/3] killed   mod.py:2 [binop] Add -> Sub\n"
        "[2/3] SURVIVED mod.py:6 [compare] Is -> IsNot\n"
        "mutants: 3, killed: 1, survived: 2, kill rate: 33.3%\n"
        "survivors:\n"
        "  mod.py:6 [bool] True -> False\n"
    )
    labels = mutate.read_labels(log)
    assert labels == {
        "mod.py:2 [binop] Add -> Sub",
        "mod.py:6 [compare] Is -> IsNot",
        "mod.py:6 [bool] True -> False",
    }
    (tmp_path / "mod.py").write_text(MODULE)
    (tmp_path / "test_mod.py").write_text(TEST)
    only = {"mod.py:6 [bool] True -> False"}
    results = mutate.run_mutants(
        tmp_path,
        [("mod.py", None)],
        ["test_mod.py"],
        jobs=1,
        timeout=60,
        package=None,
        log=False,
        labels=only,
    )
    assert [(r.mutant.kind, r.killed) for r in results] == [("bool", False)]
