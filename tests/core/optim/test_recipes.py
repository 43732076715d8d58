"""Named recipes: the default, the fidelity benchmark's former default and the article's, and
how records made before a setting existed keep reproducing."""

from __future__ import annotations

import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.settings import RECIPES, RenderSettings, TransformSettings, recipe


def test_default_recipe_is_the_engine_default_and_others_differ_only_in_recipe_fields():
    assert recipe("default") == RenderSettings()
    for name in RECIPES:
        s = recipe(name, steps=12, seed=3)
        assert (s.steps, s.seed, s.size, s.batch) == (12, 3, None, 8)  # a budget, not a recipe


def test_article_and_fidelity_recipes_are_what_they_say():
    a = recipe("article")
    assert (a.lr, a.decay, a.lr_anneal, a.spectrum_period, a.chroma) == (0.05, 1.0, 0.0, 0.0, 1.0)
    assert a.transforms == TransformSettings.article()
    f = recipe("fidelity")
    assert (f.lr, f.decay, f.lr_anneal, f.lr_final) == (0.08, 1.5, 0.5, 0.05)
    assert (f.spectrum_period, f.chroma) == (0.0, 1.0)
    assert f.transforms == TransformSettings()
    n = recipe("natural")  # the default with the article's 1/f spectrum, nothing else
    assert n.decay == 1.0 and n.to_dict() == {**RenderSettings().to_dict(), "decay": 1.0}
    # each call gets its own transforms: changing one leaves the recipe alone
    a.transforms.pad = 3
    assert recipe("article").transforms.pad == 16


def test_unknown_recipe_is_one_sentence():
    with pytest.raises(ConfigError, match="Unknown recipe 'fancy'; known: default"):
        recipe("fancy")


def test_records_from_before_a_setting_existed_reproduce_the_old_render():
    old = RenderSettings().to_dict()
    del old["spectrum_period"], old["chroma"]
    s = RenderSettings.from_dict(old)
    assert (s.spectrum_period, s.chroma) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="chroma"):
        RenderSettings(chroma=0.0)


def test_cli_recipe_flag_is_the_base_the_other_flags_change():
    from fvdesk.cli.common import render_settings
    from fvdesk.cli.parser import build_parser

    args = build_parser().parse_args(["render", "--recipe", "article", "--lr", "0.02"])
    s = render_settings(args)
    assert s == recipe("article", lr=0.02)
    assert render_settings(build_parser().parse_args(["render"])) == RenderSettings()
