"""Compatibility: normalized regret of tuners on jittable tasks now lives in `metatune.tasks.regret`."""

from metatune.tasks.regret import CHECKPOINTS, evaluate_tuners, summary_rows  # noqa: F401
