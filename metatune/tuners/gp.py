"""Bayesian optimization with an exact Gaussian process: the no-transfer model-based baseline.

The GP models the space's featurization (`featurize`: unit numbers, one-hot
choices, inactive parameters zeroed, plus the active mask), so conditional
parameters are part of the input. Matérn-5/2 kernel with ARD lengthscales,
signal and noise variances and a constant mean, fitted by maximizing the log
marginal likelihood plus log-normal priors (the dimension-scaled lengthscale
prior of Hvarfner et al., 2024) with Adam on log-parameters, warm-started from
the previous fit. The history is a fixed-size buffer, so data is masked, never
indexed: failed and empty slots become independent unit-variance dummies that
touch neither the likelihood nor the posterior.

Proposals maximize log expected improvement over the structured space with the
space's own sampler and local perturbations, so every proposal is valid by
construction; a batch is made diverse by kriging-believer fantasies.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from metatune.space import Space, sampling
from metatune.tuners.base import History, Points, Tuner, history_add, history_init

_JITTER = 1e-6   # relative to the signal variance
_MIN_VAR = 1e-10


@flax.struct.dataclass
class GPParams:
  """GP hyperparameters; positive ones in log space. Targets are standardized.

  Attributes:
    log_lengthscale: f32[F] ARD lengthscales over the features.
    log_signal: f32[] signal variance.
    log_noise: f32[] noise variance.
    mean: f32[] constant mean.
  """
  log_lengthscale: jax.Array
  log_signal: jax.Array
  log_noise: jax.Array
  mean: jax.Array


@dataclasses.dataclass(frozen=True)
class GPPrior:
  """Log-normal priors and box bounds on the hyperparameters (static).

  The lengthscale prior's location grows with the input dimension F (Hvarfner,
  Hellsten & Nardi, 2024), which keeps vanilla BO from over-exploring when F is
  large relative to the number of observations.
  """
  num_features: int
  lengthscale_median: float | None = None  # default: exp(sqrt(2)) * sqrt(num_features)
  lengthscale_scale: float = math.sqrt(3.0)
  signal_loc: float = 0.0
  signal_scale: float = 1.0
  noise_loc: float = -4.0
  noise_scale: float = 1.0
  mean_scale: float = 1.0
  lengthscale_bounds: tuple[float, float] = (1e-2, 1e3)
  signal_bounds: tuple[float, float] = (1e-2, 1e2)
  noise_bounds: tuple[float, float] = (1e-5, 1.0)

  @property
  def lengthscale_loc(self) -> float:
    if self.lengthscale_median is not None:
      return math.log(self.lengthscale_median)
    return math.sqrt(2.0) + 0.5 * math.log(self.num_features)

  def init(self) -> GPParams:
    """The prior medians."""
    f32 = lambda v, shape=(): jnp.full(shape, v, jnp.float32)
    return GPParams(f32(self.lengthscale_loc, (self.num_features,)), f32(self.signal_loc),
                    f32(self.noise_loc), f32(0.0))

  def log_prob(self, p: GPParams) -> jax.Array:
    """Unnormalized log prior density of the (log-space) parameters."""
    sq = lambda x, loc, scale: -0.5 * jnp.sum(((x - loc) / scale) ** 2)
    return (sq(p.log_lengthscale, self.lengthscale_loc, self.lengthscale_scale) +
            sq(p.log_signal, self.signal_loc, self.signal_scale) +
            sq(p.log_noise, self.noise_loc, self.noise_scale) + sq(p.mean, 0.0, self.mean_scale))

  def project(self, p: GPParams) -> GPParams:
    """Clips the parameters into their bounds."""
    clip = lambda x, b: jnp.clip(x, math.log(b[0]), math.log(b[1]))
    return GPParams(clip(p.log_lengthscale, self.lengthscale_bounds),
                    clip(p.log_signal, self.signal_bounds), clip(p.log_noise, self.noise_bounds),
                    jnp.clip(p.mean, -5.0, 5.0))


# ------------------------------------------------------------------ the GP
def matern52(x1: jax.Array, x2: jax.Array, lengthscale: jax.Array, signal: jax.Array
             ) -> jax.Array:
  """Matérn-5/2 kernel matrix ``f32[N, M]`` between ``x1 f32[N, F]`` and ``x2 f32[M, F]``."""
  d = (x1[:, None, :] - x2[None, :, :]) / lengthscale
  r2 = jnp.sum(d * d, axis=-1)
  # Double where: sqrt has no gradient at 0 (the diagonal, duplicates).
  pos = r2 > 0
  s5r = jnp.where(pos, jnp.sqrt(5.0 * jnp.where(pos, r2, 1.0)), 0.0)
  return signal * (1.0 + s5r + (5.0 / 3.0) * r2) * jnp.exp(-s5r)


@flax.struct.dataclass
class GPPosterior:
  """A GP conditioned on masked data.

  Attributes:
    params: the hyperparameters.
    x, mask: f32[N, F], bool[N] the data (masked-out rows are ignored).
    chol_inv: f32[N, N] the inverse of the Cholesky factor of the data covariance.
    alpha: f32[N] the weights ``K^-1 (y - mean)``.
  """
  params: GPParams
  x: jax.Array
  mask: jax.Array
  chol_inv: jax.Array
  alpha: jax.Array


# Linear algebra on CPU, vmapped: jaxlib's batched LAPACK kernels wait on the same
# thread pool that runs them, so two *independent* batched factorizations or
# solves can deadlock a small pool. Here every LAPACK call is one chain (Cholesky,
# then one triangular solve for the factor's inverse) and all else is matmuls.
def _cholesky_inverse(k: jax.Array) -> tuple[jax.Array, jax.Array]:
  chol = jnp.linalg.cholesky(k)
  eye = jnp.eye(k.shape[-1], dtype=k.dtype)
  return chol, jax.scipy.linalg.solve_triangular(chol, eye, lower=True)


@jax.custom_vjp
def _gaussian_energy(k: jax.Array, resid: jax.Array) -> jax.Array:
  """``0.5 r^T K^-1 r + 0.5 log det K``, differentiated without more LAPACK calls."""
  return _gaussian_energy_fwd(k, resid)[0]


def _gaussian_energy_fwd(k, resid):
  chol, inv = _cholesky_inverse(k)
  w = inv @ resid
  return 0.5 * jnp.dot(w, w) + jnp.sum(jnp.log(jnp.diagonal(chol))), (inv, w)


def _gaussian_energy_bwd(res, g):
  inv, w = res
  alpha = inv.T @ w
  return g * 0.5 * (inv.T @ inv - jnp.outer(alpha, alpha)), g * alpha


_gaussian_energy.defvjp(_gaussian_energy_fwd, _gaussian_energy_bwd)


def _gram(params: GPParams, x, y, mask):
  """The covariance of the masked data (jitter included) and the residuals from the mean."""
  signal, noise = jnp.exp(params.log_signal), jnp.exp(params.log_noise)
  m = mask.astype(jnp.float32)
  k = matern52(x, x, jnp.exp(params.log_lengthscale), signal) * m[:, None] * m[None, :]
  # Masked slots are independent unit-variance dummies with residual 0: they add
  # log(1) to the log-determinant and nothing to the quadratic term.
  diag = jnp.where(mask, noise + _JITTER * signal, 1.0)
  return k + jnp.diag(diag), jnp.where(mask, y - params.mean, 0.0)


def log_marginal_likelihood(params: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array
                            ) -> jax.Array:
  """log p(y | x, params) over the masked-in observations (``f32[N, F]``, ``f32[N]``, ``bool[N]``).

  NaN where the float32 Cholesky factorization fails.
  """
  k, resid = _gram(params, x, y, mask)
  return -_gaussian_energy(k, resid) - 0.5 * jnp.sum(mask) * math.log(2.0 * math.pi)


def posterior(params: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array) -> GPPosterior:
  """Conditions the GP on the masked data.

  If the float32 Cholesky fails, the jitter grows tenfold (up to 1e-3 of the
  signal variance) until it succeeds.
  """
  k, resid = _gram(params, x, y, mask)
  eye = jnp.eye(k.shape[-1], dtype=k.dtype) * jnp.exp(params.log_signal)

  def failed(carry):
    inv, tries = carry
    return (tries < 3) & ~jnp.all(jnp.isfinite(inv))

  def retry(carry):
    _, tries = carry
    return _cholesky_inverse(k + _JITTER * 10.0 ** (tries + 1.0) * eye)[1], tries + 1

  inv, _ = jax.lax.while_loop(failed, retry, (_cholesky_inverse(k)[1], jnp.zeros((), jnp.int32)))
  return GPPosterior(params, x, mask, inv, inv.T @ (inv @ resid))


def predict(post: GPPosterior, x_new: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Latent posterior mean and variance, ``f32[M]`` each, at ``x_new f32[M, F]``."""
  p = post.params
  signal = jnp.exp(p.log_signal)
  ks = matern52(x_new, post.x, jnp.exp(p.log_lengthscale), signal) * post.mask[None, :]
  v = ks @ post.chol_inv.T
  return p.mean + ks @ post.alpha, jnp.maximum(signal - jnp.sum(v * v, axis=-1), _MIN_VAR)


