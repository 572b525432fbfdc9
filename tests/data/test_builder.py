"""Meta-dataset builder: output format, provenance, resume after interruption, every device."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from metatune.data import builder
from metatune.space import SpaceError
from metatune.tasks import registry

FAMILY = """
name: tiny
family: synthetic
options: {num_tasks: 10, seed: 1, fail_param: lr}
dataset: {configs_per_task: 24, design: quasi_random, seed: 3, batch_size: 8}
"""


@pytest.fixture
def config(tmp_path):
  path = tmp_path / "tiny.yaml"
  path.write_text(FAMILY)
  return registry.load_family_config(path)


def build(config, out, **kw):
  family = registry.make_family(config)
  return builder.build(config, family, out, progress=False, **kw)


def test_build_writes_open_format_with_provenance(config, tmp_path):
  out = tmp_path / "ds"
  summary = build(config, out, max_tasks=3)
  assert summary["tasks"] == 3 and summary["evaluations"] == 72
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["format"] == builder.FORMAT
  assert manifest["family"]["family"] == "synthetic"
  assert manifest["design"] == {"kind": "quasi_random", "seed": 3, "configs_per_task": 24}
  assert manifest["space_signature"] and manifest["metatune_version"]
  done = [t for t, i in manifest["tasks"].items() if i["status"] == "done"]
  assert len(done) == 3
  # Readable with numpy and json alone.
  arrays = np.load(out / manifest["tasks"][done[0]]["file"])
  assert arrays["objective"].shape == (24,) and arrays["values"].shape[0] == 24
  lines = (out / "tasks" / f"{builder.safe_name(done[0])}.jsonl").read_text().splitlines()
  rows = [json.loads(l) for l in lines]
  assert len(rows) == 24 and all(r["task"] == done[0] for r in rows)
  assert any(r["failed"] and r["reason"] == "diverged" and r["objective"] is None
             for r in rows) or not arrays["failed"].any()
  # The same design for every task.
  design = np.load(out / "design.npz")
  np.testing.assert_array_equal(arrays["values"], design["values"])


def test_resume_after_interruption_matches_an_uninterrupted_build(config, tmp_path,
                                                                  monkeypatch):
  clean = tmp_path / "clean"
  build(config, clean, max_tasks=2)
  out = tmp_path / "resumed"
  calls = {"n": 0}
  real_save = builder.save_npz

  def crashing_save(path, arrays):
    calls["n"] += 1
    if calls["n"] == 5:  # design, then a few chunks, then the "kill"
      raise KeyboardInterrupt
    real_save(path, arrays)

  monkeypatch.setattr(builder, "save_npz", crashing_save)
  with pytest.raises(KeyboardInterrupt):
    build(config, out, max_tasks=2)
  monkeypatch.setattr(builder, "save_npz", real_save)
  parts = list((out / "tasks").glob("*.part-*.npz"))
  assert parts, "the interrupted build saved its finished chunks"
  summary = build(config, out, max_tasks=2)
  assert not list((out / "tasks").glob("*.part-*"))
  assert summary["tasks"] == 2
  for name in os.listdir(clean / "tasks"):
    if name.endswith(".npz"):
      a, b = np.load(clean / "tasks" / name), np.load(out / "tasks" / name)
      for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
  # A second rerun has nothing left to do.
  assert build(config, out, max_tasks=2)["skipped_tasks"] == 2


def test_refuses_a_folder_of_another_dataset(config, tmp_path):
  out = tmp_path / "ds"
  build(config, out, max_tasks=1)
  with pytest.raises(SpaceError, match="another family"):
    build(config, out, max_tasks=1, configs_per_task=12)


def test_family_config_errors_name_file_and_line(tmp_path):
  p = tmp_path / "bad.yaml"
  p.write_text("family: synthetic\ndataset: {configs_per_tsk: 3}\n")
  with pytest.raises(SpaceError, match=r"bad.yaml:2.*did you mean 'configs_per_task'"):
    registry.load_family_config(p)
  p.write_text("family: synthtic\n")
  with pytest.raises(SpaceError, match=r"bad.yaml:1.*unknown family 'synthtic'"):
    registry.load_family_config(p)
  p.write_text("family: synthetic\noptions: {num_taks: 3}\n")
  with pytest.raises(SpaceError, match=r"unknown option 'num_taks'"):
    registry.make_family(registry.load_family_config(p))


def test_cli_build_and_show(tmp_path, capsys):
  from metatune import cli
  fam = tmp_path / "tiny.yaml"
  fam.write_text(FAMILY)
  out = tmp_path / "ds"
  assert cli.main(["dataset", "build", str(fam), "--out", str(out), "--max-tasks", "2",
                   "--configs-per-task", "8", "--no-progress"]) == 0
  assert cli.main(["dataset", "show", str(out)]) == 0
  text = capsys.readouterr().out
  assert "2/2 tasks done" in text and "meta_train" in text


@pytest.mark.slow  # a second process with two forced devices: about a minute on 2 cores
def test_uses_every_local_device(config, tmp_path):
  """With two (forced) host devices the batch is sharded, and results match one device."""
  one = tmp_path / "one"
  build(config, one, max_tasks=1)
  two = tmp_path / "two"
  script = textwrap.dedent(f"""
      import jax
      assert len(jax.local_devices()) == 2, jax.local_devices()
      from metatune.data import builder
      from metatune.tasks import registry
      cfg = registry.load_family_config({str(config.source)!r})
      builder.build(cfg, registry.make_family(cfg), {str(two)!r}, max_tasks=1, progress=False)
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
  name = next(n for n in os.listdir(one / "tasks") if n.endswith(".npz"))
  a, b = np.load(one / "tasks" / name), np.load(two / "tasks" / name)
  np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-5)
  np.testing.assert_array_equal(a["failed"], b["failed"])
