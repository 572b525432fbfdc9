"""The meta-training driver: iterations with a progress bar, checkpoints, exact resume, a report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from metatune import __version__
from metatune.tasks.regret import evaluate_tuners, summary_rows
from metatune.meta import compat
from metatune.meta import prior as prior_io
from metatune.meta import transfer
from metatune.meta.errors import PriorError
from metatune.meta.ppo import MetaTrainConfig, MetaTrainer, TrainState
from metatune.meta.tuner import policy_tuner
from metatune.tuners import quasi_random, random_search

SETTINGS = "meta_train.json"
METRICS = "metrics.jsonl"


def _settings_doc(config: MetaTrainConfig, family) -> dict:
  return {"config": dataclasses.asdict(config), "family": getattr(family, "name", "?"),
          "space_signature": family.space.signature}


def _state_tree(state: TrainState) -> dict:
  return {"params": state.params, "opt_state": state.opt_state,
          "key": jax.random.key_data(state.key), "update": state.update}


def _from_tree(tree: dict) -> TrainState:
  # orbax restores arrays committed to a device, while a fresh state's are not; `jit` keys its
  # cache on that, so the first iteration after a resume compiled the whole step again (~20 s
  # on 2 cores). Host copies put back uncommitted, bit for bit.
  tree = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)
  return TrainState(tree["params"], tree["opt_state"], jax.random.wrap_key_data(tree["key"]),
                    tree["update"])


_CHECKPOINT_NAME = re.compile(r"update_(\d+)")


def _complete_checkpoints(folder: pathlib.Path,
                          log: Callable[[str], Any]) -> list[pathlib.Path]:
  """The finished checkpoints in ``folder/checkpoints``, oldest first.

  Orbax writes a checkpoint into ``update_N.orbax-checkpoint-tmp`` and renames it into place
  when it is complete, so a run killed during a save leaves that folder behind. It is
  removed here (it can never be resumed from, and the next save of that iteration needs the
  name), as is an ``update_N`` folder without orbax's commit marker.
  """
  ck = folder / "checkpoints"
  if not ck.is_dir():
    return []
  done = []
  for path in sorted(ck.iterdir()):
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    # Orbax 0.12 writes commit_success.txt before the rename; older versions wrote only the
    # metadata file, and their final folders are complete too.
    if match and path.is_dir() and ((path / "commit_success.txt").exists() or
                                    (path / "_CHECKPOINT_METADATA").exists()):
      done.append((int(match.group(1)), path))
    elif path.name.startswith("update_"):
      log(f"removing unfinished checkpoint {path} (a save that was interrupted)")
      if path.is_dir():
        shutil.rmtree(path)
      else:
        path.unlink()
  return [path for _, path in sorted(done)]


def _restore_latest(folder: pathlib.Path, fresh: TrainState,
                    log: Callable[[str], Any]) -> TrainState:
  """The state of the newest readable checkpoint, or ``fresh`` when there is none.

  Raises:
    PriorError: there are checkpoints and none of them can be read.
  """
  checkpoints = _complete_checkpoints(folder, log)
  errors = []
  for path in reversed(checkpoints):
    try:
      state = _from_tree(prior_io.restore_tree(path, _state_tree(fresh)))
    except Exception as e:  # pylint: disable=broad-except
      # A finished checkpoint damaged afterwards (a disk, a partial copy): an older one
      # resumes the same run exactly, only later.
      first_line = (str(e).splitlines() or [""])[0]
      errors.append(f"{path.name}: {type(e).__name__}: {first_line}")
      log(f"cannot read checkpoint {path}; trying an earlier one ({errors[-1]})")
      continue
    log(f"resuming from {path} (iteration {int(state.update)})")
    return state
  if errors:
    raise PriorError(f"no checkpoint can be read ({'; '.join(errors)}); delete the folder to "
                     "start again", str(folder / "checkpoints"))
  return fresh


def _write_atomic(path: pathlib.Path, text: str) -> None:
  # A run killed mid-write must not leave half a JSON file that every rerun then refuses.
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def meta_train(family, config: MetaTrainConfig, out: str | os.PathLike, *,
               checkpoint_every: int = 25, stop_after: int | None = None,
               progress: bool = True, evaluate: bool = True, card_extra: dict | None = None,
               transfer_design: int = 0,
               log: Callable[[str], Any] = print) -> dict:
  """Meta-trains a policy on ``family``; resumes from ``out``'s last checkpoint if there is one.

  Args:
    family: a jittable family (see `MetaTrainer`).
    config: the settings; a resumed run must have the same ones.
    out: the prior folder.
    checkpoint_every: iterations between checkpoints (the last one is always saved).
    stop_after: stop after this many iterations of this call (to test resume).
    progress: show a progress bar with the return and the regret.
    evaluate: after training, compare with random and quasi-random on held-out tasks.
    card_extra: more fields for the card (e.g. the family config).
    transfer_design: configurations of the design evaluated on the training tasks for the
      hybrid prior (`metatune.meta.transfer`); 0 for none (``metatune meta-train``
      uses 512).
    log: where messages go.

  Returns:
    The card (a dict), or ``{"stopped": update}`` when ``stop_after`` ended it early.

  Raises:
    PriorError: (a ``ValueError``) ``out`` holds a run with other settings, or checkpoints
      none of which can be read.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  doc = _settings_doc(config, family)
  settings_path = out / SETTINGS
  if settings_path.exists():
    try:
      old = json.loads(settings_path.read_text())
    except json.JSONDecodeError as e:
      raise PriorError(f"not valid JSON ({e.msg}); use another --out or delete it",
                       f"{settings_path}:{e.lineno}") from None
    if old != json.loads(json.dumps(doc, default=str)):
      raise PriorError("this folder holds a meta-training run with other settings; use "
                       "another --out or delete it", str(settings_path))
  else:
    _write_atomic(settings_path, json.dumps(doc, indent=2, default=str) + "\n")
  t0 = time.perf_counter()
  trainer = MetaTrainer.cached(family, config)
  state = _restore_latest(out, trainer.init(), log)
  start = int(state.update)
  metrics_path = out / METRICS
  lines = metrics_path.read_text().splitlines()[:start] if metrics_path.exists() else []
  metrics_path.write_text("".join(line + "\n" for line in lines))
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    # The first iteration of a process compiles the whole jitted step (a minute or more on
    # 2 cores) with the bar at its first value: say so, or it looks stuck.
    first = "meta-train: compiling the PPO iteration (first iteration)..."
    bar = tqdm(total=config.num_updates, initial=start, unit="it", file=sys.stderr,
               desc=first if start < config.num_updates else "meta-train", dynamic_ncols=True)
  compile_s = None
  ran = 0
  with metrics_path.open("a") as fh:
    while int(state.update) < config.num_updates:
      t = time.perf_counter()
      state, m = trainer.step(state)
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      elapsed = time.perf_counter() - t
      if compile_s is None:
        compile_s = elapsed
      m.update(update=int(state.update), seconds=elapsed)
      fh.write(json.dumps(m) + "\n")
      fh.flush()
      ran += 1
      if bar is not None:
        if ran == 1:
          bar.set_description(f"meta-train (first iteration {elapsed:.0f}s incl. compile)",
                              refresh=False)
        bar.update(1)
        bar.set_postfix(ret=f"{m['episode_return']:.3f}", regret=f"{m['final_regret']:.3f}")
      u = int(state.update)
      stop = stop_after is not None and ran >= stop_after and u < config.num_updates
      if u % checkpoint_every == 0 or u == config.num_updates or stop:
        prior_io.save_tree(out / "checkpoints" / f"update_{u:06d}", _state_tree(state))
      if stop:
        if bar is not None:
          bar.close()
        return {"stopped": u}
  if bar is not None:
    bar.close()
  train_seconds = time.perf_counter() - t0
  history = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  card = {
      "family": getattr(family, "name", "?"), "space": family.space.name,
      "space_signature": family.space.signature,
      compat.DESCRIPTION: compat.describe_space(family.space),
      "tasks_seen": [int(i) for i in trainer.indices], "num_trials": config.num_trials,
      "meta_train": dataclasses.asdict(config),
      "training": {"iterations": config.num_updates, "seconds_this_run": train_seconds,
                   "first_iteration_seconds_incl_compile": compile_s,
                   "final": history[-1] if history else None},
      "versions": {"metatune": __version__, "jax": jax.__version__,
                   "python": platform.python_version()},
  }
  card.update(card_extra or {})
  source = getattr(family, "source_dir", None)
  if source is not None:  # a surrogate environment: the prior keeps the surrogate it learned in
    card["surrogate"] = _copy_surrogate(pathlib.Path(source), out / "surrogate")
  if transfer_design:
    # The hybrid prior's design, profile and portfolio over the same training tasks.
    t1 = time.perf_counter()
    data = transfer.from_family(family, trainer.indices, transfer_design, config.seed)
    transfer.save(out, data)
    card["transfer"] = {"file": transfer.FILE, "design": int(data.values.shape[0]),
                        "tasks": int(len(trainer.indices)),
                        "portfolio": int(data.portfolio.shape[0]),
                        "seconds": time.perf_counter() - t1}
  if evaluate:
    card["heldout"] = heldout_table(family, state.params, trainer.graphdef, config)
  card = prior_io.save_prior(out, state.params, config.policy, card)
  write_report(out, history, card)
  return card