def standardize(y: jax.Array, mask: jax.Array) -> jax.Array:
  """Zero mean, unit sd over the masked-in entries, 0 elsewhere (sd 1 if fewer than 2 or equal)."""
  n = jnp.sum(mask)
  mu = jnp.sum(jnp.where(mask, y, 0.0)) / jnp.maximum(n, 1)
  var = jnp.sum(jnp.where(mask, (y - mu) ** 2, 0.0)) / jnp.maximum(n - 1, 1)
  sd = jnp.where(var > 1e-12, jnp.sqrt(jnp.where(var > 1e-12, var, 1.0)), 1.0)
  return jnp.where(mask, (y - mu) / sd, 0.0)


def fit(params: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array, prior: GPPrior,
        num_steps: int = 200, learning_rate: float = 0.1) -> tuple[GPParams, jax.Array]:
  """Maximizes log marginal likelihood + log prior with Adam, from ``params``.

  A step whose loss or gradient is not finite is skipped.

  Returns:
    The fitted parameters and their log marginal likelihood.
  """
  opt = optax.adam(learning_rate)
  loss_fn = lambda p: -(log_marginal_likelihood(p, x, y, mask) + prior.log_prob(p))

  def step(carry, _):
    p, s = carry
    loss, grad = jax.value_and_grad(loss_fn)(p)
    updates, s_new = opt.update(grad, s, p)
    p_new = prior.project(optax.apply_updates(p, updates))
    ok = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    return (keep(p_new, p), keep(s_new, s)), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=num_steps)
  return params, log_marginal_likelihood(params, x, y, mask)


