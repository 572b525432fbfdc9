"""The surrogate environment: a jittable task family whose tasks are meta-surrogate episodes.

Shaped like `SyntheticFamily` (``sample``, ``clean``, ``evaluate``, ``reference``),
so meta-training vmaps it the same way. A task (an *episode*) is a context of
``num_context`` real observations of one source task (a random subset of
its observations), encoded once into the surrogate's context cache, plus
per-episode random functions. Its noise-free objective at a configuration is
a draw from the surrogate's predictive distribution that is a fixed,
correlated function of the configuration:

  ``clean(x) = loc + scale * Q_x(Phi(draw_scale * g(x)))``

where ``Q_x`` is the predictive quantile function at ``x``, ``Phi`` the
normal CDF and ``g`` a random function drawn once per episode (random Fourier
features of an RBF kernel over `sampling.featurize`, marginally ``N(0, 1)``).
With ``draw_scale = 1`` each value is an exact draw from the predictive
marginal and nearby configurations get similar quantiles; with 0 it is the
predictive median (`EnvConfig` explains the default). Since a query never attends
to other queries, the same configuration gets the same value in any batch of
an episode (up to float32 rounding of batched matmuls, ~1e-6 relative). A
configuration fails (clean value NaN) where a second random function, as a
uniform, falls below the predicted failure probability. ``evaluate`` adds
Gaussian observation noise of ``noise * scale``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import Space, SpaceError, sampling
from metatune.surrogate import bars
from metatune.surrogate.checkpoint import load_contexts, load_surrogate
from metatune.surrogate.data import TaskTable, normalizer
from metatune.surrogate.model import ContextCache
from metatune.surrogate.predictive import Surrogate
from metatune.tasks.base import REASON_CODE, Metrics, Task, TaskFamily, numbered_task
from metatune.tasks.reference import reference
from metatune.tuners.base import Evaluation, Points


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  """Settings of the surrogate environment (static).

  Attributes:
    num_context: observations of the source task each episode conditions on.
    draw_scale: 0 gives the predictive median, 1 a full draw (see the module docstring).
      The default 0 is what `experiments/surrogate_eval.py` chose on meta-validation
      tasks of rbv2_xgboost: the setting under which random and quasi-random search
      find the regret they find on the real tasks (0.25 with ``lengthscale`` 1 was
      as close, within 0.001; full draws make landscapes far rougher than the real
      ones). Episodes then differ by their contexts (random subsets of a source
      task's observations) and noise.
    num_random_features: random Fourier features of the per-episode functions.
    lengthscale: of the value draw's RBF kernel, in feature units, relative to
      ``sqrt(num_features)``.
    fail_lengthscale: the same for the failure function: short, so that within
      an episode about the predicted fraction of configurations fails (a long
      one makes an episode fail nearly everywhere or nowhere).
    noise: observation noise std, relative to the episode's context scale.
    failures: draw failures from the failure head (else nothing fails).
    num_tasks: tasks of the family as a `TaskFamily` (fixed episodes).
    seed: of those fixed episodes.
  """
  num_context: int = 32
  draw_scale: float = 0.0
  num_random_features: int = 128
  lengthscale: float = 1.0
  fail_lengthscale: float = 0.25
  noise: float = 0.02
  failures: bool = True
  num_tasks: int = 100
  seed: int = 0


@flax.struct.dataclass
class SurrogateTask:
  """One episode (numeric; a batch of episodes is one vmap).

  Attributes:
    source: i32[] index of the source task in the contexts.
    cache: the encoded context.
    loc, scale: f32[] the episode's units (context mean and sd).
    freq: f32[2, M, F], phase f32[2, M], weight f32[2, M]: the random
      functions of the value draw (0) and of failures (1).
    noise: f32[] observation noise std (objective units).
  """
  source: jax.Array
  cache: ContextCache
  loc: jax.Array
  scale: jax.Array
  freq: jax.Array
  phase: jax.Array
  weight: jax.Array
  noise: jax.Array


class SurrogateFamily(TaskFamily):
  """Episodes of a meta-surrogate conditioned on real observations of source tasks.

  Args:
    space: the space (must be the surrogate's).
    surrogate: the trained `Surrogate`.
    contexts: observations of the source tasks (e.g. `data.load_table` of the
      meta-training split); each task needs at least ``config.num_context``.
    config: `EnvConfig`.

  Raises:
    ValueError: a space or contexts that do not fit the surrogate, or a bad setting.

  Example:
    >>> fam = SurrogateFamily(space, surrogate, contexts)          # doctest: +SKIP
    >>> tasks = jax.vmap(fam.sample)(jax.random.split(key, 64))    # doctest: +SKIP
    >>> ev = jax.vmap(fam.evaluate)(keys, tasks, points)           # doctest: +SKIP
  """

  cost_unit = "evaluations"

  def __init__(self, space: Space, surrogate: Surrogate, contexts: TaskTable,
               config: EnvConfig = EnvConfig()):
    if space.signature != surrogate.space.signature:
      raise ValueError(f"space: {space.name!r} (signature {space.signature}) is not the "
                       f"surrogate's space {surrogate.space.name!r} "
                       f"({surrogate.space.signature})")
    if contexts.values.shape[-1] != space.num_params:
      raise ValueError(f"contexts: configurations have {contexts.values.shape[-1]} parameters, "
                       f"the space {space.num_params}")
    if not 1 <= config.num_context <= contexts.num_configs:
      raise ValueError(f"config.num_context = {config.num_context}: must be in "
                       f"1..{contexts.num_configs} (the observations per source task)")
    if (config.num_random_features < 1 or config.lengthscale <= 0 or
        config.fail_lengthscale <= 0 or config.noise < 0):
      raise ValueError("config: num_random_features must be positive, lengthscale and "
                       "fail_lengthscale positive and noise non-negative")
    self.space = space
    self.surrogate = surrogate
    self.contexts = jax.tree.map(jnp.asarray, contexts)
    self.config = config
    self.name = f"surrogate-{surrogate.info.get('family', space.name)}"
    self._num_features = sampling.feature_size(space)

  def sample(self, key: jax.Array) -> SurrogateTask:
    """Draws one episode: a source task, a context from it and the episode's random functions."""
    src_key, episode_key = jax.random.split(key)
    source = jax.random.randint(src_key, (), 0, self.contexts.num_tasks)
    return self.sample_from(episode_key, source)

  def sample_from(self, key: jax.Array, source: jax.Array) -> SurrogateTask:
    """An episode of a given source task (``source``: i32[] index into the contexts)."""
    rows_key, draw_key = jax.random.split(key)
    ctx, cfg = self.contexts, self.config
    t = jnp.asarray(source, jnp.int32)
    rows = jax.random.permutation(rows_key, ctx.num_configs)[:cfg.num_context]
    y, failed = ctx.objective[t, rows], ctx.failed[t, rows]
    loc, scale = normalizer(y, ~failed, ctx.loc[t], ctx.scale[t],
                            self.surrogate.config.scale_floor, self.surrogate.config.robust_units)
    x = sampling.featurize(self.space, ctx.values[t, rows], ctx.active[t, rows])
    cache = self.surrogate.encode(x, jnp.where(failed, 0.0, (y - loc) / scale), failed,
                                  jnp.ones(rows.shape, bool))
    m, f = cfg.num_random_features, self._num_features
    ell = jnp.asarray([cfg.lengthscale, cfg.fail_lengthscale])[:, None, None] * math.sqrt(f)
    # One flat draw for all three: under vmap, XLA on CPU compiles a multi-dimensional
    # random draw many times slower than a flat one of the same size.
    normal = jax.random.normal(draw_key, (2 * m * (f + 2),)).reshape(2, m, f + 2)
    freq = normal[..., :f] / ell
    phase = 2 * math.pi * jax.scipy.special.ndtr(normal[..., f])
    weight = normal[..., f + 1]
    return SurrogateTask(t, cache, loc, scale, freq, phase, weight, cfg.noise * scale)

  def _functions(self, task: SurrogateTask, x: jax.Array) -> jax.Array:
    """f32[2, B]: the episode's two random functions, each marginally about N(0, 1)."""
    proj = jnp.einsum("kmf,bf->kbm", task.freq, x) + task.phase[:, None, :]
    m = task.weight.shape[-1]
    return math.sqrt(2.0 / m) * jnp.einsum("kbm,km->kb", jnp.cos(proj), task.weight)

  def clean(self, task: SurrogateTask, points: Points) -> jax.Array:
    """f32[B]: the episode's noise-free objective (NaN where the configuration fails)."""
    x = sampling.featurize(self.space, points.values, points.active)
    logits, fail_logit = self.surrogate.query(task.cache, x)
    g = self._functions(task, x)
    u = jax.scipy.special.ndtr(self.config.draw_scale * g[0])
    f = task.loc + task.scale * bars.quantile(self.surrogate.borders, logits, u)
    if self.config.failures:
      f = jnp.where(jax.scipy.special.ndtr(g[1]) < jax.nn.sigmoid(fail_logit), jnp.nan, f)
    return f

  def evaluate(self, key: jax.Array, task: SurrogateTask, points: Points) -> Evaluation:
    """Noisy objective of a batch; failing configurations come back failed."""
    f = self.clean(task, points)
    noisy = f + task.noise * jax.random.normal(key, f.shape)
    return Evaluation.of(noisy, jnp.isnan(f))

  def reference(self, key: jax.Array, task: SurrogateTask, num: int = 4096, refine: int = 20
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(optimum, median, worst)`` of an episode's clean objective (see `reference`)."""
    return reference(key, self.space, lambda p: self.clean(task, p), num, refine)

  # ------------------------------------------------- as a meta-training environment
  def task_params(self, index: jax.Array) -> SurrogateTask:
    """Episode ``surrogate-{index:04d}`` (jittable in ``index``), as `metatune.meta.ppo` wants."""
    return self.sample(jax.random.fold_in(jax.random.key(self.config.seed), index))

  def task_indices(self, split: str) -> np.ndarray:
    """i32[N]: the indices of the episodes of a split (see `task_params`)."""
    return np.asarray([numbered_task(self.name, "surrogate", t, self.config.num_tasks)
                       for t in self.task_ids(split)], np.int32)

  # ------------------------------------------------------- as a TaskFamily
  def splits(self) -> dict[str, list[str]]:
    """Fixed episodes ``surrogate-0000``..., all for meta-training (their sources are)."""
    ids = [f"surrogate-{i:04d}" for i in range(self.config.num_tasks)]
    return {"meta_train": ids, "meta_valid": [], "heldout_dataset": [], "heldout_model": []}

  def task(self, task_id: str) -> Task:
    index = numbered_task(self.name, "surrogate", task_id, self.config.num_tasks)
    params = self.task_params(index)

    def evaluate(key, points):
      ev = self.evaluate(key, params, points)
      return Metrics.simple(ev.objective, ev.failed, reason=REASON_CODE["diverged"],
                            cost=jnp.ones(ev.objective.shape, jnp.float32))

    source = self.contexts.task_ids[int(params.source)] if self.contexts.task_ids else None
    return Task(task_id, evaluate, {"index": index, "source": source})


_ENV_OPTIONS = {f.name for f in dataclasses.fields(EnvConfig)}


def make_family(options: dict, data_dir=None) -> SurrogateFamily:
  """The ``family: surrogate`` of a family config: episodes of a trained surrogate folder.

  Options: ``surrogate`` (the folder `metatune surrogate train` wrote, with the
  contexts saved beside the model; relative to the config's folder) and any
  `EnvConfig` field. The family remembers the folder (``source_dir``) so that
  meta-training copies it into the prior.

  Raises:
    ValueError: a missing or unknown option, a folder that is not a surrogate.
  """
  del data_dir  # the surrogate folder holds everything
  options = dict(options)
  folder = options.pop("surrogate", None)
  if not folder:
    raise ValueError("option 'surrogate' is required: a folder written by "
                     "'metatune surrogate train'")
  unknown = sorted(set(options) - _ENV_OPTIONS)
  if unknown:
    raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: surrogate, "
                     f"{', '.join(sorted(_ENV_OPTIONS))}")
  try:
    surrogate, contexts = load_surrogate(folder), load_contexts(folder)
  except (OSError, SpaceError) as e:
    raise ValueError(f"option 'surrogate': {folder}: {e}") from None
  family = SurrogateFamily(surrogate.space, surrogate, contexts, EnvConfig(**options))
  family.source_dir = pathlib.Path(folder)
  return family
