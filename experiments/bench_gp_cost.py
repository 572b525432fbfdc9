"""Cost per trial (ask + tell) of GP-BO beside Optuna's GPSampler and TPESampler, in one run.

For each history size n, every tuner is given the same n - 1 evaluated
configurations of the space, then timed over ``--trials`` further ask + tell
rounds (their mean, so GP-BO's refits every few trials past 100 observations
are amortized as they are in a study). GP-BO's history holds n (a study with a
budget of n). Objective: YAHPO rbv2_xgboost's surrogate on one dataset when the
data folder is there, else the synthetic family on the same space file.

  METATUNE_DATA_DIR=../shared/data python experiments/bench_gp_cost.py

Writes paper/tables/gp_cost.md. Needs optuna (and torch for the GPSampler).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metatune.evaluation.peers import DefineByRun, make_sampler  # noqa: E402
from metatune.space import io, sampling  # noqa: E402
from metatune.tuners import Evaluation, Points, gp_bo  # noqa: E402


def objective_fn(data_dir):
  """``(space, f(values f32[N, D], active bool[N, D]) -> f32[N])`` and a description."""
  if data_dir:
    from metatune.tasks import registry  # pylint: disable=import-outside-toplevel
    fam = registry.make_family(registry.load_family_config(
        REPO / "configs/families/yahpo_rbv2_xgboost.yaml"), data_dir)
    task = fam.task_params(0)
    fn = jax.jit(lambda u, a: jnp.nan_to_num(fam.clean(task, Points(u, a)), nan=0.0))
    return fam.space, fn, f"YAHPO rbv2_xgboost ({fam.all_task_ids()[0]}), {fam.space.num_params} " \
        "parameters, booster-conditional"
  from metatune.tasks import SyntheticFamily  # pylint: disable=import-outside-toplevel
  space = io.load(REPO / "configs/spaces/nn_tuning.yaml")
  fam = SyntheticFamily(space)
  task = fam.task_params(0)
  fn = jax.jit(lambda u, a: jnp.nan_to_num(fam.clean(task, Points(u, a)), nan=1e3))
  return space, fn, f"synthetic task on configs/spaces/nn_tuning.yaml ({space.num_params} params)"


def time_gp_bo(space, f, u, a, y, n, trials, prior=None):
  if prior is None:
    tuner = gp_bo(space, budget=n + trials)
  else:
    from metatune.meta.tuner import prior_tuner  # pylint: disable=import-outside-toplevel
    tuner = prior_tuner(space, path=prior, budget=n + trials)
  ask, tell = jax.jit(tuner.ask), jax.jit(tuner.tell)
  state = tuner.init(jax.random.key(0))
  state, _ = tell(jax.random.key(1), state, Points(u[:n - 1], a[:n - 1]),
                  Evaluation.of(y[:n - 1]))
  # Compile the one-trial ask and tell outside the timing.
  p, _ = ask(jax.random.key(2), state)
  jax.block_until_ready(tell(jax.random.key(3), state, p, Evaluation.of(f(p.values, p.active))))
  start = time.perf_counter()
  for i in range(trials):
    p, state = ask(jax.random.key(10 + i), state)
    state, _ = tell(jax.random.key(100 + i), state, p, Evaluation.of(f(p.values, p.active)))
    jax.block_until_ready(state)
  return (time.perf_counter() - start) / trials


def time_optuna(kind, space, f, u, a, y, n, trials):
  import optuna  # pylint: disable=import-outside-toplevel
  from optuna.trial import create_trial  # pylint: disable=import-outside-toplevel
  dbr = DefineByRun(space)
  study = optuna.create_study(sampler=make_sampler(kind, 0, {}), direction="minimize")
  configs = space.decode_batch(np.asarray(u[:n - 1]), np.asarray(a[:n - 1]))
  for cfg, v in zip(configs, np.asarray(y[:n - 1]).tolist()):
    params, dists = dbr.params_of(cfg)
    study.add_trial(create_trial(params=params, distributions=dists, value=float(v)))
  start = time.perf_counter()
  for _ in range(trials):
    trial = study.ask()
    cfg = dbr.suggest(trial)
    try:
      uu, aa = space.encode(cfg)
      study.tell(trial, float(f(uu[None], aa[None])[0]))
    except Exception:  # pylint: disable=broad-except
      study.tell(trial, state=optuna.trial.TrialState.FAIL)
  return (time.perf_counter() - start) / trials


def optuna_version() -> str:
  try:
    import optuna  # pylint: disable=import-outside-toplevel
  except ImportError:
    return "not installed"
  return optuna.__version__


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=os.environ.get("METATUNE_DATA_DIR"))
  parser.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 500])
  parser.add_argument("--trials", type=int, default=10)
  parser.add_argument("--tpe-sizes", type=int, nargs="*", default=[1000],
                      help="extra history sizes for TPE alone")
  parser.add_argument("--no-gp-sampler", action="store_true")
  parser.add_argument("--prior", default=None,
                      help="a prior folder (metatune meta-train): its hybrid tuner is timed "
                      "beside TPE at --prior-sizes")
  parser.add_argument("--prior-sizes", type=int, nargs="*", default=[100, 1000])
  parser.add_argument("--prior-trials", type=int, default=50,
                      help="trials timed for the prior's rows (and TPE beside it): a multiple "
                      "of its refit period past 256 observations (25), so refits are amortized")
  parser.add_argument("--repeats", type=int, default=3,
                      help="the prior's rows: timings of the prior and TPE, alternated, this "
                      "many times; the table gives the medians and the ratios' range")
  parser.add_argument("--out", default=str(REPO / "paper/tables/gp_cost.md"))
  args = parser.parse_args(argv)
  start = time.perf_counter()
  space, f, what = objective_fn(args.data_dir)
  biggest = max(args.sizes + args.tpe_sizes + (args.prior_sizes if args.prior else []))
  u, a = sampling.sample(jax.random.key(0), space, biggest)
  y = f(u, a)
  rows = []
  for n in args.sizes:
    row = {"n": n, "gp_bo": time_gp_bo(space, f, u, a, y, n, args.trials)}
    row["tpe"] = time_optuna("optuna_tpe", space, f, u, a, y, n, args.trials)
    if not args.no_gp_sampler:
      row["optuna_gp"] = time_optuna("optuna_gp", space, f, u, a, y, n,
                                     max(2, args.trials // 2))
    rows.append(row)
    print(row, flush=True)
  for n in args.tpe_sizes:
    rows.append({"n": n, "tpe": time_optuna("optuna_tpe", space, f, u, a, y, n, args.trials)})
    print(rows[-1], flush=True)
  prior_rows = []
  for n in args.prior_sizes if args.prior else []:
    runs = []
    for _ in range(max(1, args.repeats)):   # alternated: load drifts hit both alike
      runs.append((time_gp_bo(space, f, u, a, y, n, args.prior_trials, args.prior),
                   time_optuna("optuna_tpe", space, f, u, a, y, n, args.prior_trials)))
    prior_t, tpe_t = np.asarray(runs).T
    ratios = prior_t / tpe_t
    prior_rows.append({"n": n, "prior": float(np.median(prior_t)),
                       "tpe": float(np.median(tpe_t)), "ratio": float(np.median(ratios)),
                       "low": float(ratios.min()), "high": float(ratios.max())})
    print(prior_rows[-1], flush=True)
  load = os.getloadavg()[0]
  text = [
      "# GP-BO cost per trial beside Optuna's samplers", "",
      f"Produced by `{' '.join(['python', 'experiments/bench_gp_cost.py'] + (argv or sys.argv[1:]))}` "
      f"on {time.strftime('%Y-%m-%d')} in {(time.perf_counter() - start) / 60:.1f} min "
      f"({platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, 1-minute load "
      f"average at the end {load:.1f}; jax {jax.__version__}, optuna {optuna_version()}).", "",
      f"Space and objective: {what}. Each tuner gets the same n - 1 evaluated configurations, "
      f"then ask + tell is timed over {args.trials} more trials (the GPSampler over "
      f"{max(2, args.trials // 2)}), mean seconds per trial; GP-BO's history holds the whole "
      "study and its hyperparameters are refitted (warm-started) every trial up to 100 "
      "observations, every 5th after.", "",
      "| history n | GP-BO (s) | Optuna GPSampler (s) | Optuna TPE (s) | GP-BO / GPSampler | "
      "GP-BO / TPE |", "|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    g, o, t = r.get("gp_bo"), r.get("optuna_gp"), r.get("tpe")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    ratio = lambda x, y: "-" if x is None or y is None else f"{x / y:.2f}"
    text.append(f"| {r['n']} | {fmt(g)} | {fmt(o)} | {fmt(t)} | {ratio(g, o)} | {ratio(g, t)} |")
  if prior_rows:
    text += ["", f"The prior's hybrid tuner ({args.prior}; its models see the last "
             f"min(budget, 256) observations; refits every 5th trial, every 25th once 256 are "
             f"seen) beside TPE, timed over {args.prior_trials} trials each, {args.repeats} "
             "times alternated in the same run (medians; the ratio's median and range over "
             "the repeats):", "",
             "| history n | prior (s) | Optuna TPE (s) | prior / TPE | range |",
             "|---:|---:|---:|---:|---:|"]
    text += [f"| {r['n']} | {r['prior']:.3f} | {r['tpe']:.3f} | {r['ratio']:.2f} | "
             f"{r['low']:.2f} to {r['high']:.2f} |" for r in prior_rows]
  text = "\n".join(text) + "\n"
  pathlib.Path(args.out).write_text(text)
  print(text)


if __name__ == "__main__":
  main()
