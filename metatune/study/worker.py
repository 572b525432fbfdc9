"""The worker side of a study: the `Trial` an objective sees, and running one trial safely.

Nothing here imports jax: a worker process loads only what its objective needs.
Workers talk to the driver with JSON messages over a `multiprocessing`
connection (a socket pair for local processes, see `metatune.study.processes`;
a TCP socket for Ray tasks).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import pickle
import sys
import time
import traceback
from typing import Any, Callable, Mapping

from metatune.study.errors import Diverged, StudyError, TrialPruned


class Channel:
  """How a trial reaches the driver: ``report`` (no answer) and ``should_prune`` (answered)."""

  def report(self, number: int, step: float, value: float) -> None:
    raise NotImplementedError

  def should_prune(self, number: int) -> bool:
    raise NotImplementedError


class Trial:
  """What an objective receives: the configuration to evaluate and a line to the study.

  Attributes:
    number: the trial number (0, 1, ... in the order trials were asked).
    config: the active parameters, ``name -> value``.
    seed: a seed for the objective's own randomness, derived from the study seed and
      the number, so a rerun of the study evaluates the same way.

  Example:
    >>> def objective(trial):  # doctest: +SKIP
    ...   loss = train(trial.config, seed=trial.seed, epochs=1)
    ...   trial.report(1, loss)
    ...   if trial.should_prune():
    ...     raise TrialPruned()
    ...   return loss
  """

  def __init__(self, number: int, config: Mapping[str, Any], seed: int, channel: Channel,
               pruning: bool = True):
    self.number = number
    self.config = dict(config)
    self.seed = seed
    self._channel = channel
    self._pruning = pruning
    self._last_step: float | None = None

  @property
  def params(self) -> dict[str, Any]:
    """The same as ``config`` (the name Optuna users know)."""
    return self.config

  def report(self, step: float, value: float) -> None:
    """Records an intermediate value (the first objective, natural direction) at ``step``.

    Args:
      step: the fidelity reached, e.g. the epoch (a number; later reports, larger steps).
      value: the objective at that step. A NaN or infinite value marks the trial as
        diverged: `should_prune` then says yes and the trial is recorded as failed.

    Raises:
      StudyError: ``step`` or ``value`` is not a number.
    """
    try:
      step_f, value_f = _number(step, "step"), _number(value, "value")
    except TypeError:
      raise StudyError(f"report(step, value) needs two numbers, got step={describe(step)}, "
                       f"value={describe(value)}", f"trial {self.number}") from None
    if not math.isfinite(step_f):
      raise StudyError(f"report step must be finite, got {step!r}", f"trial {self.number}")
    self._last_step = step_f
    self._channel.report(self.number, step_f, value_f)

  def should_prune(self) -> bool:
    """Whether the study's pruner stops this trial at its last reported step.

    Returns:
      True when the objective should stop (raise `TrialPruned`); always False
      before the first report or when the study has no pruner, except for a
      diverged trial.
    """
    if self._last_step is None:
      return False
    return self._channel.should_prune(self.number)


# ---------------------------------------------------------------- objectives
def load_objective(path: str) -> Callable[[Trial], Any]:
  """Imports an objective from ``module:function`` or ``path/to/file.py:function``.

  Raises:
    StudyError: naming the path, when the module or the function cannot be found.

  Example:
    >>> fn = load_objective("math:sqrt")
    >>> fn(4.0)
    2.0
  """
  where = f"objective {path!r}"
  module_name, sep, func = path.rpartition(":")
  if not sep or not module_name or not func:
    raise StudyError("expected 'module:function' or 'file.py:function'", where)
  try:
    if module_name.endswith(".py"):
      if not os.path.isfile(module_name):
        raise StudyError(f"the file {module_name} does not exist", where)
      name = "_metatune_objective_" + os.path.splitext(os.path.basename(module_name))[0]
      spec = importlib.util.spec_from_file_location(name, module_name)
      module = importlib.util.module_from_spec(spec)
      sys.modules[name] = module
      spec.loader.exec_module(module)
    else:
      module = importlib.import_module(module_name)
  except StudyError:
    raise
  except Exception as e:  # any import-time failure of user code
    raise StudyError(f"cannot import {module_name}: {type(e).__name__}: {e}", where) from None
  fn = getattr(module, func, None)
  if fn is None:
    raise StudyError(f"{module_name} has no attribute {func!r}", where)
  if not callable(fn):
    raise StudyError(f"{module_name}.{func} is not callable", where)
  return fn


def pack_objective(objective: Callable | str) -> dict[str, Any]:
  """What travels to a worker: an import path, or the callable serialized by value or reference.

  cloudpickle (when installed) also sends closures and lambdas; plain pickle
  sends module-level functions. This is transport to a worker, never storage.

  Raises:
    StudyError: the callable cannot be serialized.
  """
  if isinstance(objective, str):
    load_objective(objective)  # fail in the driver, before any worker starts
    return {"path": objective}
  if not callable(objective):
    raise StudyError(f"expected a callable or 'module:function', got {type(objective).__name__}",
                     "objective")
  try:
    import cloudpickle  # pylint: disable=import-outside-toplevel
    module = sys.modules.get(getattr(objective, "__module__", None) or "")
    if module is not None and not _importable(module.__name__):
      # Loaded from a file path (not from sys.path): a worker could not import it by name.
      cloudpickle.register_pickle_by_value(module)
    return {"pickled": cloudpickle.dumps(objective)}
  except ImportError:
    pass
  except Exception as e:  # cloudpickle raises many kinds
    raise StudyError(f"cannot send {objective!r} to worker processes ({e}); define it at module "
                     "level, pass 'module:function', or use executor='inline'", "objective"
                     ) from None
  try:
    return {"pickled": pickle.dumps(objective)}
  except Exception as e:
    raise StudyError(f"cannot send {objective!r} to worker processes ({e}); define it at module "
                     "level, pass 'module:function', or use executor='inline'", "objective"
                     ) from None


def _importable(name: str) -> bool:
  """Whether a fresh interpreter with this ``sys.path`` finds module ``name``'s package."""
  if name in ("__main__", "__mp_main__"):
    return True  # cloudpickle sends functions of the main script by value anyway
  top = name.split(".")[0]
  if top in sys.builtin_module_names:
    return True
  for finder in sys.meta_path:  # as an import would search, minus sys.modules
    find = getattr(finder, "find_spec", None)
    try:
      if find is not None and find(top, None) is not None:
        return True
    except (ImportError, ValueError, TypeError):
      continue
  return False


