"""Task families: tasks evaluate batches of encoded configurations."""

from metatune.tasks.synthetic import SyntheticConfig, SyntheticFamily, SyntheticTask, default_space
