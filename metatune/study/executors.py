"""Where trials run: in the driver (inline), in local worker processes, or on a Ray cluster.

The driver owns the storage and the pruner. An executor starts trials, passes
the trials' intermediate reports and pruning questions to the driver's
`Handlers`, hands back each result, and kills a trial that runs past its time.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
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


def _crash(number: int, why: str) -> dict[str, Any]:
  now = time.time()
  return {"number": number, "state": "failed", "value": None, "reason": "crashed", "error": why,
          "started": now, "finished": now}


class Executor:
  """The interface: ``submit`` a trial, ``poll`` for events, ``kill`` one, ``close``.

  Attributes:
    capacity: most trials at once.
    started: trial number -> when its objective began (worker start-up excluded,
      so a per-trial time limit counts the objective only).
  """

  capacity: int = 1
  supports_timeout: bool = True

  def start(self, handlers: Handlers) -> None:
    self.handlers = handlers
    self.started: dict[int, float] = {}

  def submit(self, spec: Mapping[str, Any]) -> None:
    raise NotImplementedError

  def poll(self, timeout: float) -> None:
    """Waits up to ``timeout`` seconds and dispatches what arrived to the handlers."""
    raise NotImplementedError

  def kill(self, number: int) -> None:
    """Stops a running trial now; no result will come for it."""
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


class InlineExecutor(Executor):
  """Runs each trial in the driver's own thread, one at a time (no timeouts, no isolation).

  For objectives that cannot leave the process (they hold a dataset in memory,
  or are closures without cloudpickle) and for measuring the study's own overhead.

  Example:
    >>> ex = InlineExecutor(lambda trial: trial.config["x"] ** 2)
  """

  supports_timeout = False

  def __init__(self, objective: Callable | str):
    self.objective = worker.load_objective(objective) if isinstance(objective, str) else objective
    self.capacity = 1
    self._todo: list[Mapping[str, Any]] = []
    self._env: dict[str, Any] | None = None

  def submit(self, spec):
    self._todo.append(spec)

  def poll(self, timeout):
    del timeout
    if not self._todo:
      return
    spec = self._todo.pop(0)
    result = worker.run_trial(self.objective, spec, _DirectChannel(self.handlers))
    self.handlers.on_result(result, None)

  def kill(self, number):
    raise StudyError("inline trials cannot be stopped from outside", "executor")


# ------------------------------------------------------------------ processes
class _Worker:

  def __init__(self, ctx, payload, memory_limit_mb):
    parent, child = ctx.Pipe(duplex=True)
    self.proc = ctx.Process(target=worker.process_main,
                            args=(child, payload, memory_limit_mb, os.getpid()), daemon=True,
                            name="metatune-worker")
    self.proc.start()
    child.close()
    self.conn = parent
    self.channel = worker.PipeChannel(parent)
    self.number: int | None = None
    self.env: dict[str, Any] | None = None
    self.dead = False

  def kill(self):
    if self.proc.is_alive():
      try:
        os.killpg(self.proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        self.proc.kill()
    self.proc.join(5)
    self.conn.close()
    self.dead = True


class ProcessExecutor(Executor):
  """A pool of local worker processes; each runs one trial at a time.

  Workers start with the ``spawn`` method (a clean interpreter: safe with jax in
  the driver), in their own process group, and die with the driver. A trial past
  its time is stopped by killing its worker's process group; a new worker takes
  its place.

  Args:
    objective: a callable (sent with cloudpickle or pickle) or ``"module:function"``.
    num_workers: most trials at once.
    memory_limit_mb: address-space cap of each worker (``RLIMIT_AS``); an
      allocation past it raises MemoryError, recorded as ``out_of_memory``.
    start_method: a `multiprocessing` start method (``spawn`` or ``forkserver``).

  Raises:
    StudyError: the objective cannot be sent to a worker, or a bad setting.

  Example:
    >>> study.optimize(objective, 20, executor=ProcessExecutor(objective, 4))  # doctest: +SKIP
  """

  def __init__(self, objective: Callable | str, num_workers: int = 1,
               memory_limit_mb: float | None = None, start_method: str = "spawn"):
    if num_workers < 1:
      raise StudyError(f"num_workers must be >= 1, got {num_workers}", "executor")
    if memory_limit_mb is not None and memory_limit_mb <= 0:
      raise StudyError(f"memory limit must be > 0 MB, got {memory_limit_mb}", "executor")
    self.payload = worker.pack_objective(objective)
    self.capacity = num_workers
    self.memory_limit_mb = memory_limit_mb
    self.ctx = multiprocessing.get_context(start_method)
    self.workers: list[_Worker] = []
    self._startup_deaths = 0
    self._greeted = False

  def start(self, handlers):
    super().start(handlers)
    while len(self.workers) < self.capacity:  # start-up overlaps: the pool is warm at once
      self.workers.append(_Worker(self.ctx, self.payload, self.memory_limit_mb))

  def submit(self, spec):
    idle = [w for w in self.workers if w.number is None and not w.dead]
    if idle:
      w = idle[0]
    elif len(self.workers) < self.capacity:
      w = _Worker(self.ctx, self.payload, self.memory_limit_mb)
      self.workers.append(w)
    else:
      raise StudyError("all workers are busy", "executor")
    w.number = spec["number"]
    try:
      w.channel.send({"op": "run", **spec})
    except (BrokenPipeError, OSError):
      self._died(w)

  def _died(self, w: _Worker):
    number = w.number
    w.proc.join(5)
    code = w.proc.exitcode
    if not w.dead:
      w.conn.close()
      w.dead = True
    self.workers.remove(w)
    if w.env is None:  # it died before saying hello
      self._startup_deaths += 1
      if self._startup_deaths >= 3 and not self._greeted:
        raise StudyError(f"worker processes die while starting (exit code {code}); their "
                         "error is printed above. A script that runs a study must start it "
                         "under `if __name__ == '__main__':`", "executor")
    if number is not None:
      self.started.pop(number, None)
      if code is not None and code < 0:
        why = f"the worker process was killed by signal {-code} ({signal.Signals(-code).name})"
        if self.memory_limit_mb and -code == signal.SIGKILL:
          why += "; the system may have run out of memory"
      else:
        why = f"the worker process exited with code {code}"
      if w.env is None:
        why += " before it started the trial (see its error above)"
      self.handlers.on_result(_crash(number, why), w.env)

  def _handle(self, w: _Worker, msg: dict[str, Any]):
    op = msg["op"]
    if op == "report":
      self.handlers.on_report(msg["number"], msg["step"], msg["value"])
    elif op == "should_prune":
      w.channel.send({"op": "prune", "answer": bool(self.handlers.on_should_prune(msg["number"]))})
    elif op == "started":
      self.started[msg["number"]] = time.time()
    elif op == "result":
      w.number = None
      self.started.pop(msg["number"], None)
      self.handlers.on_result(msg, w.env)
    elif op == "hello":
      w.env = msg["env"]
      self._greeted = True
    elif op == "broken":
      raise StudyError(f"a worker process cannot load it: {msg['error']}", "objective")

  def poll(self, timeout):
    if not self.workers:
      time.sleep(min(timeout, 0.01))
      return
    by_conn = {w.conn: w for w in self.workers}
    by_sentinel = {w.proc.sentinel: w for w in self.workers}
    ready = multiprocessing.connection.wait(list(by_conn) + list(by_sentinel), timeout)
    for obj in ready:
      w = by_conn.get(obj)
      if w is None or w.dead:
        continue
      try:
        while w.conn.poll():
          self._handle(w, json.loads(w.conn.recv_bytes()))
      except (EOFError, OSError):
        pass  # the process is gone; its sentinel says so below
    for obj in ready:
      w = by_sentinel.get(obj)
      if w is not None and w in self.workers:
        self._died(w)

  def kill(self, number):
    self.started.pop(number, None)
    for w in self.workers:
      if w.number == number:
        w.kill()
        self.workers.remove(w)
        return

  def close(self):
    for w in self.workers:
      try:
        if w.number is None and w.proc.is_alive():
          w.channel.send({"op": "stop"})
      except OSError:
        pass
    deadline = time.time() + 2.0
    for w in self.workers:
      if w.number is None:
        w.proc.join(max(0.0, deadline - time.time()))
      w.kill()
    self.workers = []


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
  """

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
        result, env = _crash(number, f"the Ray task failed: {type(e).__name__}: {e}"), None
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
