"""Evaluation: the `metatune evaluate` harness, its statistics and reports.

Names load on first use (see `metatune._lazy`).
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, {
    "evaluate_tuners": "regret", "summary_rows": "regret",
    "Experiment": "experiment", "load_experiment": "experiment",
    "Harness": "harness", "run_experiment": "harness",
    "bootstrap_ci": "stats", "paired_difference": "stats", "expected_random_best": "stats",
})
