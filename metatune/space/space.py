"""`Space`: a checked, tree-structured search space and its fixed-shape encoding.

A configuration is encoded as ``values: f32[D]`` in the unit cube plus
``active: bool[D]``, with parameters in dependency order (parents first).
Discrete parameters own equal-probability bins of ``[0, 1)`` and are stored at
bin midpoints; inactive entries are 0.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metatune.space import expr as ex
from metatune.space import lowering
from metatune.space import model
from metatune.space import program
from metatune.space import reference
from metatune.space.errors import SpaceError
from metatune.space.model import Constraint, Param

KIND_CODE = {"float": 0, "int": 1, "categorical": 2, "bool": 3, "ordinal": 4}
MAX_PARAMS = 10_000
MAX_CONSTRAINTS = 1_000
# Beyond this many conditions (or constraints), or conditions nested deeper, they
# run as one interpreted program (`metatune.space.program`) instead of one small
# graph each: XLA's compile time grows with the number of graphs stacked into one
# array, and with the length of a chain of them (on 2 CPU cores, a chain of 100
# conditions took 14-41 s to compile, 500 did not finish in 4 minutes).
_LOWERED_MAX = 64
_LOWERED_DEPTH = 8


class Space:
  """A search space: parameters with conditions, plus constraints, checked once.

  Args:
    params: the parameters, in any order (they are re-ordered parents first).
    constraints: expressions that must hold, or `Constraint` objects.
    forbidden: expressions that must not hold (forbidden combinations).
    name: a label for reports.
    source: the file the space came from, for error messages.

  Raises:
    SpaceError: naming the parameter (and file/line when known) and the problem.

  Example:
    >>> s = Space([model.Categorical("opt", ["sgd", "adam"]),
    ...            model.Float("sgd.momentum", 0.0, 0.99, when="opt == 'sgd'")])
    >>> s.names
    ('opt', 'sgd.momentum')
  """

  def __init__(self, params: Sequence[Param], constraints: Iterable[str | Constraint] = (),
               forbidden: Iterable[str | Constraint] = (), name: str = "space",
               source: str | None = None):
    if not isinstance(name, str):
      raise SpaceError(f"the space's name must be a string, got {type(name).__name__}", source)
    model.check_text(name, "the space's name", source)
    self.name = name
    self.source = source
    params = list(params)
    if len(params) > MAX_PARAMS:
      raise SpaceError(f"{len(params)} parameters, more than the limit of {MAX_PARAMS}", source)
    checked = [model.check_param(p) for p in params]
    if not checked:
      raise SpaceError("a space needs at least one parameter", source)
    given = {p.name for p in params if p.default is not None}
    by_name: dict[str, Param] = {}
    for p in checked:
      if p.name in by_name:
        first = by_name[p.name].where
        raise SpaceError(f"duplicate parameter name {p.name!r}" +
                         (f" (first defined at {first})" if first else ""),
                         p.where or source)
      by_name[p.name] = p

    conds: dict[str, ex.Node | None] = {}
    parents: dict[str, list[str]] = {}
    for p in checked:
      if p.condition is None:
        conds[p.name], parents[p.name] = None, []
        continue
      where = model._fmt_where(p.where, p.name) + ", condition"
      node = model.resolve_condition(p.condition, p.condition_text or ex.unparse(p.condition),
                                     by_name, where)
      refs = ex.names(node)
      if p.name in refs:
        raise SpaceError(f"the condition {p.condition_text!r} refers to the parameter itself",
                         model._fmt_where(p.where, p.name))
      conds[p.name], parents[p.name] = node, refs
    order = model.dependency_order(checked, parents)
    self.params: tuple[Param, ...] = tuple(by_name[n] for n in order)
    self.names: tuple[str, ...] = tuple(order)
    self.index: dict[str, int] = {n: i for i, n in enumerate(order)}
    self.conditions: tuple[ex.Node | None, ...] = tuple(conds[n] for n in order)
    self.parents: dict[str, list[str]] = parents

    cons = [c if isinstance(c, Constraint) else Constraint.require(c, source)
            for c in constraints]
    cons += [c if isinstance(c, Constraint) else Constraint.forbid(c, source) for c in forbidden]
    if len(cons) > MAX_CONSTRAINTS:
      raise SpaceError(f"{len(cons)} constraints and forbidden clauses, more than the limit of "
                       f"{MAX_CONSTRAINTS}", source)
    resolved = []
    for c in cons:
      node = model._Resolver(by_name, c.text, c.where or source).boolean(c.node)
      resolved.append((c, node))
    self.constraints: tuple[Constraint, ...] = tuple(c for c, _ in resolved)
    self._constraint_nodes = tuple(n for _, n in resolved)
    self._build_tables()
    self._check_defaults(given)

  # ----------------------------------------------------------------- metadata
  @property
  def num_params(self) -> int:
    return len(self.params)

  def __len__(self) -> int:
    return len(self.params)

  def __repr__(self) -> str:
    return (f"Space({self.name!r}, {self.num_params} parameters, "
            f"{len(self.constraints)} constraints)")

  def _build_tables(self):
    d = self.num_params
    cmax = max([p.num_choices for p in self.params] + [1])
    self.max_choices = cmax
    self.kind_code = np.array([KIND_CODE[p.kind] for p in self.params], np.int32)
    self.is_log = np.array([p.log for p in self.params], bool)
    lo = np.zeros(d)
    hi = np.ones(d)
    for i, p in enumerate(self.params):
      if p.kind == "float":
        lo[i], hi[i] = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
      elif p.kind == "int":
        lo[i], hi[i] = ((math.log(p.low - 0.5), math.log(p.high + 0.5)) if p.log else
                        (p.low, p.high + 1.0))
    self.t_low, self.t_high = lo, hi
    self.float_low = np.array([p.low if p.kind == "float" else -np.inf for p in self.params],
                              np.float32)
    self.float_high = np.array([p.high if p.kind == "float" else np.inf for p in self.params],
                               np.float32)
    self.int_low = np.array([p.low if p.kind == "int" else 0 for p in self.params], np.float64)
    self.int_high = np.array([p.high if p.kind == "int" else 0 for p in self.params], np.float64)
    # Discrete parameters: bin edges over [0, 1] from the (normalized) weights.
    edges = np.full((d, cmax + 1), 2.0)
    table = np.zeros((d, cmax))
    self.num_choices = np.array([p.num_choices for p in self.params], np.int32)
    for i, p in enumerate(self.params):
      if p.kind in ("categorical", "bool", "ordinal"):
        edges[i, :p.num_choices + 1] = model.bin_edges(p)
        if p.is_numeric or p.kind == "bool":
          table[i, :p.num_choices] = [float(c) for c in p.choices]
        else:
          table[i, :p.num_choices] = np.arange(p.num_choices)
    self.edges = edges
    self.mids = (edges[:, :-1] + np.minimum(edges[:, 1:], 1.0)) / 2
    self.choice_table = table
    self.defaults = {p.name: p.default for p in self.params}

  def _check_defaults(self, given: set[str]):
    """Refuses defaults the user gave that break a constraint together with the other defaults.

    Only constraints that name a parameter with a given default are checked: when
    every default involved is implied (a midpoint, a first choice), the default
    configuration is merely not feasible, which the sampler handles.
    """
    cfg = self.default_config()
    comp = {n: self._comparable_py(self.params[self.index[n]], v) for n, v in cfg.items()}
    lookup = reference.lookup_from(comp)
    for c, node in zip(self.constraints, self._constraint_nodes):
      if not all(r in comp for r in ex.names(node, guarded=False)):
        continue
      if bool(reference.evaluate(node, lookup, False)) == (c.mode == "require"):
        continue
      named = [r for r in ex.names(node) if r in cfg]
      mine = [r for r in named if r in given]
      if not mine:
        continue
      p = self.params[self.index[mine[0]]]
      values = ", ".join(f"{r}={cfg[r]!r}" + ("" if r in given else " (its implied default)")
                         for r in named)
      raise SpaceError(f"the default {p.default!r} of {p.name!r} breaks {c.label()}; the "
                       f"default configuration has {values}", model._fmt_where(p.where, p.name))

  @functools.cached_property
  def signature(self) -> str:
    """A stable hash of the space's structure (parameters, conditions, constraints)."""
    doc = {
        "params": [{
            "name": p.name, "kind": p.kind, "low": p.low, "high": p.high, "log": p.log,
            "choices": [repr(c) for c in p.choices], "weights": p.weights,
            "when": None if c is None else ex.unparse(c)
        } for p, c in zip(self.params, self.conditions)],
        "constraints": [[c.mode, ex.unparse(n)]
                        for c, n in zip(self.constraints, self._constraint_nodes)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

  # ------------------------------------------------- jittable value mappings
  def comparable(self, u: jax.Array) -> jax.Array:
    """Unit values -> the numbers conditions and constraints compare.

    Args:
      u: f32[..., D] unit values.

    Returns:
      f32[..., D]: floats and ints their value, categorical (and non-numeric
      ordinal) choices their index, numeric ordinals their value, bools 0/1.
    """
    u = jnp.asarray(u, jnp.float32)
    lo = jnp.asarray(self.t_low, jnp.float32)
    hi = jnp.asarray(self.t_high, jnp.float32)
    t = lo + u * (hi - lo)
    # Clipped like decode: exp(log(low)) in float32 can land a hair below low.
    fl = jnp.clip(jnp.where(self.is_log, jnp.exp(t), t), self.float_low, self.float_high)
    ilog = jnp.clip(jnp.round(jnp.exp(t)), self.int_low, self.int_high)
    ilin = jnp.clip(jnp.floor(t), self.int_low, self.int_high)
    iv = jnp.where(self.is_log, ilog, ilin)
    idx = self.choice_index(u)
    choice = jnp.take_along_axis(
        jnp.broadcast_to(jnp.asarray(self.choice_table, jnp.float32), u.shape[:-1] +
                         self.choice_table.shape), idx[..., None], axis=-1)[..., 0]
    kc = self.kind_code
    return jnp.where(kc == 0, fl, jnp.where(kc == 1, iv, choice))

  def choice_index(self, u: jax.Array) -> jax.Array:
    """i32[..., D]: the bin of each discrete parameter (0 for float and int)."""
    inner = jnp.asarray(self.edges[:, 1:-1], jnp.float32)
    idx = jnp.sum(u[..., None] >= inner, axis=-1)
    return jnp.minimum(idx, jnp.maximum(self.num_choices - 1, 0)).astype(jnp.int32)

  def canonical(self, u: jax.Array, active: jax.Array) -> jax.Array:
    """Snaps discrete parameters to their bin midpoint and zeroes inactive entries."""
    u = jnp.clip(jnp.asarray(u, jnp.float32), 0.0, 1.0)
    lo = jnp.asarray(self.t_low, jnp.float32)
    hi = jnp.asarray(self.t_high, jnp.float32)
    vals = self.comparable(u)
    ilog = (jnp.log(jnp.maximum(vals, 1e-30)) - lo) / (hi - lo)
    ilin = (vals + 0.5 - lo) / (hi - lo)
    iu = jnp.where(self.is_log, ilog, ilin)
    idx = self.choice_index(u)
    mid = jnp.take_along_axis(
        jnp.broadcast_to(jnp.asarray(self.mids, jnp.float32), u.shape[:-1] + self.mids.shape),
        idx[..., None], axis=-1)[..., 0]
    kc = self.kind_code
    out = jnp.where(kc == 0, u, jnp.where(kc == 1, iu, mid))
    return jnp.where(active, out, 0.0)

  def activity(self, u: jax.Array) -> jax.Array:
    """bool[..., D]: which parameters are active, following conditions in dependency order."""
    vals = self.comparable(u)
    return self.activity_from(vals)

  def activity_from(self, vals: jax.Array, upto: int | None = None) -> jax.Array:
    """`activity` from `comparable` values (of the first ``upto`` parameters only, if given)."""
    num = self.num_params if upto is None else upto
    if self._activity_program is not None:
      return program.run(self._activity_program, vals)[..., :num]
    cols: list[jax.Array] = []
    ones = jnp.ones(vals.shape[:-1], bool)
    preds = self._condition_preds
    for i in range(num):
      # Conditions read only parents, which come earlier in dependency order.
      cols.append(ones if preds[i] is None else preds[i](vals, _Columns(cols)))
    return jnp.stack(cols, axis=-1)

  @functools.cached_property
  def _activity_program(self) -> program.Program | None:
    num_conditional = sum(c is not None for c in self.conditions)
    if num_conditional <= _LOWERED_MAX and self.max_depth <= _LOWERED_DEPTH:
      return None
    return program.compile_program([(c, i, True) for i, c in enumerate(self.conditions)],
                                   self.index)

  @functools.cached_property
  def _constraint_program(self) -> program.Program | None:
    if len(self.constraints) <= _LOWERED_MAX:
      return None
    items = []
    for i, (c, node) in enumerate(zip(self.constraints, self._constraint_nodes)):
      # ok = not applies or (holds if required else fails), as in `constraint_ok_from`.
      ok = node if c.mode == "require" else ex.Not(node.pos, node)
      refs = ex.names(node, guarded=False)
      if refs:
        applies = ex.Logic(node.pos, "and", tuple(ex.Call(node.pos, "active", (ex.Name(0, r),))
                                                  for r in refs))
        ok = ex.Logic(node.pos, "or", (ex.Not(node.pos, applies), ok))
      items.append((ok, i, False))
    return program.compile_program(items, self.index)

  @functools.cached_property
  def _condition_preds(self):
    return [None if c is None else lowering.lower_predicate(c, self.index, False)
            for c in self.conditions]

  @functools.cached_property
  def _constraint_preds(self):
    preds = []
    for c, node in zip(self.constraints, self._constraint_nodes):
      refs = [self.index[n] for n in ex.names(node, guarded=False)]
      preds.append((c.mode, np.asarray(refs, np.int32),
                    lowering.lower_predicate(node, self.index, False)))
    return preds

  def constraint_ok(self, u: jax.Array, active: jax.Array) -> jax.Array:
    """bool[..., C]: whether each constraint holds (vacuously when a parameter it names is inactive)."""
    return self.constraint_ok_from(self.comparable(u), active)

  def constraint_ok_from(self, vals: jax.Array, active: jax.Array,
                         which: Sequence[int] | None = None) -> jax.Array:
    """`constraint_ok` from `comparable` values (of the constraints ``which`` only, if given)."""
    if self._constraint_program is not None:
      ok = program.run(self._constraint_program, vals, active)
      return ok if which is None else ok[..., np.asarray(which, np.int32)]
    outs = []
    preds = self._constraint_preds
    for mode, refs, pred in (preds if which is None else [preds[c] for c in which]):
      applies = jnp.all(active[..., refs], axis=-1) if refs.size else jnp.ones(
          vals.shape[:-1], bool)
      hit = pred(vals, active)
      outs.append(~applies | (hit if mode == "require" else ~hit))
    if not outs:
      return jnp.ones(vals.shape[:-1] + (0,), bool)
    return jnp.stack(outs, axis=-1)

  def feasible(self, u: jax.Array, active: jax.Array) -> jax.Array:
    """bool[...]: all constraints hold."""
    return jnp.all(self.constraint_ok(u, active), axis=-1)

  @functools.cached_property
  def _violation_fns(self):
    fns = []
    for (mode, refs, _), node in zip(self._constraint_preds, self._constraint_nodes):
      fns.append((mode, refs, lowering.lower_violation(node, self.index)))
    return fns

  def violation(self, u: jax.Array, active: jax.Array) -> jax.Array:
    """f32[...]: how far a configuration is from satisfying the constraints (0 when feasible).

    A guide for searching (see `lowering.lower_violation`), not a measure to report.
    """
    vals = self.comparable(u)
    total = jnp.zeros(vals.shape[:-1], jnp.float32)
    for mode, refs, fn in self._violation_fns:
      applies = jnp.all(active[..., refs], axis=-1) if refs.size else True
      to_true, to_false = fn(vals, active)
      v = to_true if mode == "require" else to_false
      total = total + jnp.where(applies, jnp.nan_to_num(v, nan=1e6, posinf=1e6), 0.0)
    return total

  # ---------------------------------------------------------- Python side
  def _comparable_py(self, p: Param, v: Any) -> float:
    if p.kind in ("float", "int"):
      return float(v)
    idx = model.choice_index(p, v)
    if p.kind == "bool":
      return float(idx)
    return float(p.choices[idx]) if p.is_numeric else float(idx)

  def check_value(self, p: Param, v: Any, where: str | None = None) -> Any:
    """Checks and normalizes one value of parameter ``p``; raises SpaceError naming it."""
    # The common cases first: validating a large space checks millions of values.
    if p.kind == "float" and type(v) is float and p.low <= v <= p.high:
      return v
    if p.kind == "int" and type(v) is int and p.low <= v <= p.high:
      return v
    loc = model._fmt_where(where, p.name)
    if p.kind in ("float", "int"):
      if isinstance(v, str):
        try:
          v = float(v)
        except ValueError:
          raise SpaceError(f"expected a number, got {model.short(v)}", loc) from None
      if not model._is_num(v) or not model.is_finite(v):
        raise SpaceError(f"expected a finite number, got {model.short(v)}", loc)
      if p.kind == "int":
        if float(v) != int(v):
          raise SpaceError(f"expected a whole number, got {v!r}", loc)
        v = int(v)
      if not p.low <= v <= p.high:
        raise SpaceError(f"value {v!r} is outside [{p.low}, {p.high}]", loc)
      return float(v) if p.kind == "float" else v
    idx = model.choice_index(p, v)
    if idx is None and model._is_num(v):
      idx = next((i for i, c in enumerate(p.choices) if model._is_num(c) and c == v), None)
    if idx is None:
      raise SpaceError(f"value {model.short(v)} is not one of {model.short(list(p.choices))}",
                       loc)
    return p.choices[idx]

  def validate(self, config: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """Checks a configuration of active parameters and returns it normalized, in space order.

    Args:
      config: parameter name -> value, active parameters only.
      where: a location for messages (e.g. ``configs.jsonl:3``).

    Returns:
      The configuration with values of the parameters' own types.

    Raises:
      SpaceError: unknown parameter, bad value, an active parameter missing, an
        inactive one set, or a violated constraint.
    """
    if not isinstance(config, Mapping):
      raise SpaceError(f"a configuration must be a mapping, got {type(config).__name__}", where)
    for k in config:
      if k not in self.index:
        raise SpaceError(f"unknown parameter {k!r}{model.did_you_mean(str(k), self.index)}",
                         where)
    out: dict[str, Any] = {}
    comp: dict[str, float] = {}
    lookup = reference.lookup_from(comp)
    for p, cond in zip(self.params, self.conditions):
      active = cond is None or bool(reference.evaluate(cond, lookup, False))
      if active and p.name not in config:
        why = f" (its condition {p.condition_text!r} holds)" if cond is not None else ""
        raise SpaceError(f"active parameter {p.name!r} is missing{why}", where)
      if not active and p.name in config:
        raise SpaceError(f"parameter {p.name!r} is set but inactive: its condition "
                         f"{p.condition_text!r} does not hold", where)
      if active:
        out[p.name] = self.check_value(p, config[p.name], where)
        comp[p.name] = self._comparable_py(p, out[p.name])
    for c, node in zip(self.constraints, self._constraint_nodes):
      refs = ex.names(node, guarded=False)
      if not all(r in comp for r in refs):
        continue
      hit = bool(reference.evaluate(node, lookup, False))
      if hit != (c.mode == "require"):
        vals = ", ".join(f"{r}={out[r]!r}" for r in ex.names(node) if r in out)
        raise SpaceError(f"configuration violates {c.label()} with {vals}", where)
    return out

  def encode(self, config: Mapping[str, Any], where: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """A configuration -> ``(values f32[D], active bool[D])``, after `validate`."""
    cfg = self.validate(config, where)
    u = np.zeros(self.num_params, np.float64)
    act = np.zeros(self.num_params, bool)
    for name, v in cfg.items():
      i = self.index[name]
      p = self.params[i]
      act[i] = True
      lo, hi = self.t_low[i], self.t_high[i]
      if p.kind == "float":
        u[i] = ((math.log(v) if p.log else v) - lo) / (hi - lo)
      elif p.kind == "int":
        u[i] = ((math.log(v) if p.log else v + 0.5) - lo) / (hi - lo)
      else:
        u[i] = self.mids[i, model.choice_index(p, v)]
    return u.astype(np.float32), act

  def decode(self, values: Any, active: Any) -> dict[str, Any]:
    """``(values f32[D], active bool[D])`` -> configuration of the active parameters."""
    values = np.asarray(values, np.float32)
    active = np.asarray(active, bool)
    if values.shape != (self.num_params,) or active.shape != (self.num_params,):
      raise SpaceError(f"expected values and active of shape ({self.num_params},), got "
                       f"{values.shape} and {active.shape}")
    return self.decode_batch(values[None], active[None])[0]

  def decode_batch(self, values: Any, active: Any) -> list[dict[str, Any]]:
    """f32[N, D], bool[N, D] -> N configurations (active parameters, native types)."""
    values = np.asarray(values, np.float32)
    active = np.asarray(active, bool)
    comp = np.asarray(jax.device_get(_comparable_jit(self, values)), np.float64)
    idx = np.asarray(jax.device_get(_choice_index_jit(self, values)))
    # Column by column in numpy, then rows as dicts of the active entries: a
    # Python loop over every value took minutes on a 10,000-parameter space.
    cols = []
    for i, p in enumerate(self.params):
      if p.kind == "float":
        cols.append(np.clip(comp[:, i], p.low, p.high).tolist())
      elif p.kind == "int":
        cols.append([int(v) for v in comp[:, i].tolist()])
      else:
        choices = np.empty(p.num_choices, object)
        choices[:] = list(p.choices)
        cols.append(choices[idx[:, i]].tolist())
    names = self.names
    return [dict(itertools.compress(zip(names, row), act))
            for row, act in zip(zip(*cols), active.tolist())]

  def default_config(self) -> dict[str, Any]:
    """The defaults of the parameters that are active when every parameter takes its default."""
    return self.fill({})

  def fill(self, values: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration of this space from ``values`` where they fit, defaults elsewhere.

    Parameters are taken in dependency order: an active one takes its entry of ``values``
    (numbers clipped into its range, whole numbers rounded for ints; a label it does not
    have, a wrong type or an absent entry give its default), an inactive one is left out.
    Entries for names this space lacks are ignored. Constraints are not checked (`validate`).
    Used to carry configurations of one space into another that shares some parameters.
    """
    comp: dict[str, float] = {}
    lookup = reference.lookup_from(comp)
    cfg = {}
    for p, cond in zip(self.params, self.conditions):
      if cond is not None and not reference.evaluate(cond, lookup, False):
        continue
      v = values.get(p.name, p.default)
      if p.kind in ("float", "int") and model._is_num(v) and model.is_finite(v):
        v = min(max(float(v), p.low), p.high)
        v = int(round(v)) if p.kind == "int" else v
      try:
        v = self.check_value(p, v)
      except SpaceError:
        v = p.default
      cfg[p.name] = v
      comp[p.name] = self._comparable_py(p, v)
    return cfg

  def depth(self) -> dict[str, int]:
    """Nesting depth of each parameter (0 for unconditional ones)."""
    out: dict[str, int] = {}
    for n in self.names:
      out[n] = 1 + max((out[p] for p in self.parents[n]), default=-1)
    return out

  @functools.cached_property
  def max_depth(self) -> int:
    """The longest chain of conditions (0 when no parameter is conditional)."""
    return max(self.depth().values())


class _Columns:
  """Indexes a list of columns like ``array[..., i]`` without stacking them."""

  def __init__(self, cols: list[jax.Array]):
    self.cols = cols

  def __getitem__(self, index):
    _, i = index
    return self.cols[i]


@functools.partial(jax.jit, static_argnums=0)
def _comparable_jit(space: Space, values):
  return space.comparable(values)


@functools.partial(jax.jit, static_argnums=0)
def _choice_index_jit(space: Space, values):
  return space.choice_index(values)
