"""Task families: tasks evaluate batches of encoded configurations.

Names load on first use (see `metatune._lazy`).
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, {
    **dict.fromkeys(["REASON_CODE", "REASONS", "SPLITS", "Fidelity", "Metrics", "Task",
                     "TaskFamily", "check_metrics", "configured_splits", "split_lists"], "base"),
    **dict.fromkeys(["TableFamily", "TablePool"], "table"),
    **dict.fromkeys(["evaluate_tuners", "summary_rows"], "regret"),
    **dict.fromkeys(["YahpoConfig", "YahpoFamily"], "yahpo"),
    **dict.fromkeys(["SyntheticConfig", "SyntheticFamily", "SyntheticTask", "default_space"],
                    "synthetic"),
})
