"""``fourds demo``: the whole paper in miniature on one laptop (no data, no download, no GPU).

Procedural 4D scenes → SimpleMAE pretraining at two tiny sizes → the frozen probe protocol on the five
synthetic tasks for each pretrained model, the same architectures at random initialisation and a
per-frame baseline → a Table-2-shaped results table (mean ± std over readout seeds), verdicts written
from the numbers, plots and pictures. ``docs/demo.md`` describes the outputs and the recipe.
"""

from fourds.demo.blank import BlankBackbone
from fourds.demo.config import (
    RECIPES,
    DemoRecipe,
    ModelRecipe,
    default_recipe,
    get_recipe,
    gpu_recipe,
    long_recipe,
    quick_recipe,
)
from fourds.demo.features import FeatureMemo, clip_key
from fourds.demo.run import run_demo

__all__ = ["RECIPES", "BlankBackbone", "DemoRecipe", "FeatureMemo", "ModelRecipe", "clip_key", "default_recipe", "get_recipe", "gpu_recipe",
           "long_recipe", "quick_recipe", "run_demo"]
