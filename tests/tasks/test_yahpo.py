"""YAHPO surrogates in JAX: agreement with onnxruntime and YAHPO's input rules; the contract."""

import csv
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatune.space import sample
from metatune.tasks import REASON_CODE, SPLITS, check_metrics, yahpo

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # pylint: disable=wrong-import-position

from metatune.tasks import onnx_jax  # pylint: disable=wrong-import-position
from metatune.tuners.base import Points

SCENARIOS = ("lcbench", "rbv2_xgboost", "rbv2_rpart", "iaml_glmnet")

# Written out again from yahpo_gym/benchmarks/{lcbench,rbv2,iaml}.py (v1.0 surrogates,
# ``repl`` continuous), so that a slip in the module's tables shows up here.
YAHPO_LAYOUT = {
    "lcbench": (["epoch", "batch_size", "learning_rate", "momentum", "weight_decay",
                 "num_layers", "max_units", "max_dropout"], ["OpenML_task_id"]),
    "rbv2_xgboost": (["nrounds", "eta", "gamma", "lambda", "alpha", "subsample", "max_depth",
                      "min_child_weight", "colsample_bytree", "colsample_bylevel", "rate_drop",
                      "skip_drop", "trainsize", "repl"],
                     ["task_id", "booster", "num.impute.selected.cpo"]),
    "rbv2_rpart": (["cp", "maxdepth", "minbucket", "minsplit", "trainsize", "repl"],
                   ["task_id", "num.impute.selected.cpo"]),
    "iaml_glmnet": (["alpha", "s", "trainsize"], ["task_id"]),
}
FIDELITY = {"lcbench": ("epoch",), "rbv2_xgboost": ("trainsize", "repl"),
            "rbv2_rpart": ("trainsize", "repl"), "iaml_glmnet": ("trainsize",)}


@functools.lru_cache(maxsize=None)
def _family(data_dir, scenario):
  return yahpo.make_family({"scenario": scenario}, data_dir)


@pytest.fixture(params=SCENARIOS)
def family(request, data_dir):
  return _family(str(data_dir), request.param)


@functools.lru_cache(maxsize=None)
def _configs(family):
  """200 random valid configurations (sampled once: each new batch size compiles the sampler)."""
  return sample(jax.random.key(0), family.space, 200)


def _points(family, num):
  u, a = _configs(family)
  return u[:num], a[:num]


