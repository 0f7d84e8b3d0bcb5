"""The recipes shipped in recipes/ validate, and name models and data that exist here."""
from pathlib import Path

import pytest

from toolchain.data_sources import parse_data_spec
from toolchain.recipe import load_recipe
from toolchain.zoo import parse_model_spec

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_validates(path):
    recipe = load_recipe(path)
    parse_model_spec(recipe.model)
    parse_data_spec(recipe.data)
    if recipe.model.startswith("pretrained:"):
        from toolchain.pretrained import weights_path

        assert weights_path(recipe.model.partition(":")[2]).is_file()


def test_default_recipe_is_fashion_mnist_at_half_latency():
    recipe = load_recipe(RECIPES[0].parent / "default.yaml")
    assert recipe.data == "fashion-mnist" and recipe.prune.budget == 0.5 and recipe.train is not None
    assert load_recipe(RECIPES[0].parent / "mnist5k.yaml").data == "mnist5k"  # the quick job stays
