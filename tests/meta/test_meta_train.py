"""Meta-training: one jitted iteration, exact resume, config errors, the prior folder."""

import json
import os

import jax
import numpy as np
import pytest

from metatune.meta import prior as prior_io
from metatune.meta.config import meta_config
from metatune.meta.ppo import MetaTrainConfig, MetaTrainer
from metatune.meta.train import meta_train
from metatune.networks import policy as pol
from metatune.space import SpaceError, yamlio
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space

TINY = dict(num_envs=8, num_trials=4, num_updates=4, num_minibatches=2, update_epochs=1,
            reference_samples=256, reference_refine=2)


@pytest.fixture(scope="module")
def family():
  return SyntheticFamily(default_space(), SyntheticConfig(seed=0, num_tasks=20))


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Exact resume after a kill between iterations; the default run covers kills during saves
# (test_killed_during_saves_resumes_to_the_same_prior) and the unfinished checkpoint.
@pytest.mark.slow
def test_killed_halfway_resume_matches_uninterrupted_run(family, tmp_path):
  config = MetaTrainConfig(**TINY, seed=3)
  full = meta_train(family, config, tmp_path / "full", checkpoint_every=1, progress=False,
                    evaluate=False, log=lambda s: None)
  stopped = meta_train(family, config, tmp_path / "cut", checkpoint_every=100, progress=False,
                       evaluate=False, stop_after=2, log=lambda s: None)
  assert stopped == {"stopped": 2}
  messages = []
  resumed = meta_train(family, config, tmp_path / "cut", checkpoint_every=100, progress=False,
                       evaluate=False, log=messages.append)
  assert any("resuming" in m and "iteration 2" in m for m in messages)
  assert resumed["policy_hash"] == full["policy_hash"]
  # The resumed state did not make the iteration compile again (restored arrays are committed
  # to a device, fresh ones are not, and jit keys its cache on that).
  step = MetaTrainer.cached(family, config).step
  assert step._cache_size() == 1  # pylint: disable=protected-access
  _, p_full, _, _ = prior_io.load_prior(tmp_path / "full")
  _, p_cut, _, card = prior_io.load_prior(tmp_path / "cut")
  assert _leaves_equal(p_full, p_cut)
  lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["update"] for l in lines] == [1, 2, 3, 4]
  assert card["space_signature"] == default_space().signature
  assert (tmp_path / "cut" / "report.png").stat().st_size > 1000
  # A different setting in the same folder is refused, not silently mixed.
  with pytest.raises(ValueError, match="other settings"):
    meta_train(family, MetaTrainConfig(**TINY, seed=4), tmp_path / "cut", progress=False,
               evaluate=False, log=lambda s: None)


def _quiet_train(family, config, out, **kw):
  return meta_train(family, config, out, progress=False, evaluate=False,
                    **{"log": lambda s: None, **kw})


def test_resume_ignores_an_unfinished_checkpoint(family, tmp_path, monkeypatch):
  # A run killed while orbax wrote update 3 leaves `update_000003.orbax-checkpoint-tmp/`; the
  # rerun must resume from update 2 (not die parsing the folder name) and end bit for bit like
  # a run never interrupted. The kill is an exception at orbax's final rename here (in
  # process, so the compiled iteration is shared); test_killed_during_saves kills for real.
  config = MetaTrainConfig(**TINY, seed=3)
  full = _quiet_train(family, config, tmp_path / "full", checkpoint_every=100)
  cut = tmp_path / "cut"
  assert _quiet_train(family, config, cut, checkpoint_every=1, stop_after=2) == {"stopped": 2}
  tmp = cut / "checkpoints" / "update_000003.orbax-checkpoint-tmp"
  real_rename = os.rename

  def dying_rename(src, dst):
    if str(src).endswith("orbax-checkpoint-tmp"):
      raise KeyboardInterrupt("killed before the rename")
    real_rename(src, dst)

  monkeypatch.setattr(os, "rename", dying_rename)
  with pytest.raises(KeyboardInterrupt):
    _quiet_train(family, config, cut, checkpoint_every=1)
  monkeypatch.setattr(os, "rename", real_rename)
  assert (tmp / "commit_success.txt").exists()  # written in full, never renamed into place
  messages = []
  resumed = _quiet_train(family, config, cut, checkpoint_every=1, log=messages.append)
  assert any("iteration 2" in m for m in messages), messages
  assert any("unfinished" in m and tmp.name in m for m in messages), messages
  assert not tmp.exists()
  assert resumed["policy_hash"] == full["policy_hash"]
  lines = (cut / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["update"] for l in lines] == [1, 2, 3, 4]



