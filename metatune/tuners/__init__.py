"""Tuners on one functional interface: ``Tuner(init, ask, tell)``, and `run_tuning`.

Names load on first use (see `metatune._lazy`).
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, {
    **dict.fromkeys(["Evaluation", "History", "Points", "Tuner", "history_add", "history_init",
                     "pool_draw", "tell_history"], "base"),
    **dict.fromkeys(["GPParams", "GPPosterior", "GPPrior", "GPState", "gp_bo"], "gp"),
    **dict.fromkeys(["Trace", "best_so_far", "run_tuning"], "run"),
    **dict.fromkeys(["build_portfolio", "load_portfolio", "portfolio_tuner", "save_portfolio"],
                    "portfolio"),
    **dict.fromkeys(["TUNERS", "grid_points", "grid_search", "halton", "quasi_random",
                     "random_search", "shared_dimensions"], "search"),
})