# -------------------------------------------------------- the acquisition
def log_expected_improvement(mean: jax.Array, std: jax.Array, best: jax.Array) -> jax.Array:
  """log EI for minimization, accurate in float32 far into the tail (Ament et al., 2023).

  EI = std * h(z) with z = (best - mean) / std and h(z) = phi(z) + z Phi(z).
  """
  z = (best - mean) / std
  c1 = 0.5 * math.log(2.0 * math.pi)
  # Upper region: h(z) >= h(-1) ~ 0.08, no cancellation.
  zu = jnp.maximum(z, -1.0)
  upper = jnp.log(jnp.exp(-0.5 * zu * zu - c1) + zu * jax.scipy.special.ndtr(zu))
  # Middle: h(z) = phi(z) (1 - |z| Phi(z) / phi(z)), the ratio through erfcx.
  zm = jnp.clip(z, -10.0, -1.0)
  ratio = jnp.log(jax.scipy.special.erfcx(-zm / math.sqrt(2.0)) * -zm) + 0.5 * math.log(
      math.pi / 2.0)
  middle = -0.5 * zm * zm - c1 + jnp.log(-jnp.expm1(jnp.minimum(ratio, -1e-7)))
  # Far tail: the asymptotic series 1 - |z| R(|z|) = z^-2 (1 - 3 z^-2 + 15 z^-4 - ...).
  zt = jnp.minimum(z, -10.0)
  iz2 = 1.0 / (zt * zt)
  tail = -0.5 * zt * zt - c1 + jnp.log(iz2) + jnp.log1p(-3.0 * iz2 + 15.0 * iz2 * iz2)
  log_h = jnp.where(z > -1.0, upper, jnp.where(z > -10.0, middle, tail))
  return log_h + jnp.log(std)


