"""Tests of the real-training family: contract, divergence, masking, optimizers, data, options."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metatune.space import io
from metatune.tasks.base import REASON_CODE, check_metrics
from metatune.tasks.training import data as data_lib
from metatune.tasks.training import hparams as hp
from metatune.tasks.training import models, optim
from metatune.tasks.training.family import (DATASET_SPLIT, TrainingConfig, TrainingFamily,
                                            make_family)
from metatune.tasks.training.train import make_train
from metatune.tuners.base import Points

EPOCHS, STEPS = 2, 3


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds-cache"))


@pytest.fixture(scope="module")
def space():
  """The training space with the learning rate allowed up to 1e8, to diverge on purpose."""
  doc = io.to_dict(hp.default_space())
  doc["parameters"]["lr"]["high"] = 1e8
  return io.loads(json.dumps(doc), "training.yaml with lr up to 1e8")


@pytest.fixture(scope="module")
def family(space, cache):
  config = TrainingConfig(datasets=("digits",), models=("mlp",), epochs=EPOCHS,
                          steps_per_epoch=STEPS, cache_dir=cache)
  return TrainingFamily(config, space=space)


def base_config(**changes):
  cfg = {"optimizer": "adam", "lr": 3e-3, "optimizer.adam.b1": 0.9, "optimizer.adam.b2": 0.999,
         "optimizer.adam.eps": 1e-8, "schedule": "cosine", "schedule.cosine.warmup": 0.1,
         "num_layers": 2, "width.l1": 64, "width.l2": 32, "activation": "relu",
         "dropout": 0.1, "weight_decay": 1e-4, "batch_size": 64}
  cfg.update(changes)
  return {k: v for k, v in cfg.items() if v is not None}


SGD = {"optimizer": "sgd", "optimizer.adam.b1": None, "optimizer.adam.b2": None,
       "optimizer.adam.eps": None, "optimizer.sgd.momentum": 0.9, "optimizer.sgd.nesterov": True}
CONFIGS = [
    base_config(),
    base_config(**SGD, lr=0.05, schedule="constant", **{"schedule.cosine.warmup": None},
                num_layers=1, **{"width.l2": None}, activation="tanh", batch_size=16),
    base_config(optimizer="adamw", **{"optimizer.adamw.weight_decay": 0.01}, schedule="exponential",
                **{"schedule.cosine.warmup": None, "schedule.exponential.decay_rate": 0.1},
                num_layers=3, **{"width.l1": 128, "width.l3": 16}, activation="gelu",
                dropout=0.3),
    base_config(optimizer="rmsprop", **{"optimizer.adam.b1": None, "optimizer.adam.b2": None,
                                        "optimizer.adam.eps": None, "optimizer.rmsprop.decay": 0.9,
                                        "optimizer.rmsprop.eps": 1e-8},
                num_layers=4, **{"width.l1": 16, "width.l2": 16, "width.l3": 16, "width.l4": 16},
                batch_size=32),
    base_config(**SGD, lr=1e6, **{"width.l1": 128, "width.l2": 128}),  # diverges
]
DIVERGING = 4


def encode(space, configs):
  pairs = [space.encode(c) for c in configs]
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_contract_jit_vmap_divergence_and_no_retrace(family, space):
  values, active = encode(space, CONFIGS)
  task = family.task("digits/mlp")
  traces = []

  def evaluate(key, points):
    traces.append(1)
    return task.evaluate(key, points)

  fn = jax.jit(evaluate)
  m = fn(jax.random.key(0), Points(jnp.asarray(values), jnp.asarray(active)))
  batch = len(values)
  check_metrics(m, batch, curve_len=EPOCHS)
  assert family.fidelity.values == (1.0, 2.0)
  ok = np.arange(batch) != DIVERGING
  # Divergence: failed, reason diverged, the worst objective, and nothing NaN anywhere.
  assert bool(m.failed[DIVERGING]) and int(m.reason[DIVERGING]) == REASON_CODE["diverged"]
  assert float(m.objective[DIVERGING]) == 1.0
  for name in ("objective", "test_objective", "curve", "cost", "num_params", "memory"):
    assert np.all(np.isfinite(np.asarray(getattr(m, name)))), name
  assert not np.any(np.asarray(m.failed)[ok]) and np.all(np.asarray(m.reason)[ok] == 0)
  # Even a few steps learn something on 10 classes (chance error is 0.9).
  assert float(np.min(np.asarray(m.objective)[ok])) < 0.5
  # Masking: garbage in every inactive entry (widths of absent layers, parameters of
  # other optimizers and schedules) changes nothing, and needs no retrace.
  garbage = np.where(active, values, np.linspace(0.1, 0.9, values.size).reshape(values.shape))
  mg = fn(jax.random.key(0), Points(jnp.asarray(garbage, jnp.float32), jnp.asarray(active)))
  for name in ("objective", "test_objective", "curve", "cost", "num_params", "memory", "failed"):
    np.testing.assert_array_equal(np.asarray(getattr(mg, name)), np.asarray(getattr(m, name)),
                                  err_msg=name)
  # Size of the live architecture: 64 inputs -> 64 units -> 10 classes for config 1.
  assert float(m.num_params[1]) == 64 * 64 + 64 + 64 * 10 + 10
  assert float(m.cost[1]) > 0 and float(m.memory[1]) > 0
  assert float(m.num_params[2]) > float(m.num_params[1])
  # A second batch of different configurations reuses the compiled function.
  m2 = fn(jax.random.key(1), Points(jnp.asarray(values[::-1].copy()),
                                    jnp.asarray(active[::-1].copy())))
  assert len(traces) == 1
  np.testing.assert_array_equal(np.asarray(m2.num_params), np.asarray(m.num_params)[::-1])
  # Same key, same result.
  m3 = fn(jax.random.key(0), Points(jnp.asarray(values), jnp.asarray(active)))
  np.testing.assert_array_equal(np.asarray(m3.objective), np.asarray(m.objective))

  # One configuration through the unbatched function gives what the batch gave it, up to
  # float reassociation in the batched backward matmuls (a validation example or two).
  setup, data = family.setup("digits/mlp")
  single = jax.jit(make_train(setup))
  keys = jax.random.split(jax.random.key(0), batch)
  for i in (0, DIVERGING):
    one = single(keys[i], values[i], active[i], data)
    assert one.objective.shape == () and one.curve.shape == (EPOCHS,)
    np.testing.assert_allclose(np.asarray(one.curve), np.asarray(m.curve[i]),
                               atol=2.5 / data.x_valid.shape[0])
    assert bool(one.failed) == bool(m.failed[i])
    assert float(one.num_params) == float(m.num_params[i])


@pytest.mark.parametrize("kind", models.MODELS)
def test_one_layer_ignores_inactive_widths(kind):
  spec = models.ModelSpec(kind, 64, 10, max_layers=4, max_width=128,
                          shape=(8, 8, 1) if kind == "cnn" else None)
  x = jax.random.normal(jax.random.key(0), (5, 64))

  @jax.jit
  def run(widths):
    arch = models.Arch(jnp.int32(1), widths, jnp.int32(1), jnp.float32(0.2))
    params = models.init(jax.random.key(1), spec, arch)
    return models.apply(params, spec, arch, x, jax.random.key(2)), models.size(spec, arch)

  outs, sizes = [], []
  for rest in ([16, 16, 16], [128, 1, 77], [0, 500, 3]):
    out, size = run(jnp.array([48] + rest))
    outs.append(out)
    sizes.append(size)
  for out, size in zip(outs[1:], sizes[1:]):
    np.testing.assert_array_equal(np.asarray(out), np.asarray(outs[0]))
    np.testing.assert_array_equal(np.asarray(size), np.asarray(sizes[0]))
  assert np.all(np.isfinite(np.asarray(outs[0])))


def test_padded_units_do_not_change_the_output():
  """A 2-layer MLP of widths (8, 4) equals the same network written out without padding."""
  spec = models.ModelSpec("mlp", 6, 3, max_layers=2, max_width=16)
  arch = models.Arch(jnp.int32(2), jnp.array([8, 4]), jnp.int32(0), jnp.float32(0.0))
  params = models.init(jax.random.key(0), spec, arch)
  x = jax.random.normal(jax.random.key(1), (7, 6))
  h = jax.nn.relu(x @ params["inp"]["w"][:, :8] + params["inp"]["b"][:8])
  h = jax.nn.relu(h @ params["hidden"]["w"][0, :8, :4] + params["hidden"]["b"][0, :4])
  want = h @ params["out"]["w"][:4] + params["out"]["b"]
  np.testing.assert_allclose(np.asarray(models.apply(params, spec, arch, x)), np.asarray(want),
                             rtol=1e-5, atol=1e-5)
  num_params, _, _ = models.size(spec, arch)
  assert float(num_params) == 6 * 8 + 8 + 8 * 4 + 4 + 4 * 3 + 3


def test_activations_match_jax():
  z = jnp.linspace(-4.0, 4.0, 101)
  for i, ref in enumerate([jax.nn.relu, lambda v: jax.nn.gelu(v, approximate=True), jnp.tanh]):
    arch = models.Arch(jnp.int32(1), jnp.array([1]), jnp.int32(i), jnp.float32(0))
    np.testing.assert_allclose(np.asarray(models._activate(arch, z)), np.asarray(ref(z)),
                               atol=1e-6)


@pytest.mark.parametrize("branch", hp.BRANCHES)
def test_choice_optimizer_matches_optax(branch):
  params = {"w": jax.random.normal(jax.random.key(0), (5, 3)), "b": jnp.ones(3)}
  refs = {"sgd": optax.sgd(0.1, momentum=0.7),
          "sgd_nesterov": optax.sgd(0.1, momentum=0.7, nesterov=True),
          "adam": optax.adam(0.1, b1=0.8, b2=0.95, eps=1e-3),
          "adamw": optax.adamw(0.1, b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.1),
          "rmsprop": optax.rmsprop(0.1, decay=0.85, eps=1e-4)}
  mine = optax.inject_hyperparams(optim.choice_optimizer)(
      learning_rate=0.1, branch=jnp.int32(hp.BRANCHES.index(branch)), momentum=0.7, b1=0.8,
      b2=0.95, adam_eps=1e-3, adamw_decay=0.1, rms_decay=0.85, rms_eps=1e-4)
  ref = refs[branch]
  p1 = p2 = params
  s1, s2 = mine.init(p1), ref.init(p2)
  for i in range(4):
    g = jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.key(10 + i), p.shape), params)
    u1, s1 = mine.update(g, s1, p1)
    u2, s2 = ref.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_schedules(space):
  def lr_at(cfg, steps):
    u, a = space.encode(cfg)
    fn = optim.schedule(hp.decode(space, jnp.asarray(u), jnp.asarray(a)), 100)
    return np.array([float(fn(t)) for t in steps])

  const = lr_at(base_config(schedule="constant", **{"schedule.cosine.warmup": None}), [0, 50, 99])
  np.testing.assert_allclose(const, 3e-3, rtol=1e-5)
  cos = lr_at(base_config(), [0, 9, 10, 55, 100])  # 10% warmup
  assert cos[0] < cos[1] and abs(cos[1] - 3e-3) < 1e-7 and cos[2] > cos[3] > cos[4]
  assert cos[4] < 1e-9
  exp = lr_at(base_config(schedule="exponential", **{"schedule.cosine.warmup": None,
                                                      "schedule.exponential.decay_rate": 0.1}),
              [0, 100])
  np.testing.assert_allclose(exp, [3e-3, 3e-4], rtol=1e-4)


def test_sklearn_dataset_round_trip(tmp_path):
  from sklearn.datasets import load_iris  # pylint: disable=import-outside-toplevel
  b = data_lib.builder("iris", cache=tmp_path)
  assert b.is_prepared()
  assert list((tmp_path / "metatune_training" / "iris").glob("*/*.array_record*"))
  parts = {s: data_lib.read_split(b, s) for s in data_lib.SPLITS}
  index = np.concatenate([parts[s][0] for s in data_lib.SPLITS])
  assert sorted(index.tolist()) == list(range(150))
  assert [len(parts[s][0]) for s in data_lib.SPLITS] == [90, 30, 30]
  x, y = load_iris(return_X_y=True)
  for s in data_lib.SPLITS:
    idx, xs, ys = parts[s]
    np.testing.assert_allclose(xs, x[idx], rtol=1e-6)
    np.testing.assert_array_equal(ys, y[idx])
  data = data_lib.load("iris", cache=tmp_path)
  np.testing.assert_allclose(np.asarray(data.x_train).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(data.x_train).std(0), 1.0, atol=1e-4)
  assert data.y_train.dtype == jnp.int32 and data.x_test.shape == (30, 4)
  # Prepared once: a second builder reads the cache, and the split never changes.
  again = data_lib.read_split(data_lib.builder("iris", cache=tmp_path), "validation")
  np.testing.assert_array_equal(again[0], parts["validation"][0])
  # Without tensorflow-datasets, `load` reads the same arrays straight from the source.
  raw = data_lib.raw_splits("iris")
  for s in data_lib.SPLITS:
    for got, want in zip(raw[s], parts[s]):
      np.testing.assert_array_equal(got, want)
      assert got.dtype == want.dtype


def test_load_without_tfds_matches_the_builder(tmp_path, monkeypatch):
  want = data_lib.load("wine", cache=tmp_path)
  data_lib._load_numpy.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setattr(data_lib, "_has_tfds", lambda: False)
  with pytest.warns(UserWarning, match="tensorflow-datasets is not installed"):
    got = data_lib.load("wine", cache=tmp_path / "unused")
  data_lib._load_numpy.cache_clear()  # pylint: disable=protected-access
  assert not (tmp_path / "unused").exists()
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_folder_dataset_needs_the_data_folder(tmp_path):
  with pytest.raises(ValueError, match="needs a data folder"):
    data_lib.builder("mnist1d", cache=tmp_path)
  with pytest.raises(ValueError, match="option 'datasets'.*mnist/mnist.npz"):
    make_family({"datasets": ["mnist"]}, tmp_path)


def test_folder_datasets_load(data_dir, tmp_path):
  data = data_lib.load("mnist1d", cache=tmp_path, data_dir=data_dir)
  assert data.x_train.shape == (3200, 40) and data.x_valid.shape == (800, 40)
  b = data_lib.builder("mnist", cache=tmp_path, data_dir=data_dir)
  raw = data_lib.raw_splits("mnist", data_dir)
  for s in data_lib.SPLITS:
    for got, want in zip(raw[s], data_lib.read_split(b, s)):
      np.testing.assert_array_equal(got, want)
  assert data.x_test.shape == (1000, 40)
  family = make_family({"cache_dir": str(tmp_path)}, data_dir)
  ids = family.task_ids()
  assert "mnist1d/cnn" in ids and "fashion_mnist/mlp" in family.task_ids("heldout_dataset")


def test_splits_hold_out_datasets_and_models():
  family = make_family({})
  splits = family.splits()
  ids = [t for s in splits.values() for t in s]
  assert len(ids) == len(set(ids))
  assert all(t.split("/")[0] in data_lib.SKLEARN for t in ids)  # no data folder
  assert all(t.endswith("/resmlp") for t in splits["heldout_model"])
  assert not any(t.endswith("/resmlp") for s in ("meta_train", "meta_valid", "heldout_dataset")
                 for t in splits[s])
  held = {t.split("/")[0] for t in splits["heldout_dataset"]}
  assert held == {"wine"} and all(DATASET_SPLIT[d] == "heldout_dataset" for d in held)
  assert not any(t.split("/")[0] in held for s in ("meta_train", "meta_valid", "heldout_model")
                 for t in splits[s])
  assert "digits/cnn" in splits["meta_train"] and "iris/cnn" not in ids
  assert family.fidelity.name == "epoch" and len(family.fidelity.values) == 20


def test_the_held_out_architecture_can_be_validation_tasks_on_every_dataset():
  family = make_family({"models": ["resmlp"], "heldout_model_split": "meta_valid"})
  splits = family.splits()
  assert not splits["heldout_model"] and not splits["meta_train"]
  assert splits["meta_valid"] == [f"{d}/resmlp" for d in sorted(data_lib.SKLEARN)]
  assert "wine/resmlp" not in make_family({"models": ["resmlp"]}).task_ids()


@pytest.mark.parametrize("options, message", [
    ({"epoch": 3}, "unknown option 'epoch'"),
    ({"epochs": 0}, "option 'epochs'"),
    ({"epochs": True}, "option 'epochs'"),
    ({"steps_per_epoch": 2.5}, "option 'steps_per_epoch'"),
    ({"models": ["vit"]}, "option 'models'.*'vit'"),
    ({"datasets": []}, "option 'datasets'"),
    ({"datasets": ["cifar"]}, "option 'datasets'.*'cifar'"),
    ({"cache_dir": 3}, "option 'cache_dir'"),
    ({"space": 3}, "option 'space'"),
    ({"heldout_model_split": "meta_train"}, "option 'heldout_model_split'"),
])
def test_make_family_rejects_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    make_family(options, None)


def test_unknown_task_is_an_error():
  with pytest.raises(ValueError, match="unknown task 'iris/cnn'"):
    make_family({}).task("iris/cnn")


def test_space_check_rejects_a_foreign_space():
  with pytest.raises(ValueError, match="'optimizer'"):
    hp.check_space(io.loads("name: x\nparameters:\n  lr: {type: float, low: 0.1, high: 1}\n"))


RESMLP_SPACE = "configs/spaces/training_resmlp.yaml"


def _root():
  import pathlib  # pylint: disable=import-outside-toplevel
  return pathlib.Path(__file__).resolve().parents[2]


def test_the_residual_mlp_reads_its_own_parameters():
  space = io.load(_root() / RESMLP_SPACE)
  hp.check_space(space)
  cfg = space.default_config()
  values, active = space.encode({**cfg, "resmlp.branch_scale": 0.05, "resmlp.norm": False})
  arch = hp.decode(space, jnp.asarray(values), jnp.asarray(active)).arch
  assert float(arch.branch_scale) == pytest.approx(0.05, rel=1e-4) and float(arch.norm) == 0.0
  # A space without them trains the residual MLP as before: scale 0.5, normalized blocks.
  plain = hp.default_space()
  values, active = plain.encode(plain.default_config())
  arch = hp.decode(plain, jnp.asarray(values), jnp.asarray(active)).arch
  assert float(arch.branch_scale) == 0.5 and float(arch.norm) == 1.0
  spec = models.ModelSpec("resmlp", 6, 3, max_layers=2, max_width=16)
  x = jax.random.normal(jax.random.key(1), (7, 6)) * 3.0

  def out(**kw):
    a = models.Arch(jnp.int32(2), jnp.array([8, 4]), jnp.int32(0), jnp.float32(0.0), **kw)
    return np.asarray(models.apply(models.init(jax.random.key(0), spec, a), spec, a, x))

  np.testing.assert_array_equal(out(), out(branch_scale=jnp.float32(0.5), norm=jnp.float32(1)))
  assert not np.allclose(out(), out(norm=jnp.float32(0)))
  assert not np.allclose(out(), out(branch_scale=jnp.float32(0.05)))


def test_a_training_space_with_a_mistyped_resmlp_parameter_is_named():
  text = (_root() / RESMLP_SPACE).read_text().replace(
      "norm: {type: bool, default: true}", "norm: {type: float, low: 0, high: 1}")
  with pytest.raises(ValueError, match="'resmlp.norm' must be bool"):
    hp.check_space(io.loads(text))


def test_the_family_takes_a_space_file():
  family = make_family({"datasets": ["iris"], "models": ["resmlp"],
                        "space": str(_root() / RESMLP_SPACE)})
  assert "resmlp.branch_scale" in family.space.index
  with pytest.raises(ValueError, match="option 'space'.*needs a parameter 'optimizer.sgd.momentum'"):
    make_family({"space": str(_root() / "configs/spaces/nn_tuning.yaml")})


@pytest.mark.slow
def test_experiment_scripts_smoke(tmp_path, cache):
  import importlib.util  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(__file__).resolve().parents[2] / "experiments"
  for name, args in (("training_digits", ["--num", "8", "--epochs", "1"]),
                     ("bench_training_vmap", ["--quick"])):
    spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    out = tmp_path / f"{name}.md"
    module.main(args + ["--out", str(out), "--cache-dir", cache])
    assert f"python experiments/{name}.py" in out.read_text()


def test_the_family_is_a_noise_free_environment_of_the_harness(space, cache):
  """Tasks as data (static setup as aux data); evaluate == clean whatever the key and the
  batch a configuration is in; the harness's live runs read the objectives a study saw (no
  second training) and give what training the proposals again gives."""
  from metatune.evaluation.runs import live_run
  from metatune.tuners import random_search
  config = TrainingConfig(datasets=("iris", "digits"), models=("mlp",), epochs=EPOCHS,
                          steps_per_epoch=STEPS, cache_dir=cache)
  fam = TrainingFamily(config, space=space)
  assert fam.all_task_ids() == ["digits/mlp", "iris/mlp"]
  task = fam.task_params(jnp.asarray(1, jnp.int32))
  assert task.setup.model.num_features == 4 and fam.task_params(1) is task   # cached
  values, active = encode(space, CONFIGS)
  pts = Points(jnp.asarray(values), jnp.asarray(active))
  evaluate, clean = jax.jit(fam.evaluate), jax.jit(fam.clean)
  a, b = evaluate(jax.random.key(1), task, pts), evaluate(jax.random.key(2), task, pts)
  np.testing.assert_array_equal(a.objective, b.objective)
  c = np.asarray(clean(task, pts))
  assert np.isnan(c[DIVERGING]) and bool(a.failed[DIVERGING])
  np.testing.assert_allclose(np.delete(c, DIVERGING), np.delete(a.objective, DIVERGING))
  reversed_ = np.asarray(clean(task, Points(pts.values[::-1], pts.active[::-1])))[::-1]
  np.testing.assert_allclose(reversed_, c, rtol=1e-5)      # the position in a batch is moot
  tuner = random_search(space)
  fast = jax.jit(live_run(tuner, fam, 4))(jax.random.key(0), task)
  fam.noise_free = False                                    # train the proposals again
  slow = jax.jit(live_run(tuner, fam, 4))(jax.random.key(0), task)
  np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5)
  np.testing.assert_array_equal(fast[1], slow[1])


@pytest.mark.slow
def test_the_harness_evaluates_the_training_family_live(cache, tmp_path):
  """`metatune evaluate` on live training: one compile per task (shapes differ), a report."""
  from metatune.evaluation.experiment import load_experiment
  from metatune.evaluation.harness import run_experiment
  fam = tmp_path / "fam.yaml"
  fam.write_text(f"name: tiny-training\nfamily: training\noptions:\n  datasets: [iris, wine]\n"
                 f"  models: [mlp]\n  epochs: {EPOCHS}\n  steps_per_epoch: {STEPS}\n"
                 f"  cache_dir: {cache}\n")
  exp = tmp_path / "exp.yaml"
  exp.write_text("name: t\nfamily: fam.yaml\ntasks: [iris/mlp, wine/mlp]\nbudget: 4\nseeds: 2\n"
                 "checkpoints: [1, 4]\nreference_samples: 8\nreference_refine: 1\n"
                 "tuners:\n  random: {}\n  quasi_random: {}\n")
  res = run_experiment(load_experiment(exp), tmp_path / "out", progress=False,
                       log=lambda _: None)
  assert res["runs"]["random"]["regret"].shape == (2, 2, 4)
  assert np.all(np.isfinite(res["runs"]["random"]["regret"][:, :, -1]))
  assert res["compiles"] == {"random": 2, "quasi_random": 2}
  assert "2 tasks of tiny-training x 2 seeds, 4 trials (live)" in (
      tmp_path / "out" / "table.md").read_text()
