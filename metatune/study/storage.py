"""SQLite storage of studies: one file holds one or several studies, written by one driver.

Durability. The file is in WAL mode with ``synchronous=NORMAL`` by default and
every completed trial is its own committed transaction. In WAL mode a commit
has reached the operating system (the WAL file) when ``commit()`` returns, so a
``kill -9`` of the driver, or of every process using the file, loses nothing
committed; only a power cut or a kernel crash can roll back the last commits,
because NORMAL does not fsync on each commit. ``synchronous="full"`` fsyncs
each commit and survives power loss too, at the cost of a disk flush per trial.

Tables: ``studies`` (space document, signature, spec), ``trials`` (one row per
trial number, its encoded point, result and provenance), ``reports``
(intermediate values), ``logs`` (the last part of what each trial printed),
``queue`` (configurations waiting to run: enqueued by the user, or stale trials
asked again), ``sessions`` (the driver processes, to tell
a stale trial from a running one) and ``environments`` (package versions, git
commits, host; trials point to one).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import time
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from metatune.study.errors import StudyError

FORMAT = "metatune-study/1"
STATES = ("running", "complete", "failed", "pruned", "stale")
TERMINAL = ("complete", "failed", "pruned")
SYNCHRONOUS = ("normal", "full")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
  study_id INTEGER PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  space TEXT NOT NULL,
  space_signature TEXT NOT NULL,
  spec TEXT NOT NULL,
  created REAL NOT NULL,
  driver TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
  session_id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  pid_start TEXT,
  started REAL NOT NULL,
  heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS environments (env_id TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
  study_id INTEGER NOT NULL REFERENCES studies(study_id),
  number INTEGER NOT NULL,
  state TEXT NOT NULL,
  source TEXT NOT NULL,
  retry_of INTEGER,
  config TEXT NOT NULL,
  encoded BLOB NOT NULL,
  seed INTEGER NOT NULL,
  told_before INTEGER NOT NULL,
  stale_before INTEGER,
  tell_seq INTEGER,
  tuner_value REAL,
  objectives TEXT,
  constraints TEXT,
  reason TEXT,
  error TEXT,
  cost REAL,
  attrs TEXT,
  started REAL NOT NULL,
  finished REAL,
  session_id TEXT NOT NULL,
  env_id TEXT,
  space_signature TEXT NOT NULL,
  prior_hash TEXT,
  executor TEXT,
  PRIMARY KEY (study_id, number)
);
CREATE TABLE IF NOT EXISTS reports (
  study_id INTEGER NOT NULL,
  number INTEGER NOT NULL,
  step REAL NOT NULL,
  value REAL,
  PRIMARY KEY (study_id, number, step)
);
CREATE TABLE IF NOT EXISTS logs (
  study_id INTEGER NOT NULL,
  number INTEGER NOT NULL,
  tail TEXT NOT NULL,
  num_bytes INTEGER NOT NULL,
  PRIMARY KEY (study_id, number)
);
CREATE TABLE IF NOT EXISTS queue (
  study_id INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  source TEXT NOT NULL,
  retry_of INTEGER,
  config TEXT NOT NULL,
  encoded BLOB NOT NULL,
  PRIMARY KEY (study_id, seq)
);
"""


