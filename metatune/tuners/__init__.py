"""Tuners on one functional interface: ``Tuner(init, ask, tell)``, and `run_tuning`."""

from metatune.tuners.base import (Evaluation, History, Points, Tuner, history_add, history_init,
                                  tell_history)
from metatune.tuners.gp import GPParams, GPPosterior, GPPrior, GPState, gp_bo
from metatune.tuners.run import Trace, best_so_far, run_tuning
from metatune.tuners.search import (TUNERS, grid_points, grid_search, halton, quasi_random,
                                    random_search, shared_dimensions)
