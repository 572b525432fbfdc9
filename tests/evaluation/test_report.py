"""The report's reading of a prior: its paired difference with every other tuner."""

import numpy as np

from metatune.evaluation import report


def _result(prior_shift):
  rng = np.random.default_rng(0)
  base = rng.uniform(0.1, 1.0, size=(6, 4, 10))           # [tasks, seeds, trials]
  base = np.minimum.accumulate(base, axis=-1)
  runs = {
      "gp_bo": {"regret": base, "kind": "gp_bo", "transfer": False},
      "prior": {"regret": base + prior_shift, "kind": "prior", "transfer": True},
  }
  for r in runs.values():
    r.update(failed=np.zeros(r["regret"].shape, bool), seconds=1.0)
  return {"experiment": "t", "family": "f", "tasks": list("abcdef"), "seeds": 4, "budget": 10,
          "pooled": False, "checkpoints": [1, 5, 10], "reference": "prior",
          "no_transfer": "gp_bo", "runs": runs, "command": "metatune evaluate x.yaml --out y",
          "machine": {"cpus": 2}}


def test_a_prior_is_read_against_every_other_tuner():
  better = _result(prior_shift=-0.05)
  summary = report.summarize(better)
  diffs = summary["rows"]["prior"]["paired_vs_each"]["gp_bo"]
  assert all(hi < 0 for _, _, hi in diffs.values())
  text = report.table_markdown(better, summary)
  assert "| gp_bo | **-0.050" in text               # better: bold
  worse = _result(prior_shift=+0.05)
  text = report.table_markdown(worse, report.summarize(worse))
  assert "| gp_bo | *0.050" in text                 # worse: italic
  assert "paired_vs_each" not in report.summarize(worse)["rows"]["gp_bo"]
  worse["reference"] = "gp_bo"                      # the reference is read the same way
  assert set(report.summarize(worse)["rows"]["gp_bo"]["paired_vs_each"]) == {"prior"}
