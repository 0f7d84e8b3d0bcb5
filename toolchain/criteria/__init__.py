"""Importance criteria: filters (per dependency-group unit) and layers (per removable block).

`filter_scores(name, module, analysis, loader=None, batches=8, aggregate="sum")` and
`layer_scores(name, module, analysis, blocks, loader=None, batches=8)`; see `filters` and `layers`.
"""
from toolchain.criteria.filters import FILTER_CRITERIA, filter_scores, known_filter_criteria, lamp_normalise
from toolchain.criteria.layers import known_layer_criteria, layer_scores

__all__ = ["FILTER_CRITERIA", "filter_scores", "known_filter_criteria", "lamp_normalise", "layer_scores",
           "known_layer_criteria"]
