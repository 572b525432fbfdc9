"""Meta-datasets: evaluations of a shared design on every task of a family, with provenance.

Names load on first use (see `metatune._lazy`): `metatune.data.cli` registers its
commands without importing jax.
"""

from metatune import _lazy

__getattr__, __dir__, __all__ = _lazy.exports(__name__, dict.fromkeys(
    ["FORMAT", "build", "design", "load", "safe_name"], "builder"))
