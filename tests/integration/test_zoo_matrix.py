"""Every headless feature on every model of the fixture zoo (tests/integration/zoo.py), through the CLI as
users run it: each cell ends ok or with a one-sentence refusal, never an internal error.

The matrix itself is tools/try_every_feature.py's (imported by path), so the script users run on
their own files and this test cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.integration.zoo import ZOO

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "try_every_feature.py"


def _load_tool():
    name = "try_every_feature"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _TOOL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


tool = _load_tool()

#: Cells that must refuse, with words their sentence must contain: the model cannot do it.
EXPECTED_REFUSALS: dict[tuple[str, str], str] = {
    # no classifier in what converts: the user is asked to name the logits layer
    ("unconvertible_tail", "logit"): "no classifier output was found",
    ("unconvertible_tail", "prob"): "no classifier output was found",
}


def _cells():
    for model in ZOO:
        for feature in tool.FEATURES:
            yield pytest.param(model, feature, id=f"{model}-{feature}")


@pytest.fixture(scope="session")
def zoo_contexts(model_cache, tmp_path_factory):
    """One context per zoo model (built and its layers listed once), sharing a work folder."""
    work = tmp_path_factory.mktemp("zoo_matrix")
    made: dict[str, object] = {}

    def get(name: str):
        if name not in made:
            made[name] = tool.feature_context(ZOO[name](model_cache), work, steps=2, size=32)
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(("model", "feature"), list(_cells()))
def test_every_feature_ends_ok_or_with_one_sentence(
    model, feature, zoo_contexts, examples_cache
) -> None:
    ctx = zoo_contexts(model)
    got = tool.run_feature(ctx, feature)
    detail = "\n".join(ctx.logs[-3:])
    assert got.status != tool.FAIL, f"{model} / {feature}: {got}\n{detail}"
    expected = EXPECTED_REFUSALS.get((model, feature))
    if expected is None:
        assert got.status == tool.OK, f"{model} / {feature}: {got}\n{detail}"
    else:
        assert got.status == tool.REFUSED and expected in got.message, str(got)
        assert "\n" not in got.message


def test_the_judge_tells_a_refusal_from_an_internal_error() -> None:
    """The matrix's verdicts: what makes a cell ok, refused or failed."""
    assert tool.judge(0, "Wrote 1 item.\n", "").status == tool.OK
    refusal = tool.judge(1, "", "fvdesk: error: m.onnx has no classifier output.\n")
    assert (refusal.status, refusal.message) == (tool.REFUSED, "m.onnx has no classifier output.")
    assert tool.judge(1, "", "fvdesk: internal error: KeyError: 3\n").status == tool.FAIL
    assert tool.judge(0, "", "Traceback (most recent call last):\n  ValueError: x\n").status == (
        tool.FAIL
    )
    usage = tool.judge(2, "", "fvdesk render: error: no classifier output was found in m.onnx\n")
    assert usage.status == tool.REFUSED  # a usage refusal the user can act on
    argparse_dump = "usage: fvdesk render [-h] ...\nfvdesk render: error: a\nfvdesk: error: b\n"
    assert tool.judge(2, "", argparse_dump).status == tool.FAIL
    assert tool.judge(134, "", "").status == tool.FAIL


def test_the_matrix_runs_a_feature_through_the_cli(demo_model_path, tmp_path, examples_cache):
    """One cheap cell of the matrix on the demo model, outside the slow mark."""
    ctx = tool.feature_context(demo_model_path, tmp_path, steps=1, size=32)
    assert ctx.layer and ctx.channels > 1 and ctx.position
    assert str(tool.run_feature(ctx, "unit")) == "ok"
    assert (tmp_path / Path(demo_model_path).stem / "unit" / "gallery.json").is_file()
