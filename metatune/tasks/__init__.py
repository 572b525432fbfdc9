"""Task families: tasks evaluate batches of encoded configurations."""

from metatune.tasks.base import (REASON_CODE, REASONS, SPLITS, Fidelity, Metrics, Task,
                                 TaskFamily, check_metrics, split_lists)
from metatune.tasks.yahpo import YahpoConfig, YahpoFamily
from metatune.tasks.synthetic import SyntheticConfig, SyntheticFamily, SyntheticTask, default_space