def expected_improvement(mean: jax.Array, std: jax.Array, best: jax.Array) -> jax.Array:
  """EI for minimization (see `log_expected_improvement`)."""
  return jnp.exp(log_expected_improvement(mean, std, best))


def maximize(key: jax.Array, space: Space, score_fn, values: jax.Array, active: jax.Array,
             seed_values: jax.Array, seed_active: jax.Array, seed_ok: jax.Array,
             num_rounds: int = 3, num_parents: int = 16, scale: float = 0.1
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maximizes ``score_fn(values, active) -> f32[N]`` over the space, valid by construction.

  The best of the given candidates, then ``num_rounds`` of local search: the
  best ``num_parents`` so far and the seeds are perturbed with `sampling.perturb`
  (the step halving each round) and the best are kept.

  Args:
    key: PRNG key.
    space: the space.
    score_fn: jittable score of a batch, higher is better.
    values, active: f32[N, D], bool[N, D] valid candidates (e.g. from
      `sampling.sample`); each round perturbs about ``N // 4`` configurations.
    seed_values, seed_active: f32[S, D], bool[S, D] configurations always
      perturbed (e.g. the incumbent).
    seed_ok: bool[S]: the seed is a valid configuration (else a candidate
      replaces it).

  Returns:
    ``(values f32[D], active bool[D], score f32[])`` of the best candidate.
  """
  num = values.shape[0]
  num_parents = min(num_parents, num)
  num_seeds = seed_values.shape[0]
  seed_values = jnp.where(seed_ok[:, None], seed_values, values[:num_seeds])
  seed_active = jnp.where(seed_ok[:, None], seed_active, active[:num_seeds])
  reps = max(1, (num // 4) // (num_parents + num_seeds))
  s, top = jax.lax.top_k(score_fn(values, active), num_parents)
  u, a = values[top], active[top]

  # One rolled loop over the rounds: every copy of `perturb` is costly to compile.
  def round_(carry, step_scale):
    u, a, s, key = carry
    key, step_key = jax.random.split(key)
    pu = jnp.repeat(jnp.concatenate([u, seed_values]), reps, axis=0)
    pa = jnp.repeat(jnp.concatenate([a, seed_active]), reps, axis=0)
    nu, na = sampling.perturb(step_key, space, pu, pa, scale=step_scale)
    u, a = jnp.concatenate([u, nu]), jnp.concatenate([a, na])
    s, top = jax.lax.top_k(jnp.concatenate([s, score_fn(nu, na)]), num_parents)
    return (u[top], a[top], s, key), None

  scales = scale * 0.5 ** jnp.arange(num_rounds, dtype=jnp.float32)
  (u, a, s, _), _ = jax.lax.scan(round_, (u, a, s, key), scales)
  return u[0], a[0], s[0]  # top_k is sorted


# --------------------------------------------------------------- the tuner
@flax.struct.dataclass
class GPState:
  """GP-BO state: the history and the last hyperparameter fit (the next fit's start)."""
  history: History
  params: GPParams


def _data(space: Space, history: History):
  x = sampling.featurize(space, history.values, history.active)
  mask = history.valid & ~history.failed
  return x, standardize(history.objective, mask), mask


def gp_bo(space: Space, batch_size: int = 1, history_size: int = 64,
          num_initial: int | None = None, num_candidates: int = 1024, fit_steps: int = 200,
          learning_rate: float = 0.1, num_rounds: int = 3, fantasy: str = "believer",
          prior: GPPrior | None = None) -> Tuner:
  """GP Bayesian optimization (Matérn-5/2 ARD, log-EI) over a structured space.

  Args:
    space: the space.
    batch_size: proposals per ask; a batch is made diverse by fantasizing each
      pending point before choosing the next.
    history_size: observations the GP sees (the last ``history_size``; the
      exact GP costs O(history_size^3) per ask and per fit step).
    num_initial: observations before the GP is used, proposed uniformly at
      random (default ``max(5, 2 * batch_size)``).
    num_candidates: random candidates per proposal, before local search.
    fit_steps, learning_rate: Adam steps and rate of each hyperparameter refit.
    num_rounds: rounds of local search after the random candidates.
    fantasy: value a pending point is assumed to take: ``"believer"`` the
      posterior mean (kriging believer), ``"liar"`` the incumbent (constant liar).
    prior: hyperparameter priors and bounds (default `GPPrior` for the space).

  Returns:
    The `Tuner`, named ``"gp_bo"``.

  Example:
    >>> tuner = gp_bo(space, batch_size=4)  # doctest: +SKIP
    >>> state, trace = jax.jit(lambda k: run_tuning(k, tuner, fn, 10))(key)  # doctest: +SKIP
  """
  if fantasy not in ("believer", "liar"):
    raise ValueError(f"fantasy must be 'believer' or 'liar', got {fantasy!r}")
  num_initial = max(5, 2 * batch_size) if num_initial is None else num_initial
  prior = GPPrior(sampling.feature_size(space)) if prior is None else prior
  cap, feats = history_size, prior.num_features

  def init(key):
    del key
    return GPState(history_init(space, history_size), prior.init())

  def propose(key, state, values, active):
    """A batch by log-EI; ``values f32[B, N, D]``: each proposal's random candidates."""
    h = state.history
    x, y, mask = _data(space, h)
    # Slots for the pending points of the batch, filled with fantasies as chosen.
    x = jnp.concatenate([x, jnp.zeros((batch_size, feats), jnp.float32)])
    y = jnp.concatenate([y, jnp.zeros((batch_size,), jnp.float32)])
    mask = jnp.concatenate([mask, jnp.zeros((batch_size,), bool)])
    has_best = jnp.isfinite(h.best_objective)[None]

    def choose(carry, cand):
      x, y, mask, j, key = carry
      key, search_key = jax.random.split(key)
      post = posterior(state.params, x, y, mask)
      best = jnp.min(jnp.where(mask, y, jnp.inf))
      best = jnp.where(jnp.isfinite(best), best, 0.0)  # no data: the prior mean

      def score(u, a):
        mean, var = predict(post, sampling.featurize(space, u, a))
        log_ei = log_expected_improvement(mean, jnp.sqrt(var), best)
        return jnp.where(jnp.isnan(log_ei), -jnp.inf, log_ei)  # a failed factorization

      # The incumbent seeds the local search once there is one.
      u, a, _ = maximize(search_key, space, score, cand[0], cand[1], h.best_values[None],
                         h.best_active[None], has_best, num_rounds)
      f = sampling.featurize(space, u, a)
      lie = predict(post, f[None])[0][0] if fantasy == "believer" else best
      slot = cap + j
      carry = (x.at[slot].set(f), y.at[slot].set(lie), mask.at[slot].set(True), j + 1, key)
      return carry, (u, a)

    carry = (x, y, mask, jnp.zeros((), jnp.int32), key)
    _, (u, a) = jax.lax.scan(choose, carry, (values, active))
    return Points(u, a)

  def ask(key, state):
    sample_key, search_key = jax.random.split(key)
    # One draw serves both branches: its first candidates are the initial design.
    values, active = sampling.sample(sample_key, space, batch_size * num_candidates)
    values = values.reshape(batch_size, num_candidates, -1)
    active = active.reshape(batch_size, num_candidates, -1)
    points = jax.lax.cond(state.history.count < num_initial,
                          lambda: Points(values[:, 0], active[:, 0]),
                          lambda: propose(search_key, state, values, active))
    return points, state

  def tell(key, state, points, evaluation):
    del key  # the fit is deterministic
    history, metrics = history_add(state.history, points, evaluation)
    x, y, mask = _data(space, history)
    params, lml = fit(state.params, x, y, mask, prior, fit_steps, learning_rate)
    return state.replace(history=history, params=params), {**metrics, "log_likelihood": lml}

  return Tuner(init, ask, tell, space, batch_size, "gp_bo")