_KILLED_RUN = """
import os, signal, sys
point, _, target = os.environ["KILL_AT"].partition(":")
real_mkdir, real_rename, real_replace = os.mkdir, os.rename, os.replace

def die(where):
  if where == point:
    os.kill(os.getpid(), signal.SIGKILL)

def mkdir(path, *args, **kwargs):
  real_mkdir(path, *args, **kwargs)
  if os.path.basename(str(path)) == target + ".orbax-checkpoint-tmp":
    die("mkdir")  # orbax has just made its folder: nothing written yet

def rename(src, dst, *args, **kwargs):
  hit = os.path.basename(str(dst)) == target
  if hit:
    die("rename")  # every file written, the folder not yet renamed into place
  real_rename(src, dst, *args, **kwargs)
  if hit:
    die("renamed")  # complete, and the run dies before going on

def replace(src, dst, *args, **kwargs):
  if os.path.basename(str(dst)) == target:
    die("replace")
  real_replace(src, dst, *args, **kwargs)

os.mkdir, os.rename, os.replace = mkdir, rename, replace
from metatune.meta.ppo import MetaTrainConfig
from metatune.meta.train import meta_train
from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space
family = SyntheticFamily(default_space(), SyntheticConfig(seed=0, num_tasks=20))
config = MetaTrainConfig(**%r, seed=3)
card = meta_train(family, config, sys.argv[1], checkpoint_every=1, progress=False,
                  evaluate=False, log=lambda s: None)
print("HASH", card["policy_hash"])
"""


@pytest.mark.slow
def test_killed_during_saves_resumes_to_the_same_prior(family, tmp_path):
  # SIGKILL at five points of the saves (orbax's folder just made; written but not renamed;
  # renamed, the last checkpoint; the prior's policy; its card), each rerun resuming the
  # last: the end is bit for bit the uninterrupted run.
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  config = MetaTrainConfig(**TINY, seed=3)
  full = _quiet_train(family, config, tmp_path / "full", checkpoint_every=100)
  cut = tmp_path / "cut"
  # One compile for the three runs that train: a persistent cache (the same executable, so
  # the same bits) spares the 2nd and 3rd a compile each.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  kills = ["mkdir:update_000002", "rename:update_000003", "renamed:update_000004",
           "rename:policy", "replace:card.json", "none:"]
  for kill in kills:
    run = subprocess.run([sys.executable, "-c", _KILLED_RUN % TINY, str(cut)],
                         env=dict(env, KILL_AT=kill), capture_output=True, text=True,
                         timeout=900, check=False)
    if kill != "none:":
      assert run.returncode == -9, (kill, run.returncode, run.stderr[-2000:])
  assert run.returncode == 0, run.stderr[-2000:]
  assert f"HASH {full['policy_hash']}" in run.stdout
  _, p_full, _, _ = prior_io.load_prior(tmp_path / "full")
  _, p_cut, _, _ = prior_io.load_prior(cut)
  assert _leaves_equal(p_full, p_cut)

  def strip(path):  # the metrics without their timings
    return [{k: v for k, v in json.loads(l).items() if k != "seconds"}
            for l in path.read_text().splitlines()]

  assert strip(cut / "metrics.jsonl") == strip(tmp_path / "full" / "metrics.jsonl")
  assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == [
      f"update_{u:06d}" for u in range(1, 5)]


def test_config_errors_name_file_and_line(tmp_path):
  path = tmp_path / "fam.yaml"
  path.write_text("family: synthetic\nmeta_train:\n  num_envs: 8\n  lr_rate: 0.1\n")
  node = dict(yamlio.load(path.read_text(), str(path)).items())["meta_train"]
  with pytest.raises(SpaceError, match=r"fam.yaml:4.*lr_rate.*did you mean"):
    meta_config(node)
  path.write_text("family: synthetic\nmeta_train:\n  num_envs: eight\n")
  node = dict(yamlio.load(path.read_text(), str(path)).items())["meta_train"]
  with pytest.raises(SpaceError, match=r"fam.yaml:3.*num_envs must be int"):
    meta_config(node)
  path.write_text("family: synthetic\nmeta_train:\n  num_envs: 6\n  num_minibatches: 4\n")
  node = dict(yamlio.load(path.read_text(), str(path)).items())["meta_train"]
  with pytest.raises(SpaceError, match="multiple of num_minibatches"):
    meta_config(node)
  path.write_text("family: synthetic\nmeta_train:\n  reward: area\n  policy: {hidden: 16}\n")
  node = dict(yamlio.load(path.read_text(), str(path)).items())["meta_train"]
  with pytest.raises(SpaceError, match=r"fam.yaml:3.*reward must be one of .*got 'area'"):
    meta_config(node)


