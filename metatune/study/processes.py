"""Local worker processes: started without re-running the script, output kept, groups ended.

A worker is a fresh interpreter (``python -c``) that receives the objective over
a socket, so a script that runs a study needs no ``if __name__ == "__main__":``
guard: nothing re-imports ``__main__`` (functions defined there travel by value
with cloudpickle). Its stdout and stderr go to a pipe that the driver reads,
keeping the last bytes of each trial's output (`OutputTail`) to store with the
trial; nothing reaches the driver's terminal. Each worker leads its own process
group, and the processes an objective starts are ended with its trial (it
finished, timed out, was killed, or the study ended; see
`metatune.study.isolation`).

Nothing here imports jax: the worker side runs before the objective is loaded.
"""

from __future__ import annotations

import json
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Mapping

from metatune.study import isolation, worker
from metatune.study.errors import StudyError
from metatune.study.executors import Executor, crash_result

STARTUP_DEATHS = 3  # workers in a row that die before saying hello stop the study
STARTUP_LIMIT_S = 300.0  # with no worker ready by then, the study stops
LOG_LIMIT_KB = 32.0  # default tail of each trial's output that is kept
_READ_BYTES = 1 << 16
_READS_PER_POLL = 64  # at most 4 MiB of one worker's output per poll: the loop keeps turning
_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
         "from metatune.study.processes import worker_main; "
         "worker_main(int(sys.argv[2]), int(sys.argv[3]))")


class OutputTail:
  """The last ``limit`` bytes written, and how many were written in all.

  Example:
    >>> tail = OutputTail(limit=4)
    >>> tail.add(b"hello")
    >>> tail.take()
    ('ello', 5)
  """

  def __init__(self, limit: int):
    self.limit = int(limit)
    self.buf = bytearray()
    self.num_bytes = 0

  def add(self, data: bytes):
    self.num_bytes += len(data)
    self.buf += data
    if len(self.buf) > 2 * self.limit:  # trimmed now and then, not on every write
      del self.buf[:len(self.buf) - self.limit]

  def take(self) -> tuple[str, int]:
    """The kept text (undecodable bytes replaced) and the byte count; then starts afresh."""
    data = bytes(self.buf[len(self.buf) - self.limit:]) if self.limit else b""
    if len(self.buf) > self.limit:
      data = data.lstrip(bytes(range(0x80, 0xC0)))  # no half character at the cut
    out = (data.decode("utf-8", "replace"), self.num_bytes)
    self.buf = bytearray()
    self.num_bytes = 0
    return out