def _copy_surrogate(source: pathlib.Path, dest: pathlib.Path) -> dict:
  """Copies a surrogate folder into the prior; its files' SHA-256 (one digest) goes on the card."""
  digest = hashlib.sha256()
  for f in sorted(p for p in source.rglob("*") if p.is_file()):
    digest.update(str(f.relative_to(source)).encode() + b"\0" + f.read_bytes())
  shutil.copytree(source, dest, dirs_exist_ok=True)
  return {"source": str(source), "folder": dest.name, "sha256": digest.hexdigest()[:16]}


def heldout_table(family, params, graphdef, config: MetaTrainConfig, split: str = "heldout_dataset",
                  seed: int = 0) -> dict:
  """Regret of the policy, random and quasi-random search on the held-out tasks."""
  indices = family.task_indices(split)
  if len(indices) == 0:
    return {"split": split, "rows": []}
  space = family.space
  tuners = [policy_tuner(space, graphdef, params, config.policy, config.num_trials),
            random_search(space), quasi_random(space)]
  result = evaluate_tuners(family, indices, tuners, config.num_trials, seed=seed)
  rows = summary_rows(result, checkpoints=sorted({5, 10, config.num_trials}))
  return {"split": split, "num_tasks": len(indices), "num_trials": config.num_trials,
          "seed": seed, "rows": rows,
          "regret": {k: v["regret"].tolist() for k, v in result["tuners"].items()}}