def test_settings_override_the_file_and_the_card_says_who_set_what(tmp_path):
  from metatune.meta.config import apply_settings, choices  # pylint: disable=import-outside-toplevel
  path = tmp_path / "fam.yaml"
  path.write_text("family: synthetic\nmeta_train:\n  reward: log_regret\n  ent_end: 0.002\n")
  node = dict(yamlio.load(path.read_text(), str(path)).items())["meta_train"]
  settings = ["reward=regret", "policy.structure=false"]
  node = apply_settings(node, settings)
  config = meta_config(node)
  assert config.reward == "regret" and config.ent_end == 0.002
  assert config.policy == pol.PolicyConfig(structure=False)
  got = choices(node, config, settings)["settings"]
  assert got["reward"] == {"value": "regret", "default": "regret", "set_by": "--set"}
  assert got["ent_end"]["set_by"] == "family config" and got["ent_start"]["set_by"] == "default"
  assert got["policy.structure"] == {"value": False, "default": True, "set_by": "--set"}
  # No meta_train section at all: the settings make one.
  assert meta_config(apply_settings(None, ["num_envs=8", "num_minibatches=2"])).num_envs == 8
  for bad, message in (("rewards=regret", r"--set rewards=regret: unknown key 'rewards'.*did you "
                        "mean 'reward'"),
                       ("reward=regre", r"--set reward=regre: .*one of .*did you mean 'regret'"),
                       ("policy.structure=3", r"--set policy.structure=3: .*must be bool"),
                       ("reward", "expected KEY=VALUE")):
    with pytest.raises(SpaceError, match=message):
      meta_config(apply_settings(None, [bad]))


def test_cli_reports_a_bad_setting_with_file_and_line(tmp_path, capsys):
  from metatune import cli  # pylint: disable=import-outside-toplevel
  path = tmp_path / "fam.yaml"
  path.write_text("family: synthetic\noptions: {num_tasks: 20}\nmeta_train:\n  num_env: 8\n")
  assert cli.main(["meta-train", str(path), "--out", str(tmp_path / "p"), "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "fam.yaml:4" in err and "num_env" in err and "num_envs" in err
  assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_cli_meta_train_writes_a_prior(tmp_path, capsys):
  from metatune import cli  # pylint: disable=import-outside-toplevel
  path = tmp_path / "fam.yaml"
  settings = ", ".join(f"{k}: {v}" for k, v in TINY.items())
  path.write_text(f"family: synthetic\noptions: {{num_tasks: 20}}\nmeta_train: {{{settings}}}\n")
  assert cli.main(["meta-train", str(path), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "prior written" in out and "| policy |" in out and "| random |" in out
  card = json.loads((tmp_path / "p" / "card.json").read_text())
  assert card["heldout"]["num_tasks"] == 3 and card["family_config"]["family"] == "synthetic"


def test_scalarizations():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from metatune.meta.ppo import scalarize  # pylint: disable=import-outside-toplevel
  r, s = jnp.asarray([0.2, 0.8]), jnp.asarray([0.6, 0.1])
  np.testing.assert_allclose(scalarize(r, s, 0.25, "weighted_sum"), [0.3, 0.625])
  np.testing.assert_allclose(scalarize(r, s, 0.25, "chebyshev"), [0.15, 0.6])
  with pytest.raises(ValueError, match="scalarization 'sum'"):
    MetaTrainConfig(scalarization="sum")
  with pytest.raises(ValueError, match="secondary_weight"):
    MetaTrainConfig(secondary_weight=1.5)


def test_secondary_objective_needs_family_support(family):
  from metatune.meta.ppo import MetaTrainer  # pylint: disable=import-outside-toplevel

  class NoSecondary:
    name = "bare"
    space = family.space
    task_indices = family.task_indices

  with pytest.raises(ValueError, match="no secondary"):
    MetaTrainer(NoSecondary(), MetaTrainConfig(**TINY, secondary_weight=0.5))
  pts_values = np.zeros((1, family.space.num_params), np.float32)
  from metatune.tuners import Points  # pylint: disable=import-outside-toplevel
  lo = family.secondary(None, Points(pts_values, np.ones_like(pts_values, bool)))
  hi = family.secondary(None, Points(pts_values + 1, np.ones_like(pts_values, bool)))
  assert float(lo[0]) == 0.0 and 0.99 < float(hi[0]) <= 1.0 + 1e-6