def _batch(fam, num_tasks=4):
  """The 200 configurations over ``num_tasks`` tasks: network inputs, configurations, tasks."""
  u, a = _points(fam, 200)
  ids = fam.task_ids()[:: max(1, len(fam.instances) // num_tasks)][:num_tasks]
  parts = np.array_split(np.arange(len(u)), len(ids))
  inputs = jax.jit(fam.inputs)
  xs = [inputs(Points(u[p], a[p]), fam.instance_code(t)) for p, t in zip(parts, ids)]
  return (np.concatenate([np.asarray(x[0]) for x in xs]),
          np.concatenate([np.asarray(x[1]) for x in xs]), u, a, ids, parts)


@functools.lru_cache(maxsize=None)
def _jit_net(data_dir, scenario):
  return jax.jit(_family(data_dir, scenario).net)


@functools.lru_cache(maxsize=None)
def _inputs(data_dir, scenario):
  return _batch(_family(data_dir, scenario))


@functools.lru_cache(maxsize=None)
def _outputs(data_dir, scenario):
  """The JAX network on 200 random valid configurations over 4 tasks (lcbench: random epochs)."""
  fam = _family(data_dir, scenario)
  x_cat, x_cont, _, _, ids, parts = _inputs(data_dir, scenario)
  if fam.fidelity is not None:  # cover the whole learning curve, not only the last epoch
    x_cont = x_cont.copy()
    x_cont[:, YAHPO_LAYOUT["lcbench"][0].index("epoch")] = np.random.default_rng(0).integers(
        1, 53, len(x_cont))
  return x_cat, x_cont, np.asarray(_jit_net(data_dir, scenario)(x_cat, x_cont)[0]), ids, parts


@pytest.mark.data
def test_jax_network_matches_onnxruntime(family, data_dir):
  ort = pytest.importorskip("onnxruntime")
  x_cat, x_cont, out, _, _ = _outputs(str(data_dir), family.config.scenario)
  sess = ort.InferenceSession(family.net.source, providers=["CPUExecutionProvider"])
  ref = sess.run(None, {"x_cat": x_cat, "x_cont": x_cont})[0]
  assert out.shape == ref.shape == (200, len(family.scenario.targets))
  assert np.isfinite(out).all()
  # The objective's target agrees elementwise to 1e-4 relative. Every target agrees to 1e-4
  # of its magnitude: tiny values of wide-ranged targets (timetrain near 0 s on a 0-2000 s
  # scale) sit below float32 resolution in both runtimes.
  j = family.scenario.targets.index(family.objective.target)
  np.testing.assert_allclose(out[:, j], ref[:, j], rtol=1e-4, atol=0)
  scaled = np.abs(out - ref) / np.abs(ref).max(axis=0)
  assert scaled.max() < 1e-4, (scaled.max(axis=0), np.abs(ref).max(axis=0))


@pytest.mark.data
def test_inputs_follow_yahpo_rules(family, data_dir):
  """Rows built from decoded configurations in plain numpy, as BenchmarkSet._config_to_xs does."""
  scenario = family.config.scenario
  folder = data_dir / "yahpo" / scenario
  encoding = json.loads((folder / "encoding.json").read_text())
  hps = {h["name"]: h for h in json.loads((folder / "config_space.json").read_text())[
      "hyperparameters"]}
  cont_names, cat_names = YAHPO_LAYOUT[scenario]
  x_cat, x_cont, u, a, ids, parts = _inputs(str(data_dir), scenario)
  want_cat, want_cont = [], []
  for p, task_id in zip(parts, ids):
    for cfg in family.space.decode_batch(u[p], a[p]):
      cfg = dict(cfg, **{f: hps[f]["upper"] for f in FIDELITY[scenario]})
      cfg[cat_names[0]] = task_id.split("/", 1)[1]
      want_cont.append([cfg.get(n, 0) for n in cont_names])
      want_cat.append([encoding[n][cfg.get(n, "#na#")] for n in cat_names])
  np.testing.assert_array_equal(x_cat, np.array(want_cat, np.int32))
  np.testing.assert_allclose(x_cont, np.array(want_cont, np.float32), rtol=1e-6)
  if scenario == "rbv2_xgboost":  # gblinear configurations feed 0 for the tree parameters
    gblinear = x_cat[:, 1] == encoding["booster"]["gblinear"]
    assert 0 < gblinear.sum() < len(gblinear) and (x_cont[gblinear, 1] == 0).all()


@pytest.mark.data
def test_predictions_lie_in_yahpo_target_ranges(family, data_dir):
  """YAHPO publishes each target's range per instance (random search, 0.5M points)."""
  stats = {}
  with open(data_dir / "yahpo" / "global_statistics" / "instance_target_statistics.csv") as f:
    for r in csv.DictReader(f):
      stats[r["scenario"], r["instance"], r["metric"], r["statistic"]] = float(r["value"])
  _, _, out, ids, parts = _outputs(str(data_dir), family.config.scenario)
  for task_id, rows in zip(ids, parts):
    instance = task_id.split("/", 1)[1]
    for j, name in enumerate(family.scenario.targets):
      lo, hi = (stats[family.config.scenario, instance, name, s] for s in ("min", "max"))
      slack = 0.01 * (hi - lo)
      inside = np.mean((out[rows, j] >= lo - slack) & (out[rows, j] <= hi + slack))
      assert inside >= 0.96, f"{task_id} {name}: {inside:.0%} of predictions in [{lo}, {hi}]"


@pytest.mark.data
def test_family_contract(family):
  """Under jit and vmap (tasks as data): shapes, the objective's definition, NaN inputs failing."""
  num_steps = len(family.fidelity.values) if family.fidelity else 1
  u, a = _points(family, 8)
  poisoned = u.at[1, 0].set(jnp.nan)  # a NaN input in configuration 1
  codes = [family.instance_code(t) for t in family.task_ids("meta_train")[:2]]
  run = lambda key, points, code: (family.metrics(key, points, code),
                                   family.predict(points, code))
  keys = jax.random.split(jax.random.key(4), 3)
  batched = Points(jnp.stack([u, poisoned, u]), jnp.stack([a, a, a]))
  ms, out = jax.jit(jax.vmap(run))(keys, batched, jnp.array(codes[:1] * 2 + codes[1:2]))
  assert ms.objective.shape == (3, 8) and ms.curve.shape == (3, 8, num_steps)
  m = jax.tree.map(lambda x: x[0], ms)
  for i in range(3):
    check_metrics(jax.tree.map(lambda x, i=i: x[i], ms), 8, num_steps)
  assert not m.failed.any() and np.isfinite(m.objective).all() and (m.cost > 0).all()
  assert ms.failed[1].tolist() == [False, True] + [False] * 6
  assert int(ms.reason[1, 1]) == REASON_CODE["nan"] and int(ms.reason[1, 0]) == 0
  np.testing.assert_allclose(ms.objective[1, 2:], m.objective[2:], rtol=1e-6)
  assert not np.allclose(ms.objective[2], m.objective)  # another task, other results
  # The objective is the chosen target, signed and scaled; the curve ends at the objective.
  obj = family.objective
  target = np.asarray(out[0])[..., family.scenario.targets.index(obj.target)]
  target = target[:, -1] if target.ndim == 2 else target
  np.testing.assert_allclose(m.objective, obj.sign * obj.scale * target, rtol=1e-6)
  np.testing.assert_allclose(m.curve[:, -1], m.objective)
  if family.config.scenario == "lcbench":  # learning curves improve (objectives are negated)
    assert m.objective.max() <= 0
    assert float(m.curve[:, -1].mean()) < float(m.curve[:, 0].mean())


def _fake_net(num_targets, bad_row=None):
  """A stand-in surrogate (cheap to compile): all ones, ``inf`` in ``bad_row``."""
  def net(x_cat, x_cont):
    del x_cont
    out = jnp.ones((x_cat.shape[0], num_targets)) * (1.0 + x_cat[:, :1])
    return (out if bad_row is None else out.at[bad_row].set(jnp.inf),)
  return net


@pytest.mark.data
def test_task_interface_under_jit_and_vmap(family, monkeypatch):
  """``Task.evaluate`` is ``family.metrics`` with the instance bound (stand-in surrogate)."""
  monkeypatch.setattr(family, "net", _fake_net(len(family.scenario.targets)))
  num_steps = len(family.fidelity.values) if family.fidelity else 1
  u, a = _points(family, 8)
  task_id = family.task_ids()[0]
  task = family.task(task_id)
  keys = jax.random.split(jax.random.key(11), 2)
  ms = jax.jit(jax.vmap(task.evaluate))(keys, Points(jnp.stack([u, u]), jnp.stack([a, a])))
  check_metrics(jax.tree.map(lambda x: x[0], ms), 8, num_steps)
  direct = jax.jit(family.metrics)(jax.random.key(12), Points(u, a),
                                   family.instance_code(task_id))
  np.testing.assert_array_equal(ms.objective[0], direct.objective)
  assert task.info["instance_code"] == family.instance_code(task_id)


@pytest.mark.data
def test_diverging_outputs_are_failures(data_dir, monkeypatch):
  """An infinite surrogate output anywhere on the learning curve fails that configuration."""
  fam = _family(str(data_dir), "lcbench")
  monkeypatch.setattr(fam, "net", _fake_net(len(fam.scenario.targets), 2 * 52 + 10))
  u, a = _points(fam, 4)  # configuration 2, epoch 11 diverges
  m = jax.jit(fam.task(fam.task_ids()[0]).evaluate)(jax.random.key(7), Points(u, a))
  assert m.failed.tolist() == [False, False, True, False]
  assert int(m.reason[2]) == REASON_CODE["diverged"]
  assert np.isfinite(m.objective).all()  # the last epoch is finite, yet the run diverged


@pytest.mark.data
def test_fidelity_option_changes_the_inputs(data_dir):
  full = _family(str(data_dir), "rbv2_rpart")
  small = yahpo.make_family({"scenario": "rbv2_rpart", "fidelity": {"trainsize": 0.05}},
                            data_dir)
  assert small.fixed == {"trainsize": 0.05, "repl": 10.0}
  u, a = _points(full, 200)
  code = full.instance_code(full.task_ids()[0])
  net = _jit_net(str(data_dir), "rbv2_rpart")
  cost = full.scenario.targets.index("timetrain")
  cost_full = net(*jax.jit(full.inputs)(Points(u, a), code))[0][:, cost]
  cost_small = net(*jax.jit(small.inputs)(Points(u, a), code))[0][:, cost]
  assert float(cost_full.mean()) > float(cost_small.mean())  # training on 5% is cheaper


@pytest.mark.data
def test_space_and_splits(family):
  sc = family.scenario
  assert sc.instance not in family.space.index
  assert not set(sc.fidelity_params) & set(family.space.index)
  if family.config.scenario == "rbv2_xgboost":
    assert family.space.parents["rate_drop"] == ["booster"]
  splits = family.splits()
  assert splits == family.splits() and set(splits) == set(SPLITS)
  assert splits["heldout_model"] == []
  ids = [t for s in SPLITS for t in splits[s]]
  assert len(ids) == len(set(ids)) == len(family.instances)
  assert abs(len(splits["meta_train"]) - 0.7 * len(ids)) <= 1
  assert family.task(ids[0]).id == ids[0]
  with pytest.raises(ValueError, match="unknown task"):
    family.task(f"{family.config.scenario}/no-such-dataset")


@pytest.mark.parametrize("options, match", [
    ({"scenario": "nb301"}, "option 'scenario'"),
    ({}, "option 'scenario'"),
    ({"scenario": "lcbench", "objective": "acc"}, "option 'objective'"),
    ({"scenario": "lcbench", "budget": 3}, "unknown yahpo option 'budget'"),
    ({"scenario": "lcbench", "fidelity": {"epoch": "max"}}, "option 'fidelity'"),
    ({"scenario": "lcbench", "seed": 1.5}, "option 'seed'"),
    ({"scenario": "lcbench"}, "needs a data folder"),
])
def test_bad_options_name_the_option(options, match):
  with pytest.raises(ValueError, match=match):
    yahpo.make_family(options, None)


@pytest.mark.data
@pytest.mark.parametrize("fidelity, match", [
    ({"epoch": 10}, "'epoch' is not a fixed fidelity"),
    ({"trainsize": 2.0}, "outside"),
    ({"repl": 2.5}, "whole number"),
])
def test_bad_fidelity_names_the_option(data_dir, fidelity, match):
  scenario = {"epoch": "lcbench", "trainsize": "iaml_glmnet", "repl": "rbv2_rpart"}[
      next(iter(fidelity))]
  with pytest.raises(ValueError, match="option 'fidelity'.*" + match):
    yahpo.make_family({"scenario": scenario, "fidelity": fidelity}, data_dir)


def _tiny_model(op="Relu"):
  """x f32[B, 3] -> Sigmoid(Slice(Gemm(x, W) + b)) then ``op``, as PyTorch exports a GLU."""
  w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
  b = numpy_helper.from_array(np.array([0.1, -0.2, 0.3, -0.4], np.float32), "b")
  const = lambda name, v: helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(np.array(v)))
  nodes = [
      helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
      helper.make_node("Shape", ["h"], ["shape"]),
      const("last", np.array([-1], np.int64)), const("two", np.array([2], np.int64)),
      const("zero", np.array([0], np.int64)),
      helper.make_node("Gather", ["shape", "last"], ["width"]),
      helper.make_node("Div", ["width", "two"], ["half"]),
      helper.make_node("Slice", ["h", "zero", "half", "last"], ["left"]),
      helper.make_node("Sigmoid", ["left"], ["s"]),
      helper.make_node(op, ["s"], ["y"]),
  ]
  graph = helper.make_graph(
      nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w, b])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_interpreter_is_jittable_and_vmappable():
  net = onnx_jax.from_model(_tiny_model())
  x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
  w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
  want = 1 / (1 + np.exp(-(x @ w.T + [0.1, -0.2, 0.3, -0.4])[:, :2]))
  (y,) = jax.jit(net)(x)
  np.testing.assert_allclose(y, want, rtol=1e-6)
  (yv,) = jax.vmap(net)(x.reshape(2, 4, 3))
  np.testing.assert_allclose(yv.reshape(8, 2), want, rtol=1e-6)


