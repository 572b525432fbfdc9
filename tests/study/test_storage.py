"""SQLite storage: durability settings, records round-trip, several studies per file, bad files."""

import math
import sqlite3

import numpy as np
import pytest

from metatune.study.errors import StudyError
from metatune.study.storage import Storage, TrialRecord, decode_point, encode_point


def _record(number, **kw):
  base = dict(number=number, state="running", source="tuner", config={"x": 0.5, "opt": "b"},
              values=np.array([0.25, 0.75], np.float32), active=np.array([True, False]),
              seed=7, told_before=0, session_id="s", space_signature="sig", started=1.0)
  base.update(kw)
  return TrialRecord(**base)


def test_wal_and_synchronous_settings(tmp_path):
  with Storage(tmp_path / "a.db") as s:
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
  with Storage(tmp_path / "b.db", synchronous="full") as s:
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_point_encoding_round_trips():
  v = np.array([0.1, 0.0, 1.0, 0.33333334], np.float32)
  a = np.array([True, False, True, True])
  v2, a2 = decode_point(encode_point(v, a))
  assert v2.dtype == np.float32 and np.array_equal(v, v2) and np.array_equal(a, a2)


def test_trial_round_trip_with_nan_and_reports(tmp_path):
  with Storage(tmp_path / "s.db") as s:
    sid = s.create_study("one", "{}", "sig", {"seed": 0})
    s.insert_trials(sid, [_record(0), _record(1)])
    done = _record(0, state="failed", tell_seq=0, reason="nan", objectives=[math.nan],
                   constraints=[], error="boom", cost=0.5, finished=2.0, env_id="e")
    s.finish_trial(sid, done)
    s.add_reports(sid, 1, [(1.0, 0.5), (2.0, math.nan)])
    s.commit()
  with Storage(tmp_path / "s.db") as s:
    t0, t1 = s.trials(sid)
    assert t0.state == "failed" and t0.reason == "nan" and math.isnan(t0.objectives[0])
    assert t0.error == "boom" and t0.duration == pytest.approx(1.0)
    assert t1.state == "running" and t1.config == {"x": 0.5, "opt": "b"}
    assert np.array_equal(t1.active, [True, False])
    reports = s.reports(sid)
    assert reports[1][1.0] == 0.5 and math.isnan(reports[1][2.0])


def test_several_studies_per_file_and_duplicate_name(tmp_path):
  with Storage(tmp_path / "s.db") as s:
    a = s.create_study("a", "{}", "sig", {})
    b = s.create_study("b", "{}", "sig", {})
    s.insert_trials(a, [_record(0)])
    assert s.study_names() == ["a", "b"]
    assert len(s.trials(a)) == 1 and s.trials(b) == []
    with pytest.raises(StudyError, match="already exists"):
      s.create_study("a", "{}", "sig", {})


def test_stale_trials_are_queued_once_in_front(tmp_path):
  with Storage(tmp_path / "s.db") as s:
    sid = s.create_study("a", "{}", "sig", {})
    s.enqueue(sid, [('{"x": 1}', encode_point(np.zeros(2), np.ones(2, bool)))])
    s.insert_trials(sid, [_record(0), _record(1)])
    s.mark_stale(sid, [0, 1], stale_before=2)
    s.mark_stale(sid, [0, 1], stale_before=2)  # already stale: nothing more is queued
    q = s.queue(sid)
    assert [(src, r) for _, src, r, _, _ in q] == [("retry", 0), ("retry", 1), ("user", None)]
    assert all(t.state == "stale" and t.stale_before == 2 for t in s.trials(sid))


def test_bad_files_are_named(tmp_path):
  junk = tmp_path / "junk.db"
  junk.write_bytes(b"this is not sqlite" * 100)
  with pytest.raises(StudyError, match="junk.db: not a metatune study file"):
    Storage(junk)
  with pytest.raises(StudyError, match="does not exist"):
    Storage(tmp_path / "missing" / "s.db")
  with pytest.raises(StudyError, match="synchronous"):
    Storage(tmp_path / "x.db", synchronous="off")
  other = tmp_path / "other.db"
  conn = sqlite3.connect(other)
  conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
  conn.execute("INSERT INTO meta VALUES ('format', 'something-else/9')")
  conn.commit()
  conn.close()
  with pytest.raises(StudyError, match="something-else/9"):
    Storage(other)


def test_a_file_from_before_executors_and_logs_opens_and_gains_them(tmp_path):
  path = tmp_path / "old.db"
  with Storage(path) as s:
    sid = s.create_study("one", "{}", "sig", {"seed": 0})
    s.insert_trials(sid, [_record(0, executor="process")])
  conn = sqlite3.connect(path)  # as an older metatune wrote it: no executor column, no logs
  conn.execute("ALTER TABLE trials DROP COLUMN executor")
  conn.execute("DROP TABLE logs")
  conn.commit()
  conn.close()
  with Storage(path) as s:
    (old,) = s.trials(sid)
    assert old.number == 0 and old.executor is None and s.log(sid, 0) is None
    s.insert_trials(sid, [_record(1, executor="inline")])
    s.put_log(sid, 1, "tail", 12345)
    s.commit()
  with Storage(path) as s:
    assert [t.executor for t in s.trials(sid)] == [None, "inline"]
    assert tuple(s.log(sid, 1)) == ("tail", 12345) and s.log_sizes(sid) == {1: 12345}
