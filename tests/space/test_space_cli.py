"""``metatune space check/sample``: the tree printout, streaming in chunks, limits, clear errors."""

import json
import os

import pytest

from metatune import cli
from metatune.space import cli as space_cli
from metatune.space import io

SPACE = """
name: mlp
parameters:
  optimizer: {type: categorical, choices: [sgd, adam]}
  lr: {type: float, low: 1e-5, high: 1.0, log: true}
  optimizer.sgd:
    when: "optimizer == 'sgd'"
    parameters:
      momentum: {type: float, low: 0.0, high: 0.99}
      nesterov: {type: bool, when: "optimizer.sgd.momentum > 0.5"}
  layers: {type: int, low: 1, high: 3}
  w2: {type: int, low: 8, high: 64, when: "layers >= 2 and optimizer == 'adam'"}
"""


@pytest.fixture
def space_file(tmp_path):
  p = tmp_path / "s.yaml"
  p.write_text(SPACE)
  return p


def test_tree_prints_each_child_under_its_parent():
  """sgd.momentum was drawn under lr, the parameter printed just before it."""
  lines = [l.split()[0] for l in space_cli.tree_lines(io.loads(SPACE, "s.yaml"))]
  assert lines == ["optimizer", "optimizer.sgd.momentum", "optimizer.sgd.nesterov", "lr",
                   "layers", "w2"]
  text = space_cli.tree_lines(io.loads(SPACE, "s.yaml"))
  indent = {l.split()[0]: len(l) - len(l.lstrip()) for l in text}
  assert indent["optimizer.sgd.momentum"] == indent["optimizer"] + 2
  assert indent["optimizer.sgd.nesterov"] == indent["optimizer"] + 4
  assert indent["w2"] == indent["layers"] + 2  # under its deepest parent (the later of equals)


def test_out_naming_a_folder_is_a_clear_error(space_file, tmp_path, capsys):
  """It was an IsADirectoryError traceback."""
  assert cli.main(["space", "sample", str(space_file), "--num", "3", "--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --out ") and "is a folder" in err and "Traceback" not in err


def test_sample_streams_in_chunks_with_progress(space_file, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(space_cli, "_CHUNK_ROWS", 100)
  out = tmp_path / "c.jsonl"
  assert cli.main(["space", "sample", str(space_file), "--num", "250", "--out", str(out)]) == 0
  assert "250/250" in capsys.readouterr().err  # the progress bar
  rows = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(rows) == 250 and len({json.dumps(r) for r in rows}) > 200
  s = io.load(space_file)
  for r in rows:
    assert s.validate(r) == r
  assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like any file the user writes


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_one_chunk_is_the_plain_sampler(space_file):
  """Small jobs keep the output they had before chunking (same key, one call)."""
  import jax  # pylint: disable=import-outside-toplevel

  from metatune.space import sample  # pylint: disable=import-outside-toplevel
  s = io.load(space_file)
  (values, active), = space_cli.sample_chunks(s, 40, 3)
  want_v, want_a = jax.jit(lambda k: sample(k, s, 40))(jax.random.key(3))
  assert (values == want_v).all() and (active == want_a).all()


@pytest.mark.parametrize("command, flag, limit", [("check", "--samples", "1,000,000"),
                                                  ("sample", "--num", "100,000,000")])
def test_sizes_beyond_the_stated_limits_are_refused(space_file, capsys, command, flag, limit):
  argv = ["space", command, str(space_file), flag, "1000000000"]
  with pytest.raises(SystemExit) as info:
    cli.main(argv + (["--out", "-"] if command == "sample" else []))
  assert info.value.code == 2
  assert f"at most {limit}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check", "sample"])
def test_help_states_the_limits(command, capsys):
  with pytest.raises(SystemExit):
    cli.main(["space", command, "--help"])
  out = " ".join(capsys.readouterr().out.split())
  for phrase in ("10,000 parameters", "8 MiB", "nested at most 64 deep", "10,000 characters",
                 "float32", "at most"):
    assert phrase in out, phrase


def test_sample_writes_nothing_when_it_fails(tmp_path, capsys):
  bad = tmp_path / "bad.yaml"
  bad.write_text("parameters:\n  x: {type: float, low: 0, high: 1}\nconstraints: ['x > 2']\n")
  out = tmp_path / "c.jsonl"
  assert cli.main(["space", "sample", str(bad), "--num", "5", "--out", str(out)]) == 2
  assert "unsatisfiable" in capsys.readouterr().err
  assert not out.exists() and not list(tmp_path.glob(".metatune-*"))