def test_onnx_unsupported_op_is_named():
  with pytest.raises(onnx_jax.OnnxError, match="unsupported ONNX operator.*Softmax"):
    onnx_jax.from_model(_tiny_model("Softmax"))


@pytest.mark.data
def test_environment_methods_take_tasks_as_data(family, monkeypatch):
  """task_params / clean / evaluate / reference: one compiled function serves every task."""
  monkeypatch.setattr(family, "net", _fake_net(len(family.scenario.targets)))
  u, a = _points(family, 8)
  held = family.task_indices("heldout_dataset")
  assert [family.all_task_ids()[i] for i in held] == family.task_ids("heldout_dataset")
  clean = jax.jit(lambda i, p: family.clean(family.task_params(i), p))
  for i in (0, len(family.all_task_ids()) - 1):
    task_id = family.all_task_ids()[i]
    m = family.metrics(jax.random.key(0), Points(u, a), family.instance_code(task_id))
    np.testing.assert_array_equal(clean(i, Points(u, a)),
                                  np.where(m.failed, np.nan, m.objective))
  assert clean._cache_size() == 1
  ev = family.evaluate(jax.random.key(1), family.task_params(0), Points(u, a))
  assert ev.objective.shape == (8,)
  opt, med, worst = family.reference(jax.random.key(2), family.task_params(0), 64, 2)
  assert float(opt) <= float(med) <= float(worst)


@pytest.mark.data
def test_environment_methods_read_the_last_epoch_only(data_dir, monkeypatch):
  """``evaluate``/``clean`` (meta-training, the harness) skip the curve: same objective, 1/52 work."""
  fam = _family(str(data_dir), "lcbench")
  calls = []

  def net(x_cat, x_cont):
    calls.append(x_cont.shape[0])
    return (jnp.ones((x_cat.shape[0], len(fam.scenario.targets))) * x_cont[:, :1],)
  monkeypatch.setattr(fam, "net", net)
  u, a = _points(fam, 4)
  code = fam.instance_code(fam.task_ids()[0])
  full = fam.metrics(jax.random.key(0), Points(u, a), code)
  calls.clear()
  ev = fam.evaluate(jax.random.key(0), jnp.asarray(code), Points(u, a))
  assert calls == [4]  # one row per configuration, not 52
  np.testing.assert_allclose(ev.objective, full.objective, rtol=1e-6)
  np.testing.assert_allclose(fam.clean(jnp.asarray(code), Points(u, a)), full.objective,
                             rtol=1e-6)
