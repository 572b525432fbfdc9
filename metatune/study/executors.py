"""Where trials run: in the driver (inline), in local worker processes, or on a Ray cluster.

The driver owns the storage and the pruner. An executor starts trials, passes
the trials' intermediate reports and pruning questions to the driver's
`Handlers`, hands back each result, and kills a trial that runs past its time.
Local worker processes live in `metatune.study.processes`.
"""

from __future__ import annotations

import faulthandler
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Mapping, Protocol

from metatune.study import worker
from metatune.study.errors import StudyError

EXECUTORS = ("process", "ray", "inline")


class Handlers(Protocol):
  """The driver's side: what an executor calls as trials talk."""

  def on_report(self, number: int, step: float, value: float) -> None:
    ...

  def on_should_prune(self, number: int) -> bool:
    ...

  def on_result(self, result: dict[str, Any], env: dict[str, Any] | None) -> None:
    ...


def crash_result(number: int, why: str) -> dict[str, Any]:
  """The result of a trial whose process died under it (reason ``crashed``)."""
  now = time.time()
  return {"number": number, "state": "failed", "value": None, "reason": "crashed", "error": why,
          "started": now, "finished": now}


class Executor:
  """The interface: ``submit`` a trial, ``poll`` for events, ``kill`` one, ``close``.

  A result handed to ``on_result`` may carry ``log`` (the last part of what the
  trial printed) and ``log_bytes`` (how much it printed in all); the study keeps them.

  Attributes:
    name: recorded with each trial it runs.
    capacity: most trials at once.
    started: trial number -> when its objective began (worker start-up excluded,
      so a per-trial time limit counts the objective only).
  """

  name: str = "custom"
  capacity: int = 1
  supports_timeout: bool = True

  def start(self, handlers: Handlers) -> None:
    self.handlers = handlers
    self.started: dict[int, float] = {}

  def free(self, num_running: int) -> int:
    """How many more trials to submit now, given ``num_running`` submitted and not finished."""
    return self.capacity - num_running

  def submit(self, spec: Mapping[str, Any]) -> None:
    raise NotImplementedError

  def poll(self, timeout: float) -> None:
    """Waits up to ``timeout`` seconds and dispatches what arrived to the handlers."""
    raise NotImplementedError

  def kill(self, number: int) -> dict[str, Any] | None:
    """Stops a running trial now; no result will come for it.

    Returns:
      What it printed (``log``, ``log_bytes``), where the executor keeps it, else None.
    """
    raise NotImplementedError

  def close(self) -> None:
    pass


# -------------------------------------------------------------------- inline
class _DirectChannel(worker.Channel):

  def __init__(self, handlers: Handlers):
    self.handlers = handlers

  def report(self, number, step, value):
    self.handlers.on_report(number, step, value)

  def should_prune(self, number):
    return self.handlers.on_should_prune(number)


class _TailWriter(io.TextIOBase):
  """A text stream that keeps the last ``limit`` characters written to it."""

  def __init__(self, limit: int):
    super().__init__()
    self.limit = limit
    self.parts: list[str] = []
    self.size = 0
    self.num_bytes = 0

  def writable(self):
    return True

  def write(self, text):
    self.num_bytes += len(text.encode("utf-8", "replace"))
    self.parts.append(text)
    self.size += len(text)
    if self.size > 2 * self.limit:  # trimmed now and then, not on every write
      kept = "".join(self.parts)[-self.limit:] if self.limit else ""
      self.parts, self.size = [kept], len(kept)
    return len(text)

  def text(self) -> str:
    return "".join(self.parts)[-self.limit:] if self.limit else ""


class InlineExecutor(Executor):
  """Runs each trial in the driver's own thread, one at a time: fast, and not isolated.

  A crash of the objective (a segfault, ``os._exit``, the kernel's OOM killer) is
  a crash of the driver, and there are no time or memory limits. For objectives
  that cannot leave the process (they hold a dataset in memory, or are closures
  that cannot be pickled) and for measuring the study's own overhead. What a
  trial prints through Python's ``sys.stdout`` and ``sys.stderr`` is kept with it
  (the last ``log_limit_kb`` KiB); output of C code and child processes is not
  caught. A study resumed after such a crash asks the configuration again, and
  fails it as ``crashed`` if the driver dies under it a second time.

  Example:
    >>> ex = InlineExecutor(lambda trial: trial.config["x"] ** 2)
  """

  name = "inline"
  supports_timeout = False

  def __init__(self, objective: Callable | str, log_limit_kb: float = 32.0):
    self.objective = worker.load_objective(objective) if isinstance(objective, str) else objective
    self.capacity = 1
    self.log_limit = int(log_limit_kb * 1024)
    self._todo: list[Mapping[str, Any]] = []

  def submit(self, spec):
    self._todo.append(spec)

  def poll(self, timeout):
    del timeout
    if not self._todo:
      return
    spec = self._todo.pop(0)
    tail = _TailWriter(self.log_limit)
    stdout, stderr = sys.stdout, sys.stderr
    # A segfault should at least say where: faulthandler prints the Python stack.
    tracing = faulthandler.is_enabled()
    if not tracing:
      try:
        faulthandler.enable(file=sys.__stderr__)
      except (AttributeError, ValueError, io.UnsupportedOperation):
        tracing = True  # no real stderr to write to: leave it off
    sys.stdout = sys.stderr = tail
    try:
      result = worker.run_trial(self.objective, spec, _DirectChannel(self.handlers))
    finally:
      sys.stdout, sys.stderr = stdout, stderr
      if not tracing:
        faulthandler.disable()
    self.handlers.on_result({**result, "log": tail.text(), "log_bytes": tail.num_bytes}, None)

  def kill(self, number):
    raise StudyError("inline trials cannot be stopped from outside", "executor")