# ------------------------------------------------------------- driver side
class _Worker:
  """One worker process, its message socket and its output pipe."""

  def __init__(self, init: Mapping[str, Any], log_limit: int):
    ours, theirs = socket.socketpair()
    out_read, out_write = os.pipe()
    try:
      self.proc = subprocess.Popen(
          [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(theirs.fileno()),
           str(os.getpid())], stdin=subprocess.DEVNULL, stdout=out_write, stderr=out_write,
          pass_fds=(theirs.fileno(),), process_group=0)
    finally:
      theirs.close()
      os.close(out_write)
    self.conn = multiprocessing.connection.Connection(ours.detach())
    self.out = out_read
    os.set_blocking(out_read, False)
    try:
      self.pidfd = os.pidfd_open(self.proc.pid)  # readable when it exits (Linux 5.3+)
    except (AttributeError, OSError):
      self.pidfd = None
    self.tail = OutputTail(log_limit)
    self.channel = worker.PipeChannel(self.conn)
    self.spec: Mapping[str, Any] | None = None  # the trial it runs
    self.env: dict[str, Any] | None = None  # set by its hello: ready for trials
    self.dead = False
    try:
      self.conn.send(dict(init))  # the objective, pickled (transport, not storage)
    except OSError:
      pass  # it died at once; poll finds out

  @property
  def number(self) -> int | None:
    return None if self.spec is None else self.spec["number"]

  def exited(self) -> bool:
    """Whether the process has exited (without reaping it: its pid stays ours)."""
    try:
      return os.waitid(os.P_PID, self.proc.pid,
                       os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
      return True

  def read_output(self, max_reads: int = _READS_PER_POLL):
    if self.out is None:
      return
    for _ in range(max_reads):
      try:
        data = os.read(self.out, _READ_BYTES)
      except (BlockingIOError, OSError):
        return
      if not data:
        return
      self.tail.add(data)

  def take_log(self) -> dict[str, Any]:
    self.read_output(max_reads=1 << 20)
    text, num_bytes = self.tail.take()
    return {"log": text, "log_bytes": num_bytes}

  def kill(self) -> int | None:
    """Ends the worker and its whole process group now; returns its exit code."""
    if not self.dead:
      # Before reaping: the pid (and so the group id) cannot be reused meanwhile.
      try:
        os.killpg(self.proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
      self.proc.wait()
      self.read_output(max_reads=1 << 20)
      for fd in (self.out, self.pidfd):
        if fd is not None:
          os.close(fd)
      self.out = self.pidfd = None  # closed numbers may be reused by any file opened later
      self.conn.close()
      self.dead = True
    return self.proc.returncode


def _exit_words(code: int | None, memory_limit_mb: float | None) -> str:
  if code is not None and code < 0:
    why = f"the worker process was killed by signal {-code} ({signal.Signals(-code).name})"
    if memory_limit_mb and -code == signal.SIGKILL:
      why += "; the system may have run out of memory"
    return why
  return f"the worker process exited with code {code}"


class ProcessExecutor(Executor):
  """A pool of local worker processes; each runs one trial at a time.

  Workers are fresh interpreters that never re-import the driver's script, each
  in its own process group; they die with the driver. A trial starts only on a
  worker that has loaded the objective, so a worker that dies while starting
  costs no trial: it is replaced, and `STARTUP_DEATHS` such deaths in a row stop
  the study with what the last one printed. Each trial's stdout and stderr
  (its child processes' too) are kept, the last ``log_limit_kb`` KiB of them, with
  the trial. The processes a trial started are ended when it ends; a trial past
  its time is stopped by killing its worker's process group, and a new worker
  takes its place.

  Args:
    objective: a callable (sent with cloudpickle) or ``"module:function"``.
    num_workers: most trials at once.
    memory_limit_mb: address-space cap of each worker (``RLIMIT_AS``); an
      allocation past it raises MemoryError, recorded as ``out_of_memory``.
    log_limit_kb: KiB of each trial's output kept (the last ones; 0: none).

  Raises:
    StudyError: the objective cannot be sent to a worker, or a bad setting.

  Example:
    >>> study.optimize(objective, 20, executor=ProcessExecutor(objective, 4))  # doctest: +SKIP
  """

  name = "process"

  def __init__(self, objective: Callable | str, num_workers: int = 1,
               memory_limit_mb: float | None = None, log_limit_kb: float = LOG_LIMIT_KB):
    if num_workers < 1:
      raise StudyError(f"num_workers must be >= 1, got {num_workers}", "executor")
    if memory_limit_mb is not None and memory_limit_mb <= 0:
      raise StudyError(f"memory limit must be > 0 MB, got {memory_limit_mb}", "executor")
    if log_limit_kb < 0:
      raise StudyError(f"log_limit_kb must be >= 0, got {log_limit_kb}", "executor")
    self.init = {"payload": worker.pack_objective(objective), "memory_limit_mb": memory_limit_mb,
                 "argv": list(sys.argv)}
    self.capacity = num_workers
    self.memory_limit_mb = memory_limit_mb
    self.log_limit = int(log_limit_kb * 1024)
    self.workers: list[_Worker] = []
    self._backlog: list[Mapping[str, Any]] = []  # trials given back by a worker that died
    self._deaths_in_a_row = 0
    self._since = time.time()
    self._greeted = False

  def start(self, handlers):
    super().start(handlers)
    self._since = time.time()
    self._fill()  # start-up overlaps with the driver's: the pool is warm at once

  def _fill(self):
    while len(self.workers) < self.capacity:
      self.workers.append(_Worker(self.init, self.log_limit))

  def _idle(self) -> list[_Worker]:
    return [w for w in self.workers if w.env is not None and w.spec is None and not w.dead]

  def free(self, num_running: int) -> int:
    del num_running  # trials wait for a ready worker, not for a free slot
    return len(self._idle()) - len(self._backlog)

  def submit(self, spec):
    self._backlog.append(spec)
    self._dispatch()

  def _dispatch(self):
    for w in self._idle():
      if not self._backlog:
        return
      w.spec = self._backlog.pop(0)
      try:
        w.channel.send({"op": "run", **w.spec})
      except OSError:
        pass  # it died; poll finds out and gives the trial back

  def _died(self, w: _Worker):
    spec = w.spec
    code = w.kill()
    self.workers.remove(w)
    if w.env is None:  # it died before it was ready for trials
      self._deaths_in_a_row += 1
      if self._deaths_in_a_row >= STARTUP_DEATHS:
        text, _ = w.tail.take()
        raise StudyError(
            f"worker processes die while starting ({_exit_words(code, None)}); the last one "
            f"printed:\n{text[-4000:].rstrip() or '(nothing)'}", "executor")
    if spec is not None:
      number = spec["number"]
      if number not in self.started:  # it never began: not the objective's doing
        self._backlog.insert(0, spec)
      else:
        self.started.pop(number, None)
        result = crash_result(number, _exit_words(code, self.memory_limit_mb))
        self.handlers.on_result({**result, **w.take_log()}, w.env)
    self._fill()

  def _handle(self, w: _Worker, msg: dict[str, Any]):
    op = msg["op"]
    if op == "report":
      self.handlers.on_report(msg["number"], msg["step"], msg["value"])
    elif op == "should_prune":
      w.channel.send({"op": "prune", "answer": bool(self.handlers.on_should_prune(msg["number"]))})
    elif op == "started":
      self.started[msg["number"]] = time.time()
    elif op == "result":
      w.spec = None
      self.started.pop(msg["number"], None)
      self.handlers.on_result({**msg, **w.take_log()}, w.env)
    elif op == "hello":
      w.env = msg["env"]
      self._greeted = True
      self._deaths_in_a_row = 0
    elif op == "broken":
      raise StudyError(f"a worker process cannot load it: {msg['error']}", "objective")

  def _drain(self, w: _Worker):
    w.read_output()
    try:
      while w.conn.poll():
        self._handle(w, json.loads(w.conn.recv_bytes()))
    except (EOFError, OSError):
      pass  # the process is gone; poll finds out

  def poll(self, timeout):
    waitables: dict[Any, _Worker] = {}
    for w in self.workers:
      waitables[w.conn] = w
      waitables[w.out] = w
      if w.pidfd is not None:
        waitables[w.pidfd] = w
    ready = multiprocessing.connection.wait(list(waitables), timeout) if waitables else []
    if not waitables:
      time.sleep(min(timeout, 0.01))
    for w in {id(waitables[obj]): waitables[obj] for obj in ready}.values():
      self._drain(w)
    for w in list(self.workers):
      if w.exited():
        self._drain(w)  # what it said before it went (a result, even)
        self._died(w)
    self._dispatch()
    if not self._greeted and time.time() - self._since > STARTUP_LIMIT_S:
      text = "".join(w.tail.take()[0] for w in self.workers)
      raise StudyError(f"no worker process was ready within {STARTUP_LIMIT_S:g} s; they "
                       f"printed:\n{text[-4000:].rstrip() or '(nothing)'}", "executor")

  def kill(self, number):
    self.started.pop(number, None)
    for w in self.workers:
      if w.number == number:
        w.kill()
        log = w.take_log()
        self.workers.remove(w)
        self._fill()
        return log
    return None

  def close(self):
    for w in self.workers:
      if w.spec is None and not w.dead:
        try:
          w.channel.send({"op": "stop"})
        except OSError:
          pass
    deadline = time.time() + 2.0
    for w in self.workers:
      while w.spec is None and not w.exited() and time.time() < deadline:
        w.read_output()  # a full pipe would keep it from exiting
        time.sleep(0.01)
      w.kill()
    self.workers = []


# ------------------------------------------------------------- worker side
def _flush():
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  try:  # output of C code (printf) waits in the C library's buffers
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None).fflush(None)
  except (OSError, AttributeError):
    pass


def worker_main(fd: int, parent_pid: int):
  """A worker process: loads the objective sent over socket ``fd``, then runs trials until told.

  Started by `ProcessExecutor` as ``python -c``; its stdout and stderr are the
  driver's output pipe.
  """
  isolation.die_with_parent(parent_pid)
  adopted = isolation.adopt_orphans()
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
  for stream in (sys.stdout, sys.stderr):
    stream.reconfigure(line_buffering=True)  # what a crash cuts short is kept up to its line
  os.set_inheritable(fd, False)  # programs the objective runs do not hold the driver's line
  conn = multiprocessing.connection.Connection(fd)
  channel = worker.PipeChannel(conn)
  try:
    init = conn.recv()
  except EOFError:
    return
  sys.argv[:] = init["argv"]  # as the driver's script sees them (multiprocessing does this too)
  from metatune.study import provenance  # pylint: disable=import-outside-toplevel
  env = provenance.environment()
  try:
    objective = worker.unpack_objective(init["payload"])
  except Exception as e:  # reported, then the driver stops the study
    channel.send({"op": "broken", "error": f"{type(e).__name__}: {e}"})
    return
  isolation.limit_memory(init["memory_limit_mb"])
  channel.send({"op": "hello", "pid": os.getpid(), "env": env})
  while True:
    try:
      msg = channel.recv()
    except EOFError:
      break
    if msg["op"] == "stop":
      break
    channel.send({"op": "started", "number": msg["number"], "time": time.time()})
    result = worker.run_trial(objective, msg, channel)
    _flush()
    isolation.end_group(adopted)
    channel.send({"op": "result", **result})
  _flush()
  isolation.end_group(adopted)
