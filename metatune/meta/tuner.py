"""A meta-trained policy as a tuner on the common interface (``init``/``ask``/``tell``)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import flax.struct
import jax
import numpy as np
from flax import nnx

from metatune.networks import policy as pol
from metatune.networks.tokens import space_info
from metatune.space import Space
from metatune.tuners.base import History, Points, Tuner, history_add, history_init


@flax.struct.dataclass
class PolicyTunerState:
  policy: pol.PolicyState
  history: History


def policy_tuner(space: Space, graphdef: Any, params: Any, config: pol.PolicyConfig,
                 budget: int, batch_size: int = 1, history_size: int = 256,
                 name: str = "policy") -> Tuner:
  """A tuner that proposes with the policy ``(graphdef, params)`` in ``space``.

  The policy may have been trained on another space: it reads the space through
  its parameter tokens. A batch ask draws ``batch_size`` proposals from the same
  state (independent samples of the policy); ``tell`` folds the results in one
  at a time.

  Args:
    space: the space to propose in.
    graphdef, params: the policy (``nnx.split``).
    config: the policy's settings.
    budget: the number of trials the policy was trained for (a feature of its state).
    batch_size: proposals per ask.
    history_size: capacity of the history buffer.
    name: label for reports.

  Example:
    >>> tuner = policy_tuner(space, graphdef, params, PolicyConfig(), budget=20)  # doctest: +SKIP
  """
  info = space_info(space)

  def init(key):
    del key
    return PolicyTunerState(pol.init_state(config, info), history_init(space, history_size))

  def ask(key, state):
    policy = nnx.merge(graphdef, params)
    keys = jax.random.split(key, batch_size)
    action = jax.vmap(lambda k: pol.autoregress(policy, info, state.policy, k)[0])(keys)
    return Points(action.values, action.active), state

  def tell(key, state, points, evaluation):
    del key
    policy = nnx.merge(graphdef, params)

    def fold(ps, x):
      return pol.observe(policy, info, ps, *x, float(budget)), None

    ps, _ = jax.lax.scan(fold, state.policy, (points.values, points.active,
                                              evaluation.objective, evaluation.failed))
    history, metrics = history_add(state.history, points, evaluation)
    return state.replace(policy=ps, history=history), metrics

  return Tuner(init, ask, tell, space, batch_size, name)


def prior_tuner(space: Space, batch_size: int = 1, path: str | None = None,
                budget: int | None = None, history_size: int | None = None,
                mode: str = "hybrid", **options) -> Tuner:
  """The prior folder ``path`` (written by ``metatune meta-train``) as a tuner.

  ``mode="hybrid"`` (default) is `metatune.meta.hybrid.hybrid_tuner`: the prior's
  portfolio as the initial design, then candidates (random, portfolio, the policy's
  samples, local moves) screened by a GP with the prior's profile as its mean, under
  the negative-transfer guard; its ``options`` (``guard``, ``num_initial``, ...) pass
  through; ``beliefs`` may be a space file whose ``beliefs`` section is read
  (`metatune.space.beliefs`). The design, profile and portfolio are used only on the space they were
  made on; on another space the policy and the screening remain, unless ``carry_over=True``:
  then they are carried into a space that shares at least half of its parameters with the
  training space (`metatune.meta.transfer.project`: shared parameters keep their values, new
  ones take their defaults; a space that shares less gets a warning and none).
  ``transfer_kernel=True`` centres the GP's lengthscale prior on the kernel fitted to the
  prior's profile (`metatune.meta.transfer.kernel_locs`), on the training space or carried
  into another one as above (the design and portfolio stay behind unless ``carry_over``).
  ``kernel_fit="tasks"`` fits that kernel to every training task's regrets at once (one
  kernel, the sum of their likelihoods; `metatune.meta.transfer.kernel_locs`) instead of to
  their mean, the profile (``"profile"``, the default).
  ``carry_design=K`` carries only the first ``K`` configurations of the portfolio into another
  space (as ``carry_over`` does; an alternative to it): they lead the initial design, whose
  other entries stay random, and the profile, the portfolio's candidates and the guard stay
  behind. On the training space the whole portfolio leads anyway, so it changes nothing there.
  ``spread_design=True`` (a `metatune.meta.hybrid.hybrid_tuner` option) chooses the initial
  design's entries that no portfolio or carried design fills by the GP's variance design, with
  the transferred kernel where ``transfer_kernel`` is on; ``rescue_design="spread"`` makes the
  rescue of a prior its guard rejected early the GP's variance design instead of random trials.
  ``mode="policy"`` is the meta-trained policy alone (`policy_tuner`).

  When ``space`` is not the space the prior was meta-trained on, a `SpaceMismatchWarning`
  says what differs (`metatune.meta.compat.compare_spaces`: parameters it never saw, kinds,
  ranges, conditions, constraints); the prior is used all the same.

  Args:
    space: the space to propose in (the prior may have been trained on another one).
    batch_size: proposals per ask.
    path: the prior folder.
    budget: the study's budget in trials (default: the budget the prior was trained for).
    history_size: capacity of the history buffer.

  Raises:
    ValueError: no ``path`` given.
    PriorError: (a ``ValueError``) no prior there, or one that fails its checks (see
      `metatune.meta.prior.load_prior`).
  """
  if path is None:
    raise ValueError("the prior tuner needs path=PRIOR_DIR (a folder written by "
                     "'metatune meta-train')")
  # pylint: disable=import-outside-toplevel
  from metatune.meta import compat
  from metatune.meta.prior import CARD, PriorError, load_prior
  graphdef, params, config, card = load_prior(path)
  trained_for = card.get("num_trials")
  if budget is None and (not isinstance(trained_for, int) or isinstance(trained_for, bool) or
                         trained_for < 1):
    raise PriorError(f"num_trials must be a positive whole number, got {trained_for!r}",
                     f"{path}/{CARD}")
  compat.warn_if_different(card, space, prior=f"the prior {path}", stacklevel=2)
  name = f"prior:{card['policy_hash']}"
  if mode == "policy":
    if options:
      raise ValueError(f"options {sorted(options)} are for mode='hybrid'")
    return policy_tuner(space, graphdef, params, config, budget or trained_for,
                        batch_size, history_size or 256, name=name)
  if mode != "hybrid":
    raise ValueError(f"mode must be 'hybrid' or 'policy', got {mode!r}")
  from metatune.meta import hybrid, transfer  # pylint: disable=import-outside-toplevel
  from metatune.space import beliefs  # pylint: disable=import-outside-toplevel
  if isinstance(options.get("beliefs"), (str, os.PathLike)):   # a space file's beliefs
    options["beliefs"] = beliefs.load(options["beliefs"], space)
  carry_over = options.pop("carry_over", False)
  transfer_kernel = options.pop("transfer_kernel", False)
  carry_design = options.pop("carry_design", 0)
  kernel_fit = options.pop("kernel_fit", "profile")
  for key, value in (("carry_over", carry_over), ("transfer_kernel", transfer_kernel)):
    if not isinstance(value, bool):
      raise ValueError(f"{key} must be true or false, got {value!r}")
  if not isinstance(carry_design, int) or isinstance(carry_design, bool) or carry_design < 0:
    raise ValueError(f"carry_design must be a whole number >= 0, got {carry_design!r}")
  if kernel_fit not in transfer.KERNEL_FITS:
    raise ValueError(f"kernel_fit must be one of {transfer.KERNEL_FITS}, got {kernel_fit!r}")
  if kernel_fit != "profile" and not transfer_kernel:
    raise ValueError("kernel_fit chooses what a transferred kernel is fitted to; it needs "
                     "transfer_kernel: true")
  if carry_design and carry_over:
    raise ValueError("carry_design and carry_over are alternatives: carry_over already "
                     "carries the whole portfolio (with the profile); set one of them")
  # data: what the hybrid uses as design, profile and portfolio; source: what a kernel is fit to.
  if card.get("space_signature") == space.signature:
    data = source = transfer.load(path, space)
    if source is None and transfer_kernel:
      warnings.warn(f"transfer_kernel: the prior {path} has no {transfer.FILE}; the kernel "
                    "keeps GP-BO's prior", compat.SpaceMismatchWarning, stacklevel=2)
  elif carry_over or transfer_kernel or carry_design:
    asked = tuple(name for name, on in (("carry_over", carry_over),
                                        ("carry_design", carry_design),
                                        ("transfer_kernel", transfer_kernel)) if on)
    source = _carried_over(path, card, space, asked)
    data = source if carry_over else None
    if carry_design and source is not None:
      lead = np.asarray(source.portfolio)[:carry_design]
      options["design"] = Points(np.asarray(source.values)[lead],
                                 np.asarray(source.active)[lead])
  else:
    data = source = None
  if transfer_kernel and source is not None:
    try:
      options["kernel_locs"] = transfer.kernel_locs(space, source, source=kernel_fit)
    except ValueError as e:   # kernel_fit: tasks on a folder written before the regrets were
      raise PriorError(f"kernel_fit: {e}", f"{path}/{transfer.FILE}") from None
  return hybrid.hybrid_tuner(space, data, (graphdef, params, config), budget or trained_for,
                             batch_size, history_size, policy_horizon=trained_for, name=name,
                             **options)


def _carried_over(path, card, space: Space, asked: tuple[str, ...] = ("carry_over",)):
  """The prior's transfer data projected into ``space``, or None with a warning saying why
  (naming the options that ``asked`` for it and what each of them loses)."""
  # pylint: disable=import-outside-toplevel
  from metatune.meta import compat, transfer
  raw = transfer.read(path)
  description = card.get(compat.DESCRIPTION)
  if raw is None:
    why = f"the prior has no {transfer.FILE}"
  elif not isinstance(description, dict) or "params" not in description:
    why = "its card does not describe its training space"
  else:
    data = transfer.project(raw, description, space)
    if data is not None:
      return data
    shared = transfer.shared_parameters(description, space)
    why = (f"only {len(shared)} of the {space.num_params} parameters of {space.name!r} are in "
           f"its training space (at least half must be)")
  lost = {"carry_over": "keeps its policy but not its design and portfolio",
          "carry_design": "carries no design", "transfer_kernel": "transfers no kernel"}
  warnings.warn(f"{', '.join(asked)}: the prior {path} "
                f"{' and '.join(lost[a] for a in asked)}: {why}", compat.SpaceMismatchWarning,
                stacklevel=3)
  return None
