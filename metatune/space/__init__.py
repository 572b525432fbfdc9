"""Tree-structured search spaces with conditions and constraints, compiled to a fixed-shape encoding.

Names load on first use (see `metatune._lazy`): the command line imports
`metatune.space.errors` without paying for jax.
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, {
    "SpaceError": "errors",
    "ExprError": "expr", "parse": "expr",
    "Bool": "model", "Categorical": "model", "Constraint": "model", "Float": "model",
    "Int": "model", "Ordinal": "model", "Param": "model",
    "feasibility": "sampling", "feature_size": "sampling", "featurize": "sampling",
    "neighbours": "sampling", "perturb": "sampling", "repair": "sampling", "sample": "sampling",
    "Space": "space",
})