@dataclasses.dataclass
class TrialRecord:
  """One trial as stored (a plain record: it holds no jax arrays).

  Attributes:
    number: the trial number (0, 1, ...), in the order trials were asked.
    state: ``running``, ``complete``, ``failed``, ``pruned`` or ``stale`` (was running
      when its driver died; its configuration is asked again as a new trial).
    source: ``tuner`` (proposed), ``user`` (given or enqueued) or ``retry`` (of a stale trial).
    config: the active parameters.
    values, active: f32[D], bool[D] the encoded configuration the tuner is told.
    seed: the trial's seed (from the study seed and the number).
    told_before: how many results the tuner had been told when this trial was asked.
    retry_of: the stale trial this one repeats, or None.
    stale_before: for a stale trial, the next trial number when it was found stale.
    tell_seq: the position of this trial's result in the order results were told.
    tuner_value: the minimized value told to the tuner (None: told as a failure).
    objectives: the objective values in their natural directions (None until finished).
    constraints: the constraint values (feasible when all <= 0).
    reason: why a trial failed (``exception``, ``nan``, ``inf``, ``diverged``,
      ``timeout``, ``out_of_memory``, ``crashed``, ``invalid_return``, ``infeasible``
      is not a failure) or None.
    error: the traceback or message of a failure.
    cost: the trial's cost (its ``cost`` metric, else its duration in seconds).
    attrs: other metrics the objective returned.
    started, finished: Unix times.
    session_id: the driver session that ran it.
    env_id: the environment (versions, commits, host) it ran in.
    space_signature, prior_hash: provenance of the proposal.
    executor: what ran it (``process``, ``inline``, ``ray``; None: ask/tell).
  """
  number: int
  state: str
  source: str
  config: dict[str, Any]
  values: np.ndarray
  active: np.ndarray
  seed: int
  told_before: int
  session_id: str
  space_signature: str
  started: float
  retry_of: int | None = None
  stale_before: int | None = None
  tell_seq: int | None = None
  tuner_value: float | None = None
  objectives: list[float] | None = None
  constraints: list[float] | None = None
  reason: str | None = None
  error: str | None = None
  cost: float | None = None
  attrs: dict[str, Any] | None = None
  finished: float | None = None
  env_id: str | None = None
  prior_hash: str | None = None
  executor: str | None = None

  @property
  def duration(self) -> float | None:
    return None if self.finished is None else self.finished - self.started


class TrialLog(NamedTuple):
  """What a trial printed: the last part of its stdout and stderr, and how many bytes in all."""
  text: str
  num_bytes: int


def encode_point(values: np.ndarray, active: np.ndarray) -> bytes:
  """f32[D] values and bool[D] active as bytes (little-endian f32, then one byte per flag)."""
  return (np.asarray(values, "<f4").tobytes() + np.asarray(active, np.uint8).tobytes())