def table_markdown(heldout: dict) -> str:
  rows = heldout.get("rows", [])
  if not rows:
    return "(no held-out tasks)\n"
  cols = [k for k in rows[0] if k.startswith("regret@")]
  lines = ["| tuner | " + " | ".join(cols) + " | failed trials |",
           "|---|" + "---:|" * len(cols) + "---:|"]
  for r in rows:
    cells = " | ".join(f"{r[c][0]:.3f} ± {r[c][1]:.3f}" for c in cols)
    lines.append(f"| {r['tuner']} | {cells} | {r['failed_trials']} |")
  return "\n".join(lines) + "\n"


def write_report(out: pathlib.Path, history: list[dict], card: dict) -> None:
  """report.png (return and regret per iteration) and report.md (the held-out table)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  it = np.arange(1, len(history) + 1)
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
  for ax, key, label in zip(axes, ("episode_return", "final_regret", "entropy"),
                            ("return per study", f"regret@{card['num_trials']} (train tasks)",
                             "entropy per parameter")):
    ax.plot(it, [h[key] for h in history])
    ax.set_xlabel("iteration")
    ax.set_title(label)
  fig.tight_layout()
  fig.savefig(out / "report.png", dpi=100)
  plt.close(fig)
  held = card.get("heldout", {})
  text = (f"# Meta-training report: {card['family']}\n\n"
          f"{card['training']['iterations']} iterations, {card['num_trials']} trials per study, "
          f"space {card['space']} ({card['space_signature']}), policy {card['policy_hash']}.\n\n"
          f"Held-out tasks ({held.get('split')}, {held.get('num_tasks', 0)} tasks): normalized "
          "regret of the best so far, mean ± s.e. over tasks.\n\n" + table_markdown(held))
  (out / "report.md").write_text(text)
