"""Evaluation: normalized regret of tuners on tasks, one jit(vmap) per tuner."""

from metatune.evaluation.regret import evaluate_tuners, summary_rows

__all__ = ["evaluate_tuners", "summary_rows"]
