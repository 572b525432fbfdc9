"""Evaluation: normalized regret of tuners on tasks, one jit(vmap) per tuner.

Names load on first use (see `metatune._lazy`).
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, {
    "evaluate_tuners": "regret", "summary_rows": "regret",
})