def unpack_objective(payload: Mapping[str, Any]) -> Callable:
  if "path" in payload:
    return load_objective(payload["path"])
  return pickle.loads(payload["pickled"])


# ------------------------------------------------------------------- running
def plain_value(value: Any, where: str) -> Any:
  """A returned value as JSON-ready data: a float, or a dict of floats (and labels).

  A number is an int, a float or a numeric scalar (numpy, jax); a bool, a string
  or bytes is not, although Python would convert them.

  Raises:
    TypeError: naming ``where`` and what it got, when a value is neither a number
      nor (in a dict) a label.

  Example:
    >>> plain_value({"loss": 1, "note": "ok"}, "value")
    {'loss': 1.0, 'note': 'ok'}
  """
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise TypeError(f"{where}: dict keys must be strings, got {k!r}")
      if v is None or isinstance(v, (str, bool)):
        out[k] = v
      elif _is_bool_scalar(v):
        out[k] = bool(v)  # a numpy or jax bool: a label like a Python bool
      else:
        out[k] = _number(v, f"{where}[{k!r}]")
    return out
  return _number(value, where)


def describe(value: Any) -> str:
  """A value's type and a short repr, for messages: ``str '0.5'``."""
  text = repr(value)
  return f"{type(value).__name__} {text[:77] + '...' if len(text) > 80 else text}"


def _is_bool_scalar(v: Any) -> bool:
  return getattr(getattr(v, "dtype", None), "kind", None) == "b" and getattr(v, "ndim", 0) == 0