def decode_point(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
  """The inverse of `encode_point`."""
  d = len(blob) // 5
  values = np.frombuffer(blob[:4 * d], "<f4").astype(np.float32)
  active = np.frombuffer(blob[4 * d:], np.uint8).astype(bool)
  return values, active


def _dumps(x: Any) -> str | None:
  # NaN and inf are kept (as JSON's NaN / Infinity extensions): a failure's value is data.
  return None if x is None else json.dumps(x)


def _loads(text: str | None) -> Any:
  return None if text is None else json.loads(text)


class Storage:
  """A study file: SQLite in WAL mode, one driver process writing.

  Args:
    path: the database file (created when missing; its folder must exist).
    synchronous: ``"normal"`` (default: safe against killed processes) or ``"full"``
      (also against power loss; one fsync per commit).
    timeout: seconds to wait for a lock held by another process.

  Raises:
    StudyError: naming the file when it is not a metatune study file, its folder
      is missing, or ``synchronous`` is unknown.

  Example:
    >>> with Storage("study.db") as storage:  # doctest: +SKIP
    ...   print(storage.study_names())
  """

  def __init__(self, path: str | os.PathLike, synchronous: str = "normal", timeout: float = 30.0):
    self.path = os.fspath(path)
    self._last_commit = time.monotonic()
    if synchronous not in SYNCHRONOUS:
      raise StudyError(f"synchronous must be one of {list(SYNCHRONOUS)}, got {synchronous!r}",
                       "storage")
    folder = os.path.dirname(os.path.abspath(self.path))
    if not os.path.isdir(folder):
      raise StudyError(f"the folder {folder} does not exist", self.path)
    if os.path.isdir(self.path):
      raise StudyError("is a folder, not a study file", self.path)
    try:
      # Autocommit off at the Python level: we open transactions explicitly.
      self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
      self.conn.execute("PRAGMA journal_mode=WAL")
      self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
      self._begin()
      for statement in _SCHEMA.split(";"):
        if statement.strip():
          self.conn.execute(statement)
      columns = {r[1] for r in self.conn.execute("PRAGMA table_info(trials)")}
      if "executor" not in columns:  # a file written before trials recorded their executor
        self.conn.execute("ALTER TABLE trials ADD COLUMN executor TEXT")
      row = self.conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
      if row is None:
        self.conn.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
      elif row[0] != FORMAT:
        raise StudyError(f"stored in format {row[0]!r}; this metatune reads {FORMAT!r}", self.path)
      self.commit()
    except sqlite3.DatabaseError as e:
      raise StudyError(f"not a metatune study file (SQLite says: {e})", self.path) from None

  # ------------------------------------------------------------ transactions
  def _begin(self):
    if not self.conn.in_transaction:
      self.conn.execute("BEGIN IMMEDIATE")

  def commit(self):
    """Commits the open transaction (a no-op when none is open)."""
    if self.conn.in_transaction:
      self.conn.execute("COMMIT")
    self._last_commit = time.monotonic()

  def commit_if_older(self, seconds: float):
    """Commits when the last commit is older than ``seconds``: intermediate reports and
    heartbeats reach readers (and free the write lock for other studies in the file)
    without a commit per report."""
    if self.conn.in_transaction and time.monotonic() - self._last_commit > seconds:
      self.commit()

  def close(self):
    self.commit()
    self.conn.close()

  def __enter__(self) -> "Storage":
    return self

  def __exit__(self, *exc):
    self.close()

  # ----------------------------------------------------------------- studies
  def study_names(self) -> list[str]:
    return [r[0] for r in self.conn.execute("SELECT name FROM studies ORDER BY study_id")]

  def create_study(self, name: str, space_doc: str, signature: str, spec: dict[str, Any]) -> int:
    """Adds a study; returns its id.

    Raises:
      StudyError: a study of that name exists.
    """
    self._begin()
    try:
      cur = self.conn.execute(
          "INSERT INTO studies (name, space, space_signature, spec, created) VALUES (?,?,?,?,?)",
          (name, space_doc, signature, json.dumps(spec), time.time()))
    except sqlite3.IntegrityError:
      self.conn.execute("ROLLBACK")
      raise StudyError(f"a study named {name!r} already exists", self.path) from None
    self.commit()
    return int(cur.lastrowid)

  def find_study(self, name: str) -> dict[str, Any] | None:
    """The study row (``study_id``, ``name``, ``space``, ``space_signature``, ``spec``, ...)."""
    row = self.conn.execute(
        "SELECT study_id, name, space, space_signature, spec, created, driver FROM studies "
        "WHERE name=?", (name,)).fetchone()
    if row is None:
      return None
    keys = ("study_id", "name", "space", "space_signature", "spec", "created", "driver")
    out = dict(zip(keys, row))
    out["spec"] = json.loads(out["spec"])
    return out

  def claim(self, study_id: int, session_id: str, alive) -> dict[str, Any] | None:
    """Makes ``session_id`` the study's driver unless a live other session is (atomically).

    Args:
      alive: ``alive(session_row) -> bool`` for the current driver's session.

    Returns:
      None when claimed; else the live driver's session row (nothing changed).
    """
    self._begin()  # BEGIN IMMEDIATE: no other writer between the check and the update
    (driver,) = self.conn.execute("SELECT driver FROM studies WHERE study_id=?",
                                  (study_id,)).fetchone()
    if driver and driver != session_id:
      other = self.session(driver)
      if other is not None and alive(other):
        self.conn.execute("ROLLBACK")
        return other
    self.conn.execute("UPDATE studies SET driver=? WHERE study_id=?", (session_id, study_id))
    self.commit()
    return None

  def set_driver(self, study_id: int, session_id: str | None):
    self._begin()
    self.conn.execute("UPDATE studies SET driver=? WHERE study_id=?", (session_id, study_id))
    self.commit()

  # ---------------------------------------------------------------- sessions
  def register_session(self, session_id: str, host: str, pid: int, pid_start: str | None):
    now = time.time()
    self._begin()
    self.conn.execute("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?)",
                      (session_id, host, pid, pid_start, now, now))
    self.commit()

  def heartbeat(self, session_id: str):
    """Marks the session alive now (committed with the next commit)."""
    self._begin()
    self.conn.execute("UPDATE sessions SET heartbeat=? WHERE session_id=?",
                      (time.time(), session_id))

  def session(self, session_id: str) -> dict[str, Any] | None:
    row = self.conn.execute("SELECT host, pid, pid_start, started, heartbeat FROM sessions "
                            "WHERE session_id=?", (session_id,)).fetchone()
    if row is None:
      return None
    return dict(zip(("host", "pid", "pid_start", "started", "heartbeat"), row))

  def put_environment(self, env_id: str, info: dict[str, Any]):
    self._begin()
    self.conn.execute("INSERT OR IGNORE INTO environments VALUES (?,?)",
                      (env_id, json.dumps(info, sort_keys=True)))

  def environments(self) -> dict[str, dict[str, Any]]:
    return {k: json.loads(v) for k, v in self.conn.execute("SELECT env_id, info FROM environments")}

  # ------------------------------------------------------------------ trials
  def insert_trials(self, study_id: int, records: Sequence[TrialRecord],
                    dequeued: Iterable[int] = (), commit: bool = True):
    """Adds new (running) trials and removes the queue entries they took, in one transaction."""
    self._begin()
    self.conn.executemany(
        "INSERT INTO trials (study_id, number, state, source, retry_of, config, encoded, seed, "
        "told_before, started, session_id, space_signature, prior_hash, executor) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(study_id, r.number, r.state, r.source, r.retry_of, json.dumps(r.config),
          encode_point(r.values, r.active), r.seed, r.told_before, r.started, r.session_id,
          r.space_signature, r.prior_hash, r.executor) for r in records])
    self.conn.executemany("DELETE FROM queue WHERE study_id=? AND seq=?",
                          [(study_id, s) for s in dequeued])
    if commit:
      self.commit()

  def finish_trial(self, study_id: int, r: TrialRecord, commit: bool = True):
    """Stores a finished trial's result; committed at once so it survives a crash."""
    self._begin()
    self.conn.execute(
        "UPDATE trials SET state=?, tell_seq=?, tuner_value=?, objectives=?, constraints=?, "
        "reason=?, error=?, cost=?, attrs=?, finished=?, env_id=? WHERE study_id=? AND number=?",
        (r.state, r.tell_seq, r.tuner_value, _dumps(r.objectives), _dumps(r.constraints),
         r.reason, r.error, r.cost, _dumps(r.attrs), r.finished, r.env_id, study_id, r.number))
    if commit:
      self.commit()

  def mark_stale(self, study_id: int, numbers: Sequence[int], stale_before: int) -> list[int]:
    """Marks running trials stale and queues their configurations again, in one transaction.

    A stale trial's configuration goes to the front of the queue (before user
    entries), so it runs next, exactly once.

    Returns:
      The queue seqs of the retries.
    """
    self._begin()
    row = self.conn.execute("SELECT MIN(seq) FROM queue WHERE study_id=?", (study_id,)).fetchone()
    first = 0 if row[0] is None else row[0]
    seqs = list(range(first - len(numbers), first))
    for seq, n in zip(seqs, numbers):
      cur = self.conn.execute("UPDATE trials SET state='stale', stale_before=? "
                              "WHERE study_id=? AND number=? AND state='running'",
                              (stale_before, study_id, n))
      if cur.rowcount:
        self.conn.execute("INSERT INTO queue SELECT study_id, ?, 'retry', number, config, "
                          "encoded FROM trials WHERE study_id=? AND number=?", (seq, study_id, n))
    self.commit()
    return seqs

  def put_log(self, study_id: int, number: int, text: str, num_bytes: int):
    """Keeps what a trial printed (committed with the next commit, e.g. its result's)."""
    self._begin()
    self.conn.execute("INSERT OR REPLACE INTO logs VALUES (?,?,?,?)",
                      (study_id, number, text, int(num_bytes)))

  def log(self, study_id: int, number: int) -> TrialLog | None:
    """What trial ``number`` printed, or None when it printed nothing (or ran before logs)."""
    row = self.conn.execute("SELECT tail, num_bytes FROM logs WHERE study_id=? AND number=?",
                            (study_id, number)).fetchone()
    return None if row is None else TrialLog(*row)

  def log_sizes(self, study_id: int) -> dict[int, int]:
    """Trial number -> bytes it printed, for the trials that printed something."""
    return dict(self.conn.execute("SELECT number, num_bytes FROM logs WHERE study_id=? AND "
                                  "num_bytes > 0", (study_id,)))

  def add_reports(self, study_id: int, number: int, items: Iterable[tuple[float, float]]):
    """Adds intermediate values (committed with the next commit; NaN is stored as NULL)."""
    self._begin()
    self.conn.executemany("INSERT OR REPLACE INTO reports VALUES (?,?,?,?)",
                          [(study_id, number, float(s), float(v)) for s, v in items])

  def trials(self, study_id: int) -> list[TrialRecord]:
    """Every trial of the study, by number."""
    rows = self.conn.execute(
        "SELECT number, state, source, retry_of, config, encoded, seed, told_before, "
        "stale_before, tell_seq, tuner_value, objectives, constraints, reason, error, cost, "
        "attrs, started, finished, session_id, env_id, space_signature, prior_hash, executor "
        "FROM trials WHERE study_id=? ORDER BY number", (study_id,))
    out = []
    for (number, state, source, retry_of, config, blob, seed, told_before, stale_before,
         tell_seq, tuner_value, objectives, constraints, reason, error, cost, attrs, started,
         finished, session_id, env_id, signature, prior_hash, executor) in rows:
      values, active = decode_point(blob)
      out.append(TrialRecord(
          number=number, state=state, source=source, config=json.loads(config), values=values,
          active=active, seed=seed, told_before=told_before, session_id=session_id,
          space_signature=signature, started=started, retry_of=retry_of,
          stale_before=stale_before, tell_seq=tell_seq, tuner_value=tuner_value,
          objectives=_loads(objectives), constraints=_loads(constraints), reason=reason,
          error=error, cost=cost, attrs=_loads(attrs), finished=finished, env_id=env_id,
          prior_hash=prior_hash, executor=executor))
    return out

  def reports(self, study_id: int) -> dict[int, dict[float, float]]:
    """Intermediate values: trial number -> {step: value} (NaN where SQLite held NULL)."""
    out: dict[int, dict[float, float]] = {}
    for number, step, value in self.conn.execute(
        "SELECT number, step, value FROM reports WHERE study_id=? ORDER BY number, step",
        (study_id,)):
      out.setdefault(number, {})[step] = math.nan if value is None else value
    return out

  # ------------------------------------------------------------------- queue
  def enqueue(self, study_id: int, items: Sequence[tuple[str, bytes]], source: str = "user"
              ) -> list[int]:
    """Queues configurations (``(config_json, encoded)``) to run next; returns their seqs."""
    self._begin()
    row = self.conn.execute("SELECT MAX(seq) FROM queue WHERE study_id=?", (study_id,)).fetchone()
    start = 0 if row[0] is None else row[0] + 1
    seqs = list(range(start, start + len(items)))
    self.conn.executemany("INSERT INTO queue VALUES (?,?,?,NULL,?,?)",
                          [(study_id, s, source, cfg, blob) for s, (cfg, blob) in
                           zip(seqs, items)])
    self.commit()
    return seqs

  def queue(self, study_id: int) -> list[tuple[int, str, int | None, dict[str, Any], bytes]]:
    """Waiting configurations: ``(seq, source, retry_of, config, encoded)``, oldest first."""
    return [(seq, source, retry_of, json.loads(cfg), blob) for seq, source, retry_of, cfg, blob in
            self.conn.execute("SELECT seq, source, retry_of, config, encoded FROM queue "
                              "WHERE study_id=? ORDER BY seq", (study_id,))]