# ------------------------------------------------------------------------ Ray
class RayExecutor(Executor):
  """Trials as Ray tasks; the driver (this process) keeps the storage and the pruner.

  Tasks send reports over an authenticated socket to the driver, so the driver's
  address must be reachable from the cluster's nodes.

  Args:
    objective: a callable (Ray serializes it) or ``"module:function"`` (imported
      on the worker; the driver's ``sys.path`` folders that exist there are added).
    num_workers: most trials at once.
    address: the cluster (``ray.init(address=...)``); None starts a local instance.
    memory_limit_mb: each task's memory request (Ray schedules on it, and its
      memory monitor kills tasks that exceed the node's memory).
    init_kwargs: more ``ray.init`` arguments for a local instance (e.g. ``num_cpus``).

  Raises:
    StudyError: Ray is not installed or cannot connect.

  Example:
    >>> study.optimize("train:objective", 100, num_workers=8, executor="ray",
    ...                ray_address="auto")  # doctest: +SKIP

  What tasks print stays in Ray's worker logs (not kept with the trials).
  """

  name = "ray"

  def __init__(self, objective: Callable | str, num_workers: int = 1, address: str | None = None,
               memory_limit_mb: float | None = None, init_kwargs: Mapping[str, Any] | None = None):
    try:
      import ray  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise StudyError("the ray executor needs Ray: pip install 'metatune[ray]'",
                       "executor") from None
    self.ray = ray
    self.capacity = num_workers
    self.payload = worker.pack_objective(objective)
    self._started_ray = False
    if not ray.is_initialized():
      try:
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        ray.init(address=address, **kwargs)
      except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError...
        raise StudyError(f"cannot start or reach Ray at {address or 'a local instance'}: {e}",
                         "--address") from None
      self._started_ray = True
    host = "127.0.0.1" if address is None else ray.util.get_node_ip_address()
    self.authkey = os.urandom(32)
    self.listener = multiprocessing.connection.Listener(
        ("127.0.0.1" if address is None else "0.0.0.0", 0), authkey=self.authkey)
    self.address = (host, self.listener.address[1])
    self._accepted: queue.Queue = queue.Queue()
    self._new: list = []  # connections that have not said hello yet
    self.conns: dict[int, Any] = {}
    self.refs: dict[Any, int] = {}
    options = {"num_cpus": 1, "max_retries": 0}
    if memory_limit_mb:
      options["memory"] = int(memory_limit_mb * 2**20)
    self.remote = ray.remote(**options)(worker.ray_main)
    threading.Thread(target=self._accept, daemon=True, name="metatune-ray-accept").start()

  def _accept(self):
    while True:
      try:
        self._accepted.put(self.listener.accept())
      except (OSError, EOFError, multiprocessing.AuthenticationError):
        if getattr(self.listener, "_listener", None) is None:
          return  # closed

  def submit(self, spec):
    ref = self.remote.remote(self.payload, dict(spec), self.address, self.authkey, list(sys.path))
    self.refs[ref] = spec["number"]

  def _drain(self, conn, number: int | None) -> int | None:
    try:
      while conn.poll():
        msg = json.loads(conn.recv_bytes())
        op = msg["op"]
        if op == "hello":
          number = msg["number"]
          self.conns[number] = conn
          self.started[number] = time.time()
        elif op == "report":
          self.handlers.on_report(msg["number"], msg["step"], msg["value"])
        elif op == "should_prune":
          answer = bool(self.handlers.on_should_prune(msg["number"]))
          conn.send_bytes(json.dumps({"op": "prune", "answer": answer}).encode())
    except (EOFError, OSError):
      conn.close()
      if number is not None:
        self.conns.pop(number, None)
      return None
    return number

  def poll(self, timeout):
    while not self._accepted.empty():
      self._new.append(self._accepted.get())
    conns = self._new + list(self.conns.values())
    ready = multiprocessing.connection.wait(conns, min(timeout, 0.05)) if conns else []
    if not conns:
      time.sleep(min(timeout, 0.02))
    for conn in ready:
      if conn in self._new:
        self._new.remove(conn)
        self._drain(conn, None)
      else:
        number = next((n for n, c in self.conns.items() if c is conn), None)
        self._drain(conn, number)
    if not self.refs:
      return
    done, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
    for ref in done:
      number = self.refs.pop(ref)
      self.started.pop(number, None)
      conn = self.conns.pop(number, None)
      if conn is not None:  # the task closed it before returning: read what is left
        self._drain(conn, number)
        conn.close()
      try:
        result = json.loads(self.ray.get(ref))
        env = result.pop("env", None)
      except Exception as e:  # the task's process died (OOM, node lost, cancelled)
        result, env = crash_result(number, f"the Ray task failed: {type(e).__name__}: {e}"), None
      self.handlers.on_result(result, env)

  def kill(self, number):
    self.started.pop(number, None)
    for ref, n in list(self.refs.items()):
      if n == number:
        self.ray.cancel(ref, force=True)
        del self.refs[ref]
    conn = self.conns.pop(number, None)
    if conn is not None:
      conn.close()

  def close(self):
    for ref in list(self.refs):
      self.ray.cancel(ref, force=True)
    self.refs.clear()
    for conn in self._new + list(self.conns.values()):
      conn.close()
    self.listener.close()
    if self._started_ray:
      self.ray.shutdown()