def _number(v: Any, where: str) -> float:
  why = f"{where} is {describe(v)}, not a number"
  # float() would take these (True -> 1.0, "0.5" -> 0.5): a bug in the objective, not a value.
  if isinstance(v, (str, bytes, bytearray, bool)) or _is_bool_scalar(v):
    raise TypeError(why)
  # Arrays must be scalars of a numeric dtype (bfloat16 and float8 have kind "V").
  if getattr(v, "ndim", 0) != 0 or getattr(getattr(v, "dtype", None), "kind", "f") in "USOMmc":
    raise TypeError(why)
  try:
    return float(v)
  except Exception:  # TypeError, ValueError, or anything a custom __float__ raises
    raise TypeError(why) from None


def run_trial(objective: Callable, spec: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
  """Runs ``objective`` on one trial and turns any outcome into a result record.

  Args:
    objective: the user's ``objective(trial)``.
    spec: ``number``, ``config``, ``seed``, ``pruning``.
    channel: the line to the driver.

  Returns:
    ``{"number", "state": complete | failed | pruned, "value", "reason", "error",
    "started", "finished"}``; exceptions never escape (except KeyboardInterrupt).
  """
  trial = Trial(spec["number"], spec["config"], spec["seed"], channel, spec.get("pruning", True))
  out: dict[str, Any] = {"number": spec["number"], "state": "complete", "value": None,
                         "reason": None, "error": None, "started": time.time()}
  try:
    raw = objective(trial)
  except TrialPruned:
    out["state"] = "pruned"
  except Diverged as e:
    out.update(state="failed", reason="diverged", error=str(e) or "Diverged")
  except MemoryError:
    out.update(state="failed", reason="out_of_memory", error=traceback.format_exc())
  except (Exception, SystemExit):  # user code: every failure is data
    out.update(state="failed", reason="exception", error=traceback.format_exc())
  else:
    try:
      out["value"] = plain_value(raw, "the returned value")
    except TypeError as e:
      out.update(state="failed", reason="invalid_return", error=str(e))
  out["finished"] = time.time()
  return out


# ------------------------------------------------------------------ channels
class PipeChannel(Channel):
  """A channel over a `multiprocessing` connection, JSON messages."""

  def __init__(self, conn):
    self.conn = conn

  def send(self, msg: dict[str, Any]):
    self.conn.send_bytes(json.dumps(msg).encode())

  def recv(self) -> dict[str, Any]:
    return json.loads(self.conn.recv_bytes())

  def report(self, number, step, value):
    self.send({"op": "report", "number": number, "step": step, "value": value})

  def should_prune(self, number):
    self.send({"op": "should_prune", "number": number})
    msg = self.recv()
    if msg.get("op") != "prune":
      raise RuntimeError(f"unexpected message from the driver: {msg}")
    return bool(msg["answer"])


# --------------------------------------------------------------- a Ray task
def ray_main(payload: Mapping[str, Any], spec: Mapping[str, Any], address: tuple[str, int],
             authkey: bytes, sys_path: list[str]) -> str:
  """A Ray task: one trial, reports over a socket to the driver; returns the result as JSON.

  The driver's ``sys.path`` entries that exist here are added first, so objectives
  defined in the driver's folders import on the workers of a local cluster.
  """
  from multiprocessing.connection import Client  # pylint: disable=import-outside-toplevel
  for p in sys_path:
    if p not in sys.path and os.path.isdir(p):
      sys.path.append(p)
  from metatune.study import provenance  # pylint: disable=import-outside-toplevel
  env = provenance.environment()
  conn = Client(tuple(address), authkey=authkey)
  channel = PipeChannel(conn)
  channel.send({"op": "hello", "number": spec["number"], "pid": os.getpid()})
  try:
    objective = unpack_objective(payload)
    result = run_trial(objective, spec, channel)
  except Exception as e:  # the objective could not be loaded here
    result = {"number": spec["number"], "state": "failed", "value": None, "reason": "exception",
              "error": f"cannot load the objective on this worker: {type(e).__name__}: {e}",
              "started": time.time(), "finished": time.time()}
  finally:
    conn.close()
  return json.dumps({**result, "env": env})
